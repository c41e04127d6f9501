"""The application layer called as a library: typed results, no printing, errors as SrmilError."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from srmil import api
from srmil.config import RunConfig, SplitConfig, SynthConfig, TrainConfig
from srmil.errors import SrmilError
from srmil.training.rundir import RunDir

CFG = RunConfig(model="mean", train=TrainConfig(epochs=2, bootstrap=20, accelerator="cpu"),
                split=SplitConfig(folds=2))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    cohort = api.synth(root / "cohort", SynthConfig(slides=12, dim=6, min_patches=20,
                                                    max_patches=30, seed=4))
    run = api.cv(cohort.labels, cohort.bags, root / "run", CFG)
    return root, cohort, run


def test_cv_returns_the_run_and_its_tables(trained):
    _, cohort, run = trained
    assert isinstance(run.run, RunDir) and run.path.is_absolute()
    assert run.folds["fold"].tolist() == [0, 1]
    assert set(run.summary["metrics"]) >= {"test_auc", "test_accuracy"}
    assert run.run.config().model == "mean" and run.run.config().split.folds == 2
    assert run.run.classes() == ["clustered", "scattered"]
    assert run.run.finished_folds() == [0, 1]
    tests = run.run.predictions("test")
    splits = run.run.splits()
    for k, t in tests.items():
        expect = sorted(splits.loc[(splits.fold == k) & (splits.split == "test"), "slide_id"])
        assert t["slide_id"].tolist() == expect
    folds = run.run.test_folds()
    assert set(folds) == set(pd.read_csv(cohort.labels, dtype=str).slide_id)


def test_the_api_never_prints_and_logs_instead(trained, capsys, caplog):
    root, cohort, run = trained
    with caplog.at_level(logging.INFO, logger="srmil"):
        res = api.predict(run.path, cohort.bags, root / "p.csv")
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert any("12 slide(s)" in r.getMessage() for r in caplog.records)
    assert res.folds == [0, 1] and res.path == root / "p.csv" and len(res.table) == 12
    assert np.allclose(res.table.filter(like="prob_").sum(axis=1), 1.0)
    with pytest.raises(SrmilError, match="refusing to overwrite"):
        api.predict(run.path, cohort.bags, root / "p.csv")


def test_evaluate_own_splits_and_a_not_so_external_cohort(trained, tmp_path):
    _, cohort, run = trained
    own = api.evaluate(run.path)
    assert set(own.metrics) == {"fold_0", "fold_1"} and not own.external and own.warnings == []
    assert own.out is None and set(own.predictions["fold"]) == {0, 1}
    ext = api.evaluate(run.path, cohort.labels, cohort.bags, tmp_path / "ev")
    assert ext.external and "ensemble" in ext.metrics
    assert "not an external validation" in ext.warnings[0]
    assert (tmp_path / "ev" / "metrics.json").is_file()
    with pytest.raises(SrmilError, match="go together"):
        api.evaluate(run.path, labels=cohort.labels)


def test_compare_draws_its_roc_and_returns_the_table(trained, tmp_path):
    _, cohort, _ = trained
    res = api.compare(cohort.labels, cohort.bags, tmp_path / "cmp", ["mean", "max"], CFG)
    assert res.table["model"].tolist() == ["mean", "max"]
    assert res.comparison.roc_path == res.roc and res.roc.stat().st_size > 0
    assert res.markdown == res.comparison.table_md.read_text()
    assert res.comparison.run("max").finished_folds() == [0, 1]
    with pytest.raises(SrmilError, match="model settings go into the specs"):
        api.compare(cohort.labels, cohort.bags, tmp_path / "c2", ["mean"],
                    RunConfig(model_config={"hidden": 8}))


def test_not_a_run_is_one_line():
    with pytest.raises(SrmilError, match="not a run directory"):
        api.predict("/nonexistent/run", "/nonexistent/bags")
