"""Patient bags (``data.bag_level patient``): every slide of a case in one bag."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import run_cli as cli
from helpers import trident_bag
from srmil.bags.readers import read_bag
from srmil.bags.synth import write_cohort
from srmil.config import GraphConfig, SynthConfig
from srmil.graphs.union import union_bags
from srmil.training.data import BagDataset, model_bag, patient_dataset


def _edges(ei: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, ei.T.tolist()))


def test_union_of_two_slides_is_their_graphs_side_by_side(tmp_path):
    # a 20× scan (level-0 step 224) and a 40× scan (step 448) of one case
    a = model_bag(read_bag(trident_bag(tmp_path / "a.h5", n=40, mag0=20, seed=1)),
                  GraphConfig(), None, True, 1)
    b = model_bag(read_bag(trident_bag(tmp_path / "b.h5", n=30, mag0=40, seed=2)),
                  GraphConfig(), None, True, 1)
    u = union_bags([a, b], "case_1", 1)
    na = a.num_nodes
    assert u.num_nodes == na + b.num_nodes and u.y == 1 and u.slide_id == "case_1"
    assert u.slides == (("a", na), ("b", b.num_nodes))
    torch.testing.assert_close(u.x, torch.cat([a.x, b.x]))
    torch.testing.assert_close(u.coords, torch.cat([a.coords, b.coords]))
    # no edge between the slides, and each block is that slide's own graph (its own step)
    src, dst = u.edge_index
    assert ((src < na) == (dst < na)).all()
    assert _edges(u.edge_index) == _edges(a.edge_index) | _edges(b.edge_index + na)
    assert len(_edges(b.edge_index)) > b.num_nodes  # the 40× slide has real neighbours
    # the neighbour table (SRMIL's fast path) is the union's too, block by block
    t = u.neighbour_table()
    for i in (0, na - 1, na, u.num_nodes - 1):
        ins = set(t.index[i][t.valid[i]].tolist())
        assert ins == {int(s) for s, d in zip(*u.edge_index.tolist(), strict=True) if d == i}


def test_patient_dataset_groups_slides_by_case(tmp_path):
    paths = [trident_bag(tmp_path / f"s{i}.h5", n=20 + i, seed=i) for i in range(3)]
    pool = BagDataset(paths, ["s0", "s1", "s2"], [0, 1, 1])
    table = pd.DataFrame({"slide_id": ["s2", "s0", "s1"], "case_id": ["c1", "c0", "c1"]})
    data = patient_dataset(pool, table)
    assert data.slide_ids == ["c1", "c0"] and data.members == {"c1": ["s1", "s2"], "c0": ["s0"]}
    assert data.targets == [1, 0] and len(data) == 2
    assert data[0].num_nodes == 21 + 22 and data[0].slides == (("s1", 21), ("s2", 22))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[str, str]:
    out = tmp_path_factory.mktemp("patients")
    s = write_cohort(SynthConfig(slides=16, dim=8, min_patches=20, max_patches=40, seed=2), out)
    return s["labels_csv"], s["features_dir"]


def test_patient_level_run_predicts_one_row_per_case(capsys, tmp_path, cohort):
    labels, feats = cohort
    table = pd.read_csv(labels)
    assert table.case_id.nunique() < len(table)  # some cases have two slides
    run = tmp_path / "run"
    code, _, err = cli(capsys, "cv", "--labels", labels, "--bags", feats, "--out", run,
                       "--model", "srmil", "--epochs", 2, "--device", "cpu", "--set",
                       "split.folds=2", "--set", "train.bootstrap=50", "--set",
                       "data.bag_level=patient")
    assert code == 0, err
    splits = pd.read_csv(run / "splits.csv")
    for k in range(2):
        pred = pd.read_csv(run / f"fold_{k}" / "predictions.csv")
        f = splits[(splits.fold == k) & splits.split.isin(["val", "test"])]
        assert "slide_id" not in pred and pred.case_id.is_unique
        assert sorted(pred.case_id) == sorted(f.case_id.unique())  # one row per case
        members = f.groupby("case_id").slide_id.apply(lambda s: ";".join(sorted(s)))
        assert (pred.set_index("case_id").slides == members.reindex(pred.case_id)).all()
        m = json.loads((run / f"fold_{k}" / "metrics.json").read_text())
        assert m["test"]["n"] == f[f.split == "test"].case_id.nunique()
    assert json.loads((run / "config.json").read_text())["data"] == {"bag_level": "patient"}
    # evaluate re-tests per case, with the same numbers as training's test split
    code, _, err = cli(capsys, "evaluate", "--run", run, "--out", tmp_path / "ev")
    assert code == 0, err
    ev = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    assert ev.case_id.nunique() == len(ev) == splits[splits.split == "test"].case_id.nunique()
    m0 = json.loads((run / "fold_0" / "metrics.json").read_text())["test"]
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["fold_0"]["auc"] == (
        pytest.approx(m0["auc"]))
    assert np.isfinite(json.loads((run / "summary.json").read_text())["metrics"]["test_auc"]
                       ["mean"])


def test_slides_of_one_case_with_different_labels_are_one_line(capsys, tmp_path, cohort):
    labels, feats = cohort
    t = pd.read_csv(labels)
    two = t.case_id.value_counts().index[0]
    rows = t.index[t.case_id == two]
    t.loc[rows[0], "label"] = "clustered"
    t.loc[rows[1], "label"] = "scattered"
    bad = tmp_path / "labels.csv"
    t.to_csv(bad, index=False)
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--labels", bad, "--bags", feats, "--out", run,
                       "--model", "abmil", "--epochs", 1, "--device", "cpu", "--set",
                       "split.folds=2", "--set", "data.bag_level=patient")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"case '{two}' has slides with different labels (clustered, scattered)" in err
    assert not run.exists()
