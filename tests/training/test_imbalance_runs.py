"""Imbalanced cohorts end to end: class weights, the balanced sampler, calibration, run logs."""

import json

import numpy as np
import pandas as pd
import pytest

from helpers import run_cli as cli
from srmil.bags.synth import write_cohort
from srmil.config import SynthConfig


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[str, str]:
    out = tmp_path_factory.mktemp("imbalanced")
    s = write_cohort(SynthConfig(variant="instance", slides=24, dim=8, min_patches=30,
                                 max_patches=60, seed=4, positive_fraction=0.3), out)
    return s["labels_csv"], s["features_dir"]


def args(cohort, out, *extra):
    labels, feats = cohort
    return ["--labels", labels, "--bags", feats, "--out", out, "--device", "cpu", "--model",
            "abmil", "--epochs", 3, "--set", "split.folds=3", "--set", "train.bootstrap=50",
            *extra]


def test_synth_positive_fraction_makes_an_imbalanced_cohort(cohort):
    labels = pd.read_csv(cohort[0])
    cases = labels.groupby("case_id").label.first()
    assert (cases == "tumour").sum() == int(0.3 * len(cases)) > 0  # floor(cases · f)


def test_weighted_balanced_calibrated_run_records_and_applies_everything(capsys, tmp_path,
                                                                         cohort):
    run = tmp_path / "run"
    code, _, err = cli(capsys, "cv", *args(
        cohort, run, "--set", "train.class_weights=balanced", "--set", "train.sampler=balanced",
        "--set", "train.calibrate=temperature", "--set", "train.logger=csv"))
    assert code == 0, err
    splits = pd.read_csv(run / "splits.csv")
    labels = pd.read_csv(cohort[0]).set_index("slide_id")
    for k in range(3):
        fold = run / f"fold_{k}"
        m = json.loads((fold / "metrics.json").read_text())
        # balanced weights = inverse class frequency of this fold's training split, mean 1
        train = labels.loc[splits[(splits.fold == k) & (splits.split == "train")].slide_id]
        counts = train.label.value_counts().reindex(["normal", "tumour"]).to_numpy()
        w = np.asarray(m["class_weights"])
        np.testing.assert_allclose(w * counts, np.full(2, (w * counts)[0]))
        np.testing.assert_allclose((w * counts).sum() / counts.sum(), 1.0)
        cal = json.loads((fold / "calibration.json").read_text())
        assert m["temperature"] == cal["temperature"] > 0
        for part in ("val", "test"):
            assert {"ece", "ece_adaptive", "brier", "recall_per_class",
                    "precision_per_class"} <= set(m[part])
            assert len(m[part]["recall_per_class"]) == 2
            assert {"ece", "ece_adaptive", "brier"} == set(m[part]["uncalibrated"])
        # Lightning's CSV logger: every step's loss parts and every epoch's history row
        log = pd.read_csv(fold / "logs" / "csv" / "version_0" / "metrics.csv")
        n_train = int(((splits.fold == k) & (splits.split == "train")).sum())
        assert log["step/total"].notna().sum() == 3 * n_train
        assert log["epoch/val_auc"].notna().sum() == 3
        hist = pd.read_csv(fold / "history.csv")
        np.testing.assert_allclose(log["epoch/val_loss"].dropna(), hist.val_loss)

    # predict applies each fold's temperature: fold 0's probabilities are the scaled raw ones
    out = tmp_path / "pred.csv"
    code, _, err = cli(capsys, "predict", "--run", run, "--bags", cohort[1], "--fold", 0,
                       "--out", out)
    assert code == 0, err
    pred = pd.read_csv(out).set_index("slide_id")
    saved = pd.read_csv(run / "fold_0" / "predictions.csv").set_index("slide_id")
    cols = ["prob_normal", "prob_tumour"]
    np.testing.assert_allclose(pred.loc[saved.index, cols], saved[cols], atol=1e-6)
    t = json.loads((run / "fold_0" / "calibration.json").read_text())["temperature"]
    assert t != pytest.approx(1.0, abs=1e-3)

    # evaluate reports the calibration before and after
    code, _, err = cli(capsys, "evaluate", "--run", run, "--out", tmp_path / "ev")
    assert code == 0, err
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert {"ece", "brier", "uncalibrated"} <= set(ev["fold_0"])
    assert ev["fold_0"]["ece"] == pytest.approx(
        json.loads((run / "fold_0" / "metrics.json").read_text())["test"]["ece"])

    # the report shows per-class recall / precision and the ECE before and after scaling
    code, _, err = cli(capsys, "report", "--run", run, "--gallery", 0)
    assert code == 0, err
    page = (run / "report" / "index.html").read_text()
    cal = page.split("<h2>Calibration (test)</h2>")[1].split("<h2>")[0]
    assert "temperature" in cal and "ece before" in cal and "reliability diagrams" in cal
    assert "recall tumour" in page and "precision normal" in page
    assert (run / "report" / "figures" / "reliability.png").stat().st_size > 1000


@pytest.mark.parametrize("sets, msg", [
    (["train.class_weights=[1, 2, 3]"], "train.class_weights has 3 weight(s), but there are 2 "
                                        "classes (normal, tumour)"),
    (["train.class_weights=[1, .nan]"], "must be finite and >= 0"),
    (["train.sampler=uniform"], "train.sampler must be one of shuffle, balanced"),
    (["train.calibrate=platt"], "train.calibrate must be one of none, temperature"),
])
def test_bad_settings_are_one_line_and_write_nothing(capsys, tmp_path, cohort, sets, msg):
    run = tmp_path / "run"
    code, _, err = cli(capsys, "cv", *args(cohort, run, *[a for s in sets for a in ("--set",
                                                                                     s)]))
    assert code == 2 and msg in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not run.exists()


def test_tensorboard_logger_when_installed_and_one_line_when_not(capsys, tmp_path, cohort,
                                                                monkeypatch):
    import srmil.training.logs as logs

    monkeypatch.setattr(logs, "tensorboard_available", lambda: False)
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", *args(cohort, run, "--set", "train.logger=tensorboard"))
    assert code == 2 and "pip install 'srmil[tensorboard]'" in err and not run.exists()
    monkeypatch.undo()
    if not logs.tensorboard_available():
        pytest.fail("tensorboard is missing: pip install -e '.[dev]' (the dev extra has it)")
    code, _, err = cli(capsys, "train", *args(cohort, run, "--set", "train.logger=tensorboard",
                                              "--epochs", 1))
    assert code == 0, err
    assert list((run / "fold_0" / "logs" / "tensorboard" / "version_0").glob("events.out.*"))


def test_bags_per_step_with_class_weights_logs_one_row_per_optimiser_step(capsys, tmp_path,
                                                                          cohort):
    run = tmp_path / "run"
    code, _, err = cli(capsys, "cv", *args(
        cohort, run, "--set", "train.class_weights=balanced", "--set", "train.bags_per_step=3",
        "--set", "split.folds=2", "--epochs", 2))
    assert code == 0, err
    splits = pd.read_csv(run / "splits.csv")
    n_train = int(((splits.fold == 0) & (splits.split == "train")).sum())
    log = pd.read_csv(run / "fold_0" / "logs" / "csv" / "version_0" / "metrics.csv")
    assert log["step/total"].notna().sum() == 2 * -(-n_train // 3)  # ceil(S / 3) per epoch
    assert json.loads((run / "config.json").read_text())["train"]["bags_per_step"] == 3
