"""``predict`` with a labels CSV on a slide-level run: only its slides, scored per slide."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from srmil import api
from srmil.errors import SrmilError
from srmil.training.calibration import calibration_metrics
from srmil.training.metrics import classification_metrics


def test_predict_scores_the_labelled_slides(tiny_run, tmp_path, caplog):
    labels = pd.read_csv(tiny_run["labels"], dtype=str)
    part = labels.iloc[: len(labels) - 3]  # three bags left out of the CSV
    csv = tmp_path / "some.csv"
    part.to_csv(csv, index=False)
    caplog.set_level("WARNING")
    res = api.predict(tiny_run["run"], tiny_run["bags"], labels=csv)
    t = res.table
    assert t.slide_id.tolist() == part.slide_id.tolist() and "case_id" not in t
    assert "3 bag(s) in" in caplog.text and "have no row in some.csv" in caplog.text
    assert "were in this run's train/val splits" in caplog.text  # not external
    probs = t[["prob_clustered", "prob_scattered"]].to_numpy()
    y = part.label.map({"clustered": 0, "scattered": 1}).to_numpy()
    assert t.target.tolist() == y.tolist()
    ref = classification_metrics(y, probs, 2)
    assert res.metrics["unit"] == "slide" and res.metrics["n"] == len(part)
    assert res.metrics["auc"] == pytest.approx(ref["auc"])
    cal = calibration_metrics(y, probs)
    assert res.metrics["ece"] == pytest.approx(cal["ece"])
    assert res.metrics["brier"] == pytest.approx(cal["brier"])
    # the same slides without labels give the same probabilities and no metrics
    ids_only = tmp_path / "ids.csv"
    part[["slide_id"]].to_csv(ids_only, index=False)
    bare = api.predict(tiny_run["run"], tiny_run["bags"], labels=ids_only)
    assert bare.metrics is None and "label" not in bare.table
    np.testing.assert_allclose(bare.table[["prob_clustered", "prob_scattered"]], probs)


def test_predict_with_a_labels_csv_that_matches_no_bag_is_one_line(tiny_run, tmp_path):
    csv = tmp_path / "none.csv"
    pd.DataFrame({"slide_id": ["nope_1", "nope_2"]}).to_csv(csv, index=False)
    with pytest.raises(SrmilError, match="no slide of the labels CSV has a bag"):
        api.predict(tiny_run["run"], tiny_run["bags"], tmp_path / "p.csv", labels=csv)
    assert not (tmp_path / "p.csv").exists()
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"case_id": ["c"]}).to_csv(bad, index=False)
    with pytest.raises(SrmilError, match="bad.csv: missing column slide_id"):
        api.predict(tiny_run["run"], tiny_run["bags"], labels=bad)
