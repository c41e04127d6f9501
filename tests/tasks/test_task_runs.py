"""Survival and regression runs end to end: API, CLI, resume, predict, evaluate, compare."""

import json

import numpy as np
import pandas as pd
import pytest

from srmil import api
from srmil.bags.synth import write_cohort
from srmil.cli.main import main
from srmil.config import RunConfig, SplitConfig, SurvivalConfig, SynthConfig, TrainConfig
from srmil.errors import SrmilError

SMALL = SynthConfig(slides=24, dim=8, min_patches=30, max_patches=60, seed=4)


@pytest.fixture(scope="module")
def survival(tmp_path_factory):
    out = tmp_path_factory.mktemp("surv")
    s = write_cohort(SynthConfig(**{**SMALL.__dict__, "variant": "survival"}), out)
    return s["labels_csv"], s["features_dir"]


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    out = tmp_path_factory.mktemp("reg")
    s = write_cohort(SynthConfig(**{**SMALL.__dict__, "variant": "regression"}), out)
    return s["labels_csv"], s["features_dir"]


def cfg(model="mean", epochs=2, **kw):
    return RunConfig(model=model, train=TrainConfig(epochs=epochs, bootstrap=30,
                                                    accelerator="cpu"),
                     split=SplitConfig(folds=2), **kw)


def cli(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_synth_survival_labels_read_as_survival(survival):
    labels, _ = survival
    df = pd.read_csv(labels)
    assert {"time", "event", "score"} <= set(df.columns) and "label" not in df.columns
    assert set(df["event"]) == {0, 1}
    # slides of one patient share the outcome
    assert (df.groupby("case_id")["time"].nunique() == 1).all()


@pytest.fixture(scope="module")
def surv_run(survival, tmp_path_factory):
    labels, bags = survival
    return api.cv(labels, bags, tmp_path_factory.mktemp("runs") / "run", cfg())


def test_survival_cv_through_the_api(survival, surv_run):
    labels, bags = survival
    run = surv_run
    conf = run.run.config()
    assert conf.task == "survival"  # inferred from the columns and saved resolved
    for m in ("test_c_index", "test_c_index_uno", "test_td_auc", "test_ibs"):
        assert m in run.summary["metrics"]
    c = run.summary["metrics"]["test_c_index"]
    assert 0 <= c["mean"] <= 1 and len(c["ci95"]) == 2
    pred = pd.concat(run.run.predictions("test").values())
    assert {"time", "event", "risk", "surv_bin1", "surv_bin4"} <= set(pred.columns)
    s = pred[[f"surv_bin{k}" for k in range(1, 5)]].to_numpy()
    assert (s[:, 1:] <= s[:, :-1] + 1e-12).all() and ((s > 0) & (s < 1)).all()  # decreasing
    task = run.run.task_state(0)
    assert task["task"] == "survival" and len(task["edges"]) == 3
    # splits are stratified by event status and patient-level
    splits = run.run.splits()
    assert set(splits["label"]) == {"event", "censored"}
    # predict: risk and per-bin survival, the folds averaged
    p = api.predict(run.run.path, bags)
    assert {"risk", "surv_bin1"} <= set(p.table.columns) and len(p.table) == 24
    ev = api.evaluate(run.run.path)
    assert "c_index" in ev.metrics["fold_0"]


def test_survival_cli_cv_and_an_explicit_task(capsys, survival, tmp_path):
    labels, bags = survival
    code, out, err = cli(capsys, "cv", "--labels", labels, "--bags", bags, "--out",
                         tmp_path / "r", "--model", "abmil", "--epochs", 2, "--device", "cpu",
                         "--task", "survival", "--set", "split.folds=2", "--set",
                         "train.bootstrap=20", "--set", "survival.bins=3")
    assert code == 0, err
    assert "test_c_index" in out and "test_ibs" in out
    assert "task: survival" not in err  # explicit: nothing to infer
    conf = json.loads((tmp_path / "r" / "config.json").read_text())
    assert conf["task"] == "survival" and conf["survival"]["bins"] == 3
    code, _, err = cli(capsys, "cv", "--labels", labels, "--bags", bags, "--out",
                       tmp_path / "r2", "--task", "regression", "--epochs", 1)
    assert code == 2 and "regression needs a 'target' column" in err
    assert not (tmp_path / "r2").exists()  # nothing written


def cox(model="abmil", epochs=3, bags_per_step=4):
    return RunConfig(model=model, train=TrainConfig(epochs=epochs, bootstrap=30,
                                                    accelerator="cpu",
                                                    bags_per_step=bags_per_step),
                     split=SplitConfig(folds=2), survival=SurvivalConfig(loss="cox"))


def test_cox_survival_run_end_to_end(survival, tmp_path):
    """Cox over 4 bags per step: one risk output, Breslow's curve after training, the same
    prediction columns as nll; predict applies the saved baseline."""
    labels, bags = survival
    run = api.cv(labels, bags, tmp_path / "run", cox(model="srmil", epochs=2))
    hist = run.run.history(0)
    assert {"train_cox_masked", "train_cox_full", "train_rec"} <= set(hist.columns)
    assert hist["val_loss"].notna().all()  # the Cox loss over the whole validation split
    st = run.run.task_state(0)
    assert st["loss"] == "cox" and len(st["baseline"]) == 4
    assert (np.diff(st["baseline"]) >= 0).all()
    pred = pd.concat(run.run.predictions("test").values())
    s = pred[[f"surv_bin{k}" for k in range(1, 5)]].to_numpy()
    assert np.isfinite(s).all() and (s[:, 1:] <= s[:, :-1] + 1e-12).all()
    for m in ("test_c_index", "test_ibs"):
        assert np.isfinite(run.summary["metrics"][m]["mean"])
    p = api.predict(run.run.path, bags)
    assert np.isfinite(p.table[["risk", "surv_bin1"]].to_numpy()).all() and len(p.table) == 24


@pytest.mark.parametrize("kind", ["nll", "cox"])
def test_survival_resume_repeats_exactly(survival, tmp_path, monkeypatch, kind):
    """Interrupted after 2 of 4 epochs, then resumed: the same history and metrics."""
    import srmil.training.loop as loop

    labels, bags = survival
    c = cfg(model="abmil", epochs=4) if kind == "nll" else cox(epochs=4, bags_per_step=3)
    full = api.train(labels, bags, tmp_path / "full", c)
    real, calls = loop.write_csv, []

    def dying(path, *a, **k):
        real(path, *a, **k)
        if str(path).endswith("history.csv"):
            calls.append(path)
            if len(calls) == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(loop, "write_csv", dying)
    with pytest.raises(KeyboardInterrupt):
        api.train(labels, bags, tmp_path / "cut", c)
    monkeypatch.setattr(loop, "write_csv", real)
    resumed = api.train(labels, bags, tmp_path / "cut", c, resume=True)
    a = json.loads((full.run.fold_dir(0) / "metrics.json").read_text())
    b = json.loads((resumed.run.fold_dir(0) / "metrics.json").read_text())
    assert a == b
    ha = full.run.history(0).drop(columns="seconds")
    hb = resumed.run.history(0).drop(columns="seconds")
    pd.testing.assert_frame_equal(ha, hb)


def test_regression_cv_reports_in_target_units(regression, tmp_path):
    labels, bags = regression
    run = api.cv(labels, bags, tmp_path / "run", cfg(model="abmil", epochs=3))
    assert run.run.config().task == "regression"
    for m in ("mae", "rmse", "r2", "pearson", "spearman"):
        assert f"test_{m}" in run.summary["metrics"]
    pred = pd.concat(run.run.predictions("test").values())
    y = pd.read_csv(labels).set_index("slide_id")["target"]
    assert pred["target"].to_numpy() == pytest.approx(y[pred["slide_id"]].to_numpy())
    st = run.run.task_state(0)
    assert st["std"] > 0
    # in units: predictions sit in the range of the targets, not around 0 ± 1
    assert abs(pred["pred"].mean() - y.mean()) < 3 * y.std()
    assert run.summary["metrics"]["test_mae"]["mean"] > 0


def test_compare_survival_pairs_the_c_index(survival, tmp_path):
    labels, bags = survival
    res = api.compare(labels, bags, tmp_path / "cmp", ["mean", "abmil"],
                      base=cfg(model="mean", epochs=1), reference="abmil")
    t = res.table
    assert {"c_index_mean", "c_index_diff_vs_ref", "bootstrap_p", "per_fold_c_index"} <= set(t)
    assert res.roc is None and "c-index" in res.markdown and "Δc-index vs abmil" in res.markdown
    assert t.loc[t.model == "abmil", "c_index_diff_vs_ref"].iloc[0] == 0


def test_a_cohort_without_events_is_one_line(tmp_path, survival):
    labels, bags = survival
    df = pd.read_csv(labels)
    df["event"] = 0
    p = tmp_path / "no_events.csv"
    df.to_csv(p, index=False)
    with pytest.raises(SrmilError, match="no observed event"):
        api.cv(p, bags, tmp_path / "run", cfg())
    assert not (tmp_path / "run").exists()


def test_survival_report_and_heatmap(survival, surv_run, tmp_path):
    _, bags = survival
    rep = api.report(surv_run.run.path, out=tmp_path / "report")
    page = rep.path.read_text()
    assert "Kaplan–Meier curves of the risk groups" in page and "log-rank p = " in page
    assert "Calibration at t = " in page
    assert (tmp_path / "report" / "figures" / "km.png").stat().st_size > 1000
    m = surv_run.run.metrics(0)
    assert "train_risk_median" in m
    # heatmap of the mean model: gradient × input of the risk
    sid = pd.concat(surv_run.run.predictions("test").values())["slide_id"].iloc[0]
    maps = api.heatmap(surv_run.run.path, bags, tmp_path / "maps", slide_ids=[sid])
    assert maps.count("done") == 1
    info = json.loads((tmp_path / "maps" / sid / "heatmap.json").read_text())
    assert info["kind"] == "grad_x_input" and isinstance(info["pred"], float)
    assert info["target_class"] is None


def test_regression_report_has_the_scatter(regression, tmp_path):
    labels, bags = regression
    run = api.cv(labels, bags, tmp_path / "run", cfg(epochs=1))
    rep = api.report(run.run.path, out=tmp_path / "report")
    assert "Predicted vs true" in rep.path.read_text()
    assert (tmp_path / "report" / "figures" / "scatter.png").exists()


def test_a_split_without_events_is_one_warning_and_a_nan_c_index(survival, tmp_path, caplog):
    labels, bags = survival
    df = pd.read_csv(labels, dtype={"slide_id": str, "case_id": str})
    cases = df.groupby("case_id")["event"].max()
    censored = sorted(cases[cases == 0].index)[:2]  # val: two censored patients only
    rest = [c for c in sorted(cases.index) if c not in censored]
    part = {**dict.fromkeys(censored, "val"), **dict.fromkeys(rest[:6], "test"),
            **dict.fromkeys(rest[6:], "train")}
    splits = df[["slide_id", "case_id"]].assign(fold=0, label="x",
                                                split=df["case_id"].map(part))
    path = tmp_path / "splits.csv"
    splits[["fold", "slide_id", "case_id", "label", "split"]].to_csv(path, index=False)
    caplog.set_level("WARNING")
    run = api.train(labels, bags, tmp_path / "run", cfg(epochs=1), splits=path)
    assert "fold_0: the val split has no observed event; its c-index is undefined (NaN)" in \
        caplog.text
    assert pd.isna(run.run.metrics(0)["val"]["c_index"])


def test_evaluate_and_predict_cli_on_a_survival_run(capsys, survival, surv_run, tmp_path):
    _, bags = survival
    code, out, err = cli(capsys, "evaluate", "--run", surv_run.run.path)
    assert code == 0, err
    assert "fold 0" in out and "c-index" in out and "IBS" in out
    code, out, err = cli(capsys, "predict", "--run", surv_run.run.path, "--bags", bags,
                         "--out", tmp_path / "p.csv")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "p.csv")
    assert {"risk", "surv_bin1"} <= set(table.columns) and "prob_event" not in table


def test_classification_only_settings_are_refused_on_a_survival_run(survival, tmp_path, capsys):
    labels, bags = survival
    out = tmp_path / "r"
    code, _, err = cli(capsys, "cv", "--labels", labels, "--bags", bags, "--out", out,
                       "--model", "mean", "--epochs", 1, "--set", "train.sampler=balanced",
                       "--set", "train.calibrate=temperature")
    line = err.strip().splitlines()[-1]
    assert code == 2 and "train.sampler=balanced, train.calibrate=temperature: for " \
        "classification only; this is a survival run" in line
    assert not out.exists()
