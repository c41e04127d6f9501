"""Run directories end to end through the CLI: train, cv, resume, evaluate, predict."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import trident_bag
from srmil.bags.synth import write_cohort
from srmil.cli.main import main
from srmil.config import SynthConfig

SRMIL = str(Path(sys.executable).parent / "srmil")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[str, str]:
    out = tmp_path_factory.mktemp("cohort")
    s = write_cohort(SynthConfig(slides=18, dim=8, min_patches=40, max_patches=90, seed=3), out)
    return s["labels_csv"], s["features_dir"]


def cli(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def base_args(cohort, out, *extra):
    labels, feats = cohort
    return ["--labels", labels, "--features", feats, "--out", out, "--accelerator", "cpu",
            "--set", "split.folds=3", "--set", "train.bootstrap=100", *extra]


def test_cv_writes_the_run_layout_and_refuses_to_overwrite(capsys, tmp_path, cohort):
    run = tmp_path / "run"
    code, out, _ = cli(capsys, "cv", *base_args(cohort, run, "--model", "mean", "--epochs", 3))
    assert code == 0 and "test_auc" in out and "95% CI" in out
    for name in ("config.json", "classes.json", "splits.csv", "data.json", "summary.csv",
                 "summary.json", "DONE"):
        assert (run / name).is_file(), name
    for k in range(3):
        fold = run / f"fold_{k}"
        for name in ("last.pt", "best.safetensors", "history.csv", "metrics.json",
                     "predictions.csv", "DONE"):
            assert (fold / name).is_file(), (k, name)
        hist = pd.read_csv(fold / "history.csv")
        assert hist.epoch.tolist() == [0, 1, 2]
        pred = pd.read_csv(fold / "predictions.csv")
        assert set(pred.split) == {"val", "test"}
        assert {"prob_clustered", "prob_scattered"} <= set(pred.columns)
        assert (pred[["prob_clustered", "prob_scattered"]].sum(axis=1) - 1).abs().max() < 1e-6
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "mean" and cfg["train"]["epochs"] == 3
    assert cfg["model_config"] == {"hidden": 128, "dropout": 0.1}  # resolved defaults
    assert json.loads((run / "classes.json").read_text())["classes"] == ["clustered", "scattered"]
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["metrics"]) == {"test_auc", "test_accuracy", "test_balanced_accuracy",
                                       "test_f1", "test_ece", "test_brier"}
    splits = pd.read_csv(run / "splits.csv")
    assert (splits.groupby(["fold", "case_id"]).split.nunique() == 1).all()
    before = (run / "summary.json").read_text()
    code, _, err = cli(capsys, "cv", *base_args(cohort, run, "--model", "mean"))
    assert code == 2 and "is a finished run; it is never overwritten" in err
    assert (run / "summary.json").read_text() == before


def test_new_run_refuses_a_non_empty_directory(capsys, tmp_path, cohort):
    (tmp_path / "keep.txt").write_text("precious")
    code, _, err = cli(capsys, "train", *base_args(cohort, tmp_path, "--model", "mean"))
    assert code == 2 and "is not empty" in err
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_resume_with_another_config_is_refused(capsys, tmp_path, cohort):
    run = tmp_path / "r"
    assert cli(capsys, "train", *base_args(cohort, run, "--model", "mean", "--epochs", 2))[0] == 0
    (run / "DONE").unlink()
    (run / "fold_0" / "DONE").unlink()
    code, _, err = cli(capsys, "train", *base_args(cohort, run, "--model", "mean", "--epochs", 3,
                                                   "--resume"))
    assert code == 2 and "--resume with a different config (train.epochs: 2 in the run, 3 now)" \
        in err
    code, _, err = cli(capsys, "train", *base_args(cohort, run, "--model", "mean", "--epochs", 2))
    assert code == 2 and "pass --resume" in err


def test_run_from_before_a_new_field_resumes(capsys, tmp_path, cohort):
    """A run saved before a config field existed resumes with that field's default (its
    behaviour then); a field this version does not know is one line."""
    run = tmp_path / "r"
    assert cli(capsys, "train", *base_args(cohort, run, "--model", "mean", "--epochs", 2))[0] == 0
    (run / "DONE").unlink()
    (run / "fold_0" / "DONE").unlink()
    cfg_path = run / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["train"]["eta_min"], cfg["model_config"]["dropout"]  # as an older srmil wrote it
    del cfg["task"], cfg["survival"]  # before srmil had tasks
    cfg_path.write_text(json.dumps(cfg))
    code, _, err = cli(capsys, "train", *base_args(cohort, run, "--model", "mean", "--epochs", 2,
                                                   "--resume"))
    assert code == 0, err
    assert (run / "DONE").exists()
    (run / "DONE").unlink()
    (run / "fold_0" / "DONE").unlink()
    cfg["train"]["from_the_future"] = 1
    cfg_path.write_text(json.dumps(cfg))
    code, _, err = cli(capsys, "train", *base_args(cohort, run, "--model", "mean", "--epochs", 2,
                                                   "--resume"))
    assert code == 2 and "config.json: --resume: the saved config does not fit" in err
    assert "from_the_future" in err and len(err.strip().splitlines()) == 1


def test_uncached_run_reads_ahead_in_a_worker_with_the_same_result(capsys, tmp_path, cohort):
    """A cohort over ``cache_gb`` is read by a DataLoader worker ahead of each step: the run
    is the one the training process reading each bag itself gives, to the last digit."""
    runs = {}
    for workers in (0, 1):
        run = tmp_path / f"w{workers}"
        code, _, err = cli(capsys, "train", *base_args(
            cohort, run, "--model", "srmil", "--epochs", 2, "--set", "train.cache_gb=0",
            "--set", f"train.loader_workers={workers}"))
        assert code == 0, err
        runs[workers] = pd.read_csv(run / "fold_0" / "predictions.csv")
    pd.testing.assert_frame_equal(runs[0], runs[1])


def test_predict_and_evaluate_and_their_bad_inputs(capsys, tmp_path, cohort):
    run = tmp_path / "run"
    assert cli(capsys, "cv", *base_args(cohort, run, "--model", "mean", "--epochs", 2))[0] == 0
    labels, feats = cohort
    code, out, _ = cli(capsys, "predict", "--run", run, "--bags", feats, "--out",
                       tmp_path / "p.csv")
    assert code == 0
    pred = pd.read_csv(tmp_path / "p.csv", dtype={"folds": str})
    assert len(pred) == 18 and (pred.folds == "0,1,2").all()
    code, _, err = cli(capsys, "predict", "--run", run, "--bags", feats, "--out",
                       tmp_path / "p.csv")
    assert code == 2 and "refusing to overwrite" in err
    code, out, err = cli(capsys, "evaluate", "--run", run)
    assert code == 0 and out.count("AUC") == 3 and "warning" not in err
    # the training cohort given as if it were external: evaluated, with a warning
    code, out, err = cli(capsys, "evaluate", "--run", run, "--labels", labels, "--features",
                         feats, "--out", tmp_path / "ev")
    assert code == 0 and "18 of 18 slides" in err and "not an external validation" in err
    # bags of another dimension
    other = trident_bag(tmp_path / "wide" / "w.h5", d=12)
    code, _, err = cli(capsys, "predict", "--run", run, "--bags", other, "--out",
                       tmp_path / "w.csv")
    assert code == 2 and f"{other}: feature dimension 12 differs from the model's 8" in err
    assert not (tmp_path / "w.csv").exists()
    # labels with a class the checkpoint does not know
    bad = tmp_path / "labels.csv"
    bad.write_text(Path(labels).read_text().replace("scattered", "necrotic", 1))
    code, _, err = cli(capsys, "evaluate", "--run", run, "--labels", bad, "--features", feats)
    assert code == 2 and "unknown label(s) 'necrotic'" in err
    # a corrupt checkpoint
    (run / "fold_1" / "best.safetensors").write_bytes(b"garbage")
    code, _, err = cli(capsys, "predict", "--run", run, "--bags", feats, "--out",
                       tmp_path / "q.csv")
    assert code == 2 and "fold_1/best.safetensors: not a readable safetensors checkpoint" in err
    assert len(err.strip().splitlines()) == 1


def _wait_for_epochs(path: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists() and len(path.read_text().strip().splitlines()) - 1 >= n:
            return
        if proc.poll() is not None:
            raise AssertionError("training ended before it could be interrupted")
        time.sleep(0.02)
    raise AssertionError("no epoch finished in time")


def test_killed_run_resumes_to_the_same_result(capsys, tmp_path, cohort):
    """SIGKILL after epoch 2, --resume: same selected epoch, same test metrics, same history."""
    args = base_args(cohort, tmp_path / "full", "--model", "srmil", "--epochs", 10, "--seed", 5)
    assert cli(capsys, "train", *args)[0] == 0
    killed = tmp_path / "killed"
    args_k = base_args(cohort, killed, "--model", "srmil", "--epochs", 10, "--seed", 5)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([SRMIL, "train", *map(str, args_k)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_epochs(killed / "fold_0" / "history.csv", 2, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (killed / "fold_0" / "DONE").exists()
    assert cli(capsys, "train", *args_k, "--resume")[0] == 0
    a = json.loads((tmp_path / "full" / "fold_0" / "metrics.json").read_text())
    b = json.loads((killed / "fold_0" / "metrics.json").read_text())
    assert a == b
    ha = pd.read_csv(tmp_path / "full" / "fold_0" / "history.csv").drop(columns="seconds")
    hb = pd.read_csv(killed / "fold_0" / "history.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(ha, hb)


def test_config_file_and_sets_reach_the_saved_config(capsys, tmp_path, cohort):
    conf = tmp_path / "run.yaml"
    conf.write_text("model: mean\nmodel_config:\n  hidden: 24\ntrain:\n  epochs: 2\n  lr: 0.001\n")
    run = tmp_path / "r"
    args = base_args(cohort, run, "--config", conf, "--set", "model.dropout=0.3")
    assert cli(capsys, "train", *args)[0] == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"] == "mean" and saved["model_config"] == {"hidden": 24, "dropout": 0.3}
    assert saved["train"]["epochs"] == 2 and saved["train"]["lr"] == 0.001
    assert saved["split"]["folds"] == 3
    assert len(pd.read_csv(run / "fold_0" / "history.csv")) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 2\n")
    code, _, err = cli(capsys, "train", *base_args(cohort, tmp_path / "x", "--config", bad))
    assert code == 2 and "unknown TrainConfig key(s) epoch" in err


def test_empty_validation_split_is_one_line(capsys, tmp_path, cohort):
    labels, _ = cohort
    lab = pd.read_csv(labels, dtype=str)
    rows = [(0, s, c, y, "test" if i % 3 == 0 else "train")
            for i, (s, c, y) in enumerate(zip(lab.slide_id, lab.case_id, lab.label, strict=True))]
    splits = pd.DataFrame(rows, columns=["fold", "slide_id", "case_id", "label", "split"])
    # keep each case in one part
    splits["split"] = splits.groupby("case_id")["split"].transform("first")
    splits.to_csv(tmp_path / "splits.csv", index=False)
    code, _, err = cli(capsys, "train", *base_args(cohort, tmp_path / "r", "--model", "mean",
                                                   "--splits", tmp_path / "splits.csv"))
    assert code == 2 and "fold_0: the val split is empty" in err


def test_checkpoint_of_another_model_is_refused(capsys, tmp_path, cohort):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli(capsys, "train", *base_args(cohort, a, "--model", "mean", "--epochs", 1))[0] == 0
    assert cli(capsys, "train", *base_args(cohort, b, "--model", "srmil", "--epochs", 1))[0] == 0
    (b / "fold_0" / "best.safetensors").write_bytes((a / "fold_0" / "best.safetensors")
                                                    .read_bytes())
    labels, feats = cohort
    code, _, err = cli(capsys, "predict", "--run", b, "--bags", feats, "--out", tmp_path / "p.csv")
    assert code == 2 and "checkpoint of model 'mean', but the run trains 'srmil'" in err


def test_three_classes_end_to_end(capsys, tmp_path):
    feats = tmp_path / "f"
    rows = []
    for i in range(12):
        sid = f"s{i:02d}"
        trident_bag(feats / f"{sid}.h5", n=30, d=6, seed=i)
        rows.append(f"{sid},c{i:02d},{'abc'[i % 3]}")
    (tmp_path / "l.csv").write_text("slide_id,case_id,label\n" + "\n".join(rows) + "\n")
    run = tmp_path / "run"
    code, out, _ = cli(capsys, "cv", "--labels", tmp_path / "l.csv", "--features", feats,
                       "--out", run, "--model", "srmil", "--epochs", 2, "--folds", 2,
                       "--accelerator", "cpu", "--set", "train.bootstrap=50")
    assert code == 0 and "test_auc" in out
    m = json.loads((run / "fold_0" / "metrics.json").read_text())
    assert len(m["test"]["auc_per_class"]) == 3
    assert len(m["test"]["confusion_matrix"]) == 3
    pred = pd.read_csv(run / "fold_1" / "predictions.csv")
    assert {"prob_a", "prob_b", "prob_c"} <= set(pred.columns)


def test_resume_rebuilds_best_weights_from_last_checkpoint(capsys, tmp_path, cohort):
    """A kill between writing last.pt and best.safetensors leaves a stale best file; resume
    restores the selected weights from last.pt, so the test metrics are unchanged."""
    run = tmp_path / "r"
    args = base_args(cohort, run, "--model", "mean", "--epochs", 3)
    assert cli(capsys, "train", *args)[0] == 0
    fold = run / "fold_0"
    before = json.loads((fold / "metrics.json").read_text())
    for name in ("DONE", "metrics.json", "predictions.csv"):
        (fold / name).unlink()
    (run / "DONE").unlink()
    (fold / "best.safetensors").write_bytes(b"stale or half-written")
    assert cli(capsys, "train", *args, "--resume")[0] == 0
    assert json.loads((fold / "metrics.json").read_text()) == before


def test_a_truncated_bag_is_one_line_before_anything_trains(capsys, tmp_path, cohort):
    import shutil

    labels, feats = cohort
    copy = tmp_path / "feats"
    shutil.copytree(feats, copy)
    victim = sorted(copy.glob("*.h5"))[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    out = tmp_path / "run"
    code, _, err = cli(capsys, "train", *base_args((labels, str(copy)), out, "--model", "mean",
                                                     "--epochs", "1"))
    assert code == 2 and victim.name in err and "truncated or corrupt" in err
    assert "epoch" not in err and not out.exists()  # found before training, nothing written
