"""`srmil compare`: identical folds for every model, one table, resumable."""

import json

import pandas as pd
import pytest

from helpers import clam_h5, pt_bag
from srmil.bags.synth import write_cohort
from srmil.cli.main import main
from srmil.config import SynthConfig
from srmil.training.compare import parse_spec, spec_dir


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp_cohort")
    s = write_cohort(SynthConfig(slides=15, dim=6, min_patches=30, max_patches=60, seed=4), out)
    return s["labels_csv"], s["features_dir"]


def cli(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_parse_spec_and_folder_names():
    assert parse_spec("srmil:w_gen=0:mask_rate=0.5") == ("srmil", {"w_gen": 0, "mask_rate": 0.5})
    assert parse_spec("ABMIL") == ("abmil", {})
    assert spec_dir("srmil:pooling=gated") == "srmil__pooling=gated"
    with pytest.raises(Exception, match="unknown MIL model 'abmill'; choose from: abmil"):
        parse_spec("abmill")
    with pytest.raises(Exception, match="unknown SRMILConfig key"):
        parse_spec("srmil:wgen=0")


def test_compare_runs_every_spec_on_the_same_folds(capsys, tmp_path, cohort):
    labels, feats = cohort
    out = tmp_path / "cmp"
    common = ["compare", "--labels", labels, "--features", feats, "--out", out, "--folds", 3,
              "--epochs", 2, "--accelerator", "cpu", "--set", "train.bootstrap=50"]
    args = [*common, "--models", "srmil,srmil:w_gen=0,mean"]
    code, stdout, _ = cli(capsys, *args)
    assert code == 0 and "| srmil:w_gen=0 |" in stdout and "Wilcoxon p" in stdout
    for f in ("splits.csv", "comparison.csv", "comparison.md", "comparison_roc.png", "DONE"):
        assert (out / f).is_file(), f
    splits = pd.read_csv(out / "splits.csv", dtype={"slide_id": str})
    for d in ("srmil", "srmil__w_gen=0", "mean"):
        run_splits = pd.read_csv(out / d / "splits.csv", dtype={"slide_id": str})
        pd.testing.assert_frame_equal(run_splits, splits)
    assert json.loads((out / "srmil__w_gen=0" / "config.json").read_text())[
        "model_config"]["w_gen"] == 0
    table = pd.read_csv(out / "comparison.csv")
    assert table.model.tolist() == ["srmil", "srmil:w_gen=0", "mean"]
    for m in ("auc", "accuracy", "balanced_accuracy", "f1"):
        assert {f"{m}_mean", f"{m}_std", f"{m}_ci_lo", f"{m}_ci_hi"} <= set(table.columns)
    assert table.auc_diff_vs_ref.iloc[0] == 0 and table.bootstrap_p.iloc[1:].notna().all()
    assert (out / "comparison_roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # adding a model later: resume reuses the finished runs and trains only the new one
    code, _, err = cli(capsys, *common, "--models", "srmil,srmil:w_gen=0,mean,abmil",
                       "--resume")
    assert code == 0, err
    assert pd.read_csv(out / "comparison.csv").model.tolist()[-1] == "abmil"
    code, _, err = cli(capsys, *args)
    assert code == 2 and "already holds a comparison; pass --resume" in err
    # a comparison written before a training field existed resumes (the field's default)
    setup = json.loads((out / "compare.json").read_text())
    del setup["base"]["train"]["eta_min"], setup["base"]["task"]
    (out / "compare.json").write_text(json.dumps(setup))
    run_cfg = json.loads((out / "mean" / "config.json").read_text())
    del run_cfg["train"]["eta_min"], run_cfg["model_config"]["dropout"], run_cfg["task"]
    (out / "mean" / "config.json").write_text(json.dumps(run_cfg))
    code, _, err = cli(capsys, *common, "--models", "srmil,srmil:w_gen=0,mean,abmil",
                       "--resume")
    assert code == 0, err


def test_graph_model_on_bags_without_coordinates_fails_before_training(capsys, tmp_path):
    pts = tmp_path / "pt_files"
    rows = []
    for i in range(6):
        pt_bag(pts / f"s{i}.pt", n=20, d=4, seed=i)
        rows.append(f"s{i},c{i},{'ab'[i % 2]}")
    clam_h5(tmp_path / "h5_files" / "s0.h5", n=20)  # only one has coordinates
    (tmp_path / "l.csv").write_text("slide_id,case_id,label\n" + "\n".join(rows) + "\n")
    code, _, err = cli(capsys, "compare", "--labels", tmp_path / "l.csv", "--features", pts,
                       "--out", tmp_path / "cmp", "--models", "mean,srmil", "--folds", 2,
                       "--epochs", 1, "--accelerator", "cpu")
    assert code == 2
    assert "bag(s) have no coordinates" in err and "graph model(s) srmil cannot use them" in err
    assert not (tmp_path / "cmp").exists()  # refused before anything was written
    # the same for a single run of a graph model
    code, _, err = cli(capsys, "cv", "--labels", tmp_path / "l.csv", "--features", pts,
                       "--out", tmp_path / "run", "--model", "patchgcn", "--set",
                       "split.folds=2", "--epochs", 1, "--accelerator", "cpu")
    assert code == 2 and "graph model(s) patchgcn cannot use them" in err
    assert not (tmp_path / "run").exists()


def test_specs_set_training_settings_of_their_own(capsys, tmp_path, cohort):
    assert parse_spec("abmil:train.class_weights=balanced:dropout=0.1") == (
        "abmil", {"train.class_weights": "balanced", "dropout": 0.1})
    with pytest.raises(Exception, match="unknown TrainConfig key"):
        parse_spec("abmil:train.weights=balanced")
    with pytest.raises(Exception, match="train.sampler must be one of"):
        parse_spec("abmil:train.sampler=oversample")
    labels, feats = cohort
    out = tmp_path / "cmp"
    code, stdout, err = cli(capsys, "compare", "--labels", labels, "--bags", feats, "--out", out,
                            "--folds", 3, "--epochs", 2, "--device", "cpu", "--set",
                            "train.bootstrap=50", "--models",
                            "mean,mean:train.class_weights=balanced:train.sampler=balanced")
    assert code == 0, err
    plain = json.loads((out / "mean" / "config.json").read_text())["train"]
    tuned = json.loads((out / "mean__train.class_weights=balanced__train.sampler=balanced"
                        / "config.json").read_text())["train"]
    assert (plain["class_weights"], plain["sampler"]) == ("none", "shuffle")
    assert (tuned["class_weights"], tuned["sampler"]) == ("balanced", "balanced")
    assert tuned["bootstrap"] == 50 and tuned["epochs"] == 2  # the shared settings stay
    assert "ECE" in stdout and "ece_mean" in pd.read_csv(out / "comparison.csv").columns
