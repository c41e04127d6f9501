"""Survival calibration at a horizon (Kaplan–Meier of quantile groups of predicted survival),
checked on examples worked out by hand, and the report of a survival run that shows it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from srmil import api
from srmil.bags.synth import write_cohort
from srmil.config import DataConfig, RunConfig, SplitConfig, SynthConfig, TrainConfig
from srmil.reports.task_figures import (
    kaplan_meier_at,
    survival_calibration,
    survival_calibration_figure,
)

TIME = np.array([1, 2, 3, 4, 5, 6.0])
EVENT = np.array([1, 1, 0, 1, 0, 0])


def test_kaplan_meier_at_by_hand_and_against_scikit_survival():
    # at risk 6, 5, (3 after the censoring at 3): S = 5/6 · 4/5 · 2/3 = 4/9 from t = 4 on
    # no event yet: S = 1, and the lower bound is the exact one for 0 events among 6
    assert kaplan_meier_at(TIME, EVENT, 0.5) == pytest.approx((1.0, 0.025 ** (1 / 6), 1.0))
    assert kaplan_meier_at(TIME, EVENT, 2.0)[0] == pytest.approx(4 / 6)
    assert kaplan_meier_at(TIME, EVENT, 4.5)[0] == pytest.approx(4 / 9)
    assert kaplan_meier_at(TIME, EVENT, 6.0)[0] == pytest.approx(4 / 9)
    from sksurv.nonparametric import kaplan_meier_estimator

    t, s, (lo, hi) = kaplan_meier_estimator(EVENT.astype(bool), TIME, conf_type="log-log")
    at = int(np.searchsorted(t, 4.5, side="right")) - 1
    got = kaplan_meier_at(TIME, EVENT, 4.5)
    assert got == pytest.approx((s[at], lo[at], hi[at]), rel=1e-6)
    assert got[1] < got[0] < got[2]
    # beyond the last follow-up, censored: undefined; after a last event: 0
    assert np.isnan(kaplan_meier_at(TIME, EVENT, 7.0)[0])
    assert kaplan_meier_at(np.array([1.0, 2.0]), np.array([1, 1]), 5.0)[0] == 0.0


def test_survival_calibration_groups_by_predicted_survival():
    # fold 0: the five patients predicted to do worst all die before t = 3, the five predicted
    # to do best are all followed past it event-free; fold 1: two groups of 5 as well
    frame = pd.DataFrame({
        "fold": [0] * 10 + [1] * 10,
        "time": [1, 2, 2.5, 1.5, 0.5, 4, 5, 6, 7, 8] + [1, 4, 5, 6, 2, 4, 5, 6, 7, 8],
        "event": [1, 1, 1, 1, 1, 0, 0, 0, 0, 0] + [1, 0, 0, 0, 1, 1, 0, 0, 0, 0],
        "predicted": [0.1, 0.2, 0.3, 0.2, 0.1, 0.8, 0.9, 0.7, 0.9, 0.8]
                     + [0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    })
    cal = survival_calibration(frame, horizon=3.0)
    f0 = cal[cal.fold == "0"].set_index("group")
    assert f0.n.tolist() == [5, 5] and f0.events.tolist() == [5, 0]
    assert f0.loc[1, "predicted S(t)"] == pytest.approx(0.18)
    assert f0.loc[2, "predicted S(t)"] == pytest.approx(0.82)
    assert f0.loc[1, "observed S(t)"] == 0.0 and f0.loc[2, "observed S(t)"] == 1.0
    f1 = cal[cal.fold == "1"].set_index("group")
    # group 1 of fold 1: times 1 (event), 4, 5, 6, 2 (event) → at t = 3: 4/5 · 3/4 = 3/5
    assert f1.loc[1, "observed S(t)"] == pytest.approx(3 / 5)
    assert f1.loc[2, "observed S(t)"] == 1.0  # the event at 4 comes after t = 3
    pooled = cal[cal.fold == "pooled"]
    assert pooled.group.tolist() == [1, 2, 3, 4] and pooled.n.tolist() == [5, 5, 5, 5]
    assert pooled["predicted S(t)"].is_monotonic_increasing
    # the lowest pooled group is fold 0's worst five: all dead by t = 3
    assert pooled.iloc[0]["observed S(t)"] == 0.0
    # fewer than 5 per group: fewer groups, never fewer than one
    small = survival_calibration(frame[frame.fold == 0].head(4), horizon=3.0)
    assert small.group.tolist() == [1, 1]  # fold 0, pooled


def test_calibration_figure_is_drawn_per_fold_and_pooled(tmp_path):
    frame = pd.DataFrame({"fold": [0] * 6 + [1] * 6, "time": np.tile(TIME, 2),
                          "event": np.tile(EVENT, 2), "predicted": np.linspace(0.2, 0.9, 12)})
    cal = survival_calibration(frame, horizon=4.5, min_per_group=3)
    png = survival_calibration_figure(cal, 4.5, tmp_path / "cal.png")
    assert png.stat().st_size > 5000
    from PIL import Image

    w, h = Image.open(png).size
    assert w > 2.5 * h  # three panels side by side: fold 0, fold 1, pooled
    # six folds and pooled: two rows of (up to) four panels
    many = pd.concat([frame.assign(fold=frame.fold + 2 * i) for i in range(3)])
    png = survival_calibration_figure(survival_calibration(many, 4.5, min_per_group=3), 4.5,
                                      tmp_path / "cal7.png")
    w7, h7 = Image.open(png).size
    assert h7 == pytest.approx(2 * h, rel=0.05) and w7 > w


@pytest.fixture(scope="module")
def survival_patient_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("surv_patients")
    s = write_cohort(SynthConfig(slides=24, dim=8, min_patches=30, max_patches=60, seed=4,
                                 variant="survival"), root / "cohort")
    cfg = RunConfig(model="mean", train=TrainConfig(epochs=2, bootstrap=20, accelerator="cpu"),
                    split=SplitConfig(folds=2), data=DataConfig(bag_level="patient"))
    return api.cv(s["labels_csv"], s["features_dir"], root / "run", cfg), s


def test_report_of_a_survival_run_shows_calibration_and_a_risk_gallery(
        survival_patient_run, tmp_path):
    run, s = survival_patient_run
    page = api.report(run.run.path, out=tmp_path / "rep", gallery=2).path.read_text()
    assert "Calibration at t = " in page and "survival calibration per fold and pooled" in page
    assert (tmp_path / "rep" / "figures" / "survival_calibration.png").stat().st_size > 5000
    assert "Kaplan–Meier curves of the risk groups" in page and "Bags: one per patient" in page
    # the calibration table covers every test case once per fold, and once pooled
    section = page.split("Calibration at t = ")[1].split("<h2>")[0]
    rows = [r for r in section.split("<tr>")[2:]]
    cells = [[c.split("</td>")[0] for c in r.split("<td>")[1:]] for r in rows]
    n_cases = pd.read_csv(s["labels_csv"], dtype=str).case_id.nunique()
    pooled = sum(int(c[2]) for c in cells if c[0] == "pooled")
    per_fold = sum(int(c[2]) for c in cells if c[0] != "pooled")
    assert pooled == per_fold == n_cases
    # the gallery ranks by risk and its titles say so; the heatmaps score the risk
    assert "Highest predicted risk (test cases)" in page
    assert "Lowest predicted risk (test cases)" in page
    done = sorted((tmp_path / "rep" / "heatmaps").glob("*/heatmap.json"))
    assert len(done) >= 4
    info = json.loads(done[0].read_text())
    assert info["kind"] == "grad_x_input" and info["target_class"] is None
    assert isinstance(info["pred"], float) and "case_id" in info
    assert info["title"].split(": ")[1].startswith("risk ")  # the prediction is a risk
    assert "grad_x_input of the risk" in info["title"]
