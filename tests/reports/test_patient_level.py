"""A patient-level run (``data.bag_level patient``) applied and explained: ``predict`` per case
(with and without labels), heatmaps that stay per slide, and the report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_helpers import cli

from srmil import api
from srmil.bags.synth import write_cohort
from srmil.config import DataConfig, RunConfig, SplitConfig, SynthConfig, TrainConfig


@pytest.fixture(scope="module")
def patient_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("patient_run")
    s = write_cohort(SynthConfig(slides=16, dim=8, min_patches=20, max_patches=40, seed=2),
                     root / "cohort")
    cfg = RunConfig(model="abmil", train=TrainConfig(epochs=2, bootstrap=20, accelerator="cpu"),
                    split=SplitConfig(folds=2), data=DataConfig(bag_level="patient"))
    run = api.cv(s["labels_csv"], s["features_dir"], root / "run", cfg)
    labels = pd.read_csv(s["labels_csv"], dtype=str)
    assert labels.case_id.nunique() < len(labels)  # some cases have two slides
    return {"run": run.run.path, "bags": s["features_dir"], "labels": s["labels_csv"],
            "table": labels, "root": root}


def test_predict_without_labels_gives_one_row_per_case(patient_run, tmp_path, capsys):
    t = patient_run["table"]
    cases = tmp_path / "cases.csv"
    t[["slide_id", "case_id"]].to_csv(cases, index=False)  # no label column
    res = api.predict(patient_run["run"], patient_run["bags"], tmp_path / "p.csv",
                      labels=cases)
    p = res.table
    assert list(p.columns[:3]) == ["case_id", "slides", "folds"]
    assert "label" not in p and "slide_id" not in p and res.metrics is None
    assert sorted(p.case_id) == sorted(t.case_id.unique()) and p.case_id.is_unique
    members = t.groupby("case_id").slide_id.apply(lambda s: ";".join(sorted(s)))
    assert (p.set_index("case_id").slides == members.reindex(p.case_id)).all()
    np.testing.assert_allclose(p[["prob_clustered", "prob_scattered"]].sum(axis=1), 1.0,
                               rtol=1e-6)
    assert not (tmp_path / "p.metrics.json").exists()
    # the CLI prints a short summary and where it wrote, not the table
    code, out, err = cli(capsys, "predict", "--run", patient_run["run"], "--bags",
                         patient_run["bags"], "--labels", cases, "--out", tmp_path / "q.csv")
    assert code == 0, err
    n_cases, n_slides = t.case_id.nunique(), len(t)
    assert f"predicted  {n_cases} case(s) ({n_slides} slides), folds 0,1 averaged" in out
    assert f"written    {tmp_path / 'q.csv'}" in out
    assert len(out.strip().splitlines()) == 3 and t.slide_id.iloc[0] not in out
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "q.csv", dtype={"case_id": str}),
                                  pd.read_csv(tmp_path / "p.csv", dtype={"case_id": str}))


def test_predict_with_labels_scores_per_case(patient_run, tmp_path, capsys):
    t = patient_run["table"]
    # the case ensemble, worked out by hand from each fold's model on each case bag
    from srmil.training.data import BagDataset, patient_dataset
    from srmil.training.loop import predict_proba
    from srmil.training.metrics import classification_metrics
    from srmil.training.rundir import RunDir

    rd = RunDir(patient_run["run"])
    found = {p.stem: p for p in sorted(Path(patient_run["bags"]).glob("*.h5"))}
    ids = t.slide_id.tolist()
    slides = BagDataset([found[s] for s in ids], ids, None, rd.graph_config(), False, 8)
    data = patient_dataset(slides, t[["slide_id", "case_id"]])
    mean = np.mean([predict_proba(net, data)[0] for _, net in rd.models()], axis=0)
    y = np.array([["clustered", "scattered"].index(
        t.loc[t.case_id == c, "label"].iloc[0]) for c in data.slide_ids])

    res = api.predict(patient_run["run"], patient_run["bags"], tmp_path / "p.csv",
                      labels=patient_run["labels"])
    assert res.table.case_id.tolist() == data.slide_ids
    np.testing.assert_allclose(res.table[["prob_clustered", "prob_scattered"]], mean,
                               rtol=1e-5)
    assert res.table.target.tolist() == y.tolist()
    ref = classification_metrics(y, mean, 2)
    m = res.metrics
    assert m["unit"] == "case" and m["n"] == t.case_id.nunique() < len(t)
    assert m["auc"] == pytest.approx(ref["auc"]) and m["accuracy"] == ref["accuracy"]
    assert json.loads(res.metrics_path.read_text())["n"] == m["n"]
    assert res.metrics_path == tmp_path / "p.metrics.json"
    # a second run refuses to overwrite the metrics as it refuses the CSV
    (tmp_path / "p.csv").unlink()
    code, _, err = cli(capsys, "predict", "--run", patient_run["run"], "--bags",
                       patient_run["bags"], "--labels", patient_run["labels"], "--out",
                       tmp_path / "p.csv")
    assert code == 2 and "p.metrics.json: already exists" in err
    assert not (tmp_path / "p.csv").exists()
    code, out, err = cli(capsys, "predict", "--run", patient_run["run"], "--bags",
                         patient_run["bags"], "--labels", patient_run["labels"], "--out",
                         tmp_path / "p.csv", "--overwrite")
    assert code == 0, err
    assert f"per case     n={m['n']}" in out and "AUC" in out


def test_heatmaps_of_a_case_stay_per_slide(patient_run, tmp_path):
    t = patient_run["table"]
    two = t.groupby("case_id").slide_id.apply(sorted)
    case, (a, b) = next((c, s) for c, s in two.items() if len(s) == 2)
    single = next(s[0] for s in two if len(s) == 1)
    maps = api.heatmap(patient_run["run"], patient_run["bags"], tmp_path / "maps",
                       slide_ids=[a, b, single])
    assert maps.count("done") == 3
    info = {s: json.loads((tmp_path / "maps" / s / "heatmap.json").read_text())
            for s in (a, b, single)}
    # both slides of the case carry the case's prediction, each its own patches and coords
    assert info[a]["case_id"] == info[b]["case_id"] == case
    assert info[a]["case_slides"] == f"{a};{b}"
    assert info[a]["prob_clustered"] == info[b]["prob_clustered"]
    assert "scored in its case's bag" in info[a]["rule"]
    assert "case's bag" not in info[single]["rule"]
    from srmil.bags.readers import read_bag

    scores = {s: pd.read_csv(tmp_path / "maps" / s / "scores.csv") for s in (a, b)}
    for s in (a, b):
        bag = read_bag(Path(patient_run["bags"]) / f"{s}.h5")
        assert len(scores[s]) == bag.n_patches
        np.testing.assert_array_equal(scores[s][["x", "y"]].to_numpy(), bag.coords)
    # ABMIL's attention is a softmax over the case's bag: the two slides' shares sum to 1
    total = scores[a]["score"].sum() + scores[b]["score"].sum()
    assert total == pytest.approx(1.0, rel=1e-4)
    assert scores[a]["score"].sum() < 1 - 1e-3
    # the case's prediction is the case bag's, as predict gives it
    cases = tmp_path / "cases.csv"
    t[["slide_id", "case_id"]].to_csv(cases, index=False)
    pred = api.predict(patient_run["run"], patient_run["bags"], labels=cases, fold=None)
    k = pd.read_csv(patient_run["run"] / "splits.csv", dtype=str).query(
        "split == 'test' and slide_id == @a").fold.astype(int).iloc[0]
    own = api.predict(patient_run["run"], patient_run["bags"], labels=cases, fold=k)
    row = own.table.set_index("case_id").loc[case]
    assert info[a]["prob_clustered"] == pytest.approx(row["prob_clustered"], rel=1e-5)
    assert len(pred.table) == len(own.table)


def test_a_case_slide_without_its_partner_bag_is_one_line(patient_run, tmp_path):
    t = patient_run["table"]
    two = t.groupby("case_id").slide_id.apply(sorted)
    a, b = next(s for s in two if len(s) == 2)
    one = Path(patient_run["bags"]) / f"{a}.h5"
    maps = api.heatmap(patient_run["run"], one, tmp_path / "maps")
    assert maps.count("failed") == 1
    err = next(r.error for r in maps.slides if r.status == "failed")
    assert f"also has slide(s) {b}, which have no bag here" in err and "\n" not in err


def test_report_of_a_patient_level_run(patient_run, tmp_path):
    t = patient_run["table"]
    n_cases = t.case_id.nunique()
    rep = api.report(patient_run["run"], out=tmp_path / "rep", gallery=n_cases)  # every case
    page = rep.path.read_text()
    assert "Bags: one per patient" in page and "classification per patient" in page
    assert "Most confident test cases" in page and "Least confident test cases" in page
    gallery = page.split("ranked by confidence")[1].split("<h2>")[0]
    cards = re.findall(r'<div class="card">(.*?)</div></div>', gallery)
    shown = [re.search(r"<b>([^<]+)</b>", c).group(1) for c in cards]
    assert sorted(shown) == sorted(t.case_id.unique())  # each test case once, as a case
    slides_of = t.groupby("case_id").slide_id.apply(sorted)
    assert (slides_of.map(len) == 2).any()
    for case, card in zip(shown, cards, strict=True):
        # every slide of the case has its own heatmap in the card
        assert card.count("<img ") == len(slides_of[case])
        for sid in slides_of[case]:
            assert f"heatmap of {sid}" in card
            assert (tmp_path / "rep" / "heatmaps" / sid / "heatmap.png").stat().st_size > 1000
        if len(slides_of[case]) == 2:
            assert f"slide(s) {', '.join(slides_of[case])}" in card
