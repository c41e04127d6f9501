"""``srmil heatmap`` end to end on a trained run: outputs, fold choice, slides, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from report_helpers import cli

from srmil.bags.readers import read_bag
from srmil.bags.writer import write_trident_bag
from srmil.graphs.graph_bag import to_graph_bag
from srmil.training.inference import graph_config, load_run_models

PER_SLIDE = ("scores.csv", "heatmap.png", "top_bottom.csv", "patches.geojson", "heatmap.json")


def _attention(run, bag_path, folds):
    info, models = load_run_models(run)
    nets = dict(models)
    gb = to_graph_bag(read_bag(bag_path), graph_config(info))
    with torch.no_grad():
        return np.mean([nets[k].eval().attention(gb).numpy() for k in folds], axis=0)


def _bag(path, coords, d=8, seed=0):
    f = np.random.default_rng(seed).standard_normal((len(coords), d)).astype(np.float32)
    return write_trident_bag(path, f, coords, patch_size=256, level0_magnification=20,
                             target_magnification=20)


def test_every_slide_gets_its_outputs_from_its_test_fold(capsys, tmp_path, tiny_run):
    run, bags, out = tiny_run["run"], tiny_run["bags"], tmp_path / "hm"
    code, _, err = cli(capsys, "heatmap", "--run", run, "--bags", bags, "--out", out,
                       "--top-k", 3, "--max-side", 300)
    assert code == 0, err
    index = pd.read_csv(out / "index.csv", dtype={"slide_id": str, "folds": str})
    splits = pd.read_csv(run / "splits.csv", dtype={"slide_id": str})
    test_fold = splits[splits.split == "test"].set_index("slide_id")["fold"].astype(str)
    assert len(index) == 12 and (index.status == "done").all()
    assert (index.set_index("slide_id")["folds"] == test_fold.reindex(index.slide_id)).all()
    assert (index.kind == "attention").all()
    sid = index.slide_id.iloc[0]
    for name in PER_SLIDE:
        assert (out / sid / name).is_file(), name
    scores = pd.read_csv(out / sid / "scores.csv")
    bag = read_bag(bags / f"{sid}.h5")
    assert np.array_equal(scores[["x", "y"]].to_numpy(), bag.coords)
    ref = _attention(run, bags / f"{sid}.h5", [int(index.folds.iloc[0])])
    assert np.allclose(scores.score, ref, atol=1e-6)
    fc = json.loads((out / sid / "patches.geojson").read_text())
    got = [f["properties"]["measurements"]["score"] for f in fc["features"]]
    assert np.allclose(got, scores.score, atol=1e-9)
    tb = pd.read_csv(out / sid / "top_bottom.csv")
    assert tb[tb.group == "top"].score.iloc[0] == pytest.approx(scores.score.max())
    # a second call with the same run and settings skips finished slides, leaving them as they are
    before = (out / sid / "heatmap.png").stat().st_mtime_ns
    code, _, err = cli(capsys, "heatmap", "--run", run, "--bags", bags, "--out", out,
                       "--top-k", 3, "--max-side", 300)
    assert code == 0 and "0 slide(s) done, 12 already done" in err
    assert (out / sid / "heatmap.png").stat().st_mtime_ns == before
    # other settings, or another run, into the same --out: refused per slide, never kept
    # silently nor replaced
    code, _, err = cli(capsys, "heatmap", "--run", run, "--bags", bags, "--out", out,
                       "--slide-ids", sid, "--top-k", 5, "--max-side", 300)
    assert code == 1 and "settings.top_k" in err and "--overwrite" in err
    other = tmp_path / "other_run"
    shutil.copytree(run, other)
    code, _, err = cli(capsys, "heatmap", "--run", other, "--bags", bags, "--out", out,
                       "--slide-ids", sid, "--top-k", 3, "--max-side", 300)
    assert code == 1 and "another run" in err and "differs in run" in err
    assert (out / sid / "heatmap.png").stat().st_mtime_ns == before
    code, _, err = cli(capsys, "heatmap", "--run", other, "--bags", bags, "--out", out,
                       "--slide-ids", sid, "--top-k", 3, "--max-side", 300, "--overwrite")
    assert code == 0
    made_by = json.loads((out / sid / "heatmap.json").read_text())["made_by"]
    assert made_by["run"] == str(other.resolve())


def test_chosen_fold_and_slides_outside_every_test_split(capsys, tmp_path, tiny_run):
    run, bags = tiny_run["run"], tiny_run["bags"]
    ids = sorted(p.stem for p in bags.glob("*.h5"))[:3]
    code, _, _ = cli(capsys, "heatmap", "--run", run, "--bags", bags, "--out", tmp_path / "f1",
                     "--fold", 1, "--no-geojson", "--max-side", 300, "--slide-ids", *ids)
    assert code == 0
    index = pd.read_csv(tmp_path / "f1" / "index.csv", dtype={"folds": str})
    assert index.slide_id.tolist() == ids and (index.folds == "1").all()
    assert not list((tmp_path / "f1").glob("*/patches.geojson"))
    new = tmp_path / "new" / "newslide.h5"
    _bag(new, np.stack(np.meshgrid(np.arange(7), np.arange(6)), -1).reshape(-1, 2) * 256)
    code, _, _ = cli(capsys, "heatmap", "--run", run, "--bags", new.parent, "--out",
                     tmp_path / "n", "--max-side", 300)
    assert code == 0
    info = json.loads((tmp_path / "n" / "newslide" / "heatmap.json").read_text())
    assert info["folds"] == [0, 1] and "mean over folds" in info["rule"]
    scores = pd.read_csv(tmp_path / "n" / "newslide" / "scores.csv")
    assert np.allclose(scores.score, _attention(run, new, [0, 1]), atol=1e-6)


def test_bad_bags_and_slides_are_one_line_each_and_keep_what_was_drawn(
        capsys, tmp_path, tiny_run, cmu_svs, unreadable_svs):
    bags, slides = tmp_path / "bags", tmp_path / "slides"
    slides.mkdir()
    cells = np.stack(np.meshgrid(np.arange(8), np.arange(11)), -1).reshape(-1, 2)
    _bag(bags / "cmu.h5", cells * 256)  # fits the 2220 × 2967 slide
    (slides / "cmu.svs").symlink_to(cmu_svs)
    _bag(bags / "wrong.h5", cells * 512)  # reaches (3584, 5120): another slide's bag
    (slides / "wrong.svs").symlink_to(cmu_svs)
    _bag(bags / "broken.h5", cells * 256)
    shutil.copy(unreadable_svs, slides / "broken.svs")
    _bag(bags / "otherdim.h5", cells * 256, d=5)
    code, _, err = cli(capsys, "heatmap", "--run", tiny_run["run"], "--bags", bags,
                       "--slides", slides, "--out", tmp_path / "hm", "--top-k", 2,
                       "--max-side", 300)
    assert code == 1  # some slides failed, the others are done
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 3, err
    assert any("wrong.svs" in ln and "wrong slide for bag wrong.h5" in ln for ln in lines)
    assert any("broken.svs" in ln for ln in lines)
    assert any("otherdim.h5" in ln and "feature dimension 5" in ln for ln in lines)
    assert "1 slide(s) done, 0 already done (skipped), 3 failed" in err
    done = tmp_path / "hm" / "cmu"
    for name in (*PER_SLIDE, "overlay.png", "crops/crops.png", "crops/top_01.png"):
        assert (done / name).is_file(), name
    tb = pd.read_csv(done / "top_bottom.csv")
    assert tb.crop.tolist() == ["crops/top_01.png", "crops/top_02.png",
                                "crops/bottom_01.png", "crops/bottom_02.png"]
    for sid in ("wrong", "broken"):  # the bag-only outputs were drawn before the slide failed
        assert (tmp_path / "hm" / sid / "heatmap.png").is_file()
        assert not (tmp_path / "hm" / sid / "heatmap.json").exists()
    index = pd.read_csv(tmp_path / "hm" / "index.csv")
    assert sorted(index[index.status == "failed"].slide_id) == ["broken", "otherdim", "wrong"]


def test_overlay_on_a_slide_without_a_pixel_size(capsys, tmp_path, tiny_run, cmu_svs):
    """Pixel coordinates need no pixel size: a slide file lacking one still gets its overlay."""
    import openslide
    import tifffile

    with openslide.OpenSlide(str(cmu_svs)) as s:
        region = np.asarray(s.read_region((0, 0), 0, (1024, 1024)).convert("RGB"))
    slides, bags = tmp_path / "slides", tmp_path / "bags"
    slides.mkdir()
    bags.mkdir()
    tifffile.imwrite(slides / "nompp.tiff", region, tile=(256, 256), photometric="rgb",
                     compression="deflate")  # no resolution tags
    cells = np.stack(np.meshgrid(np.arange(4), np.arange(4)), -1).reshape(-1, 2)
    _bag(bags / "nompp.h5", cells * 256)
    code, _, err = cli(capsys, "heatmap", "--run", tiny_run["run"], "--bags", bags,
                       "--slides", slides, "--out", tmp_path / "hm", "--top-k", 1,
                       "--max-side", 300)
    assert code == 0, err
    assert (tmp_path / "hm" / "nompp" / "overlay.png").is_file()


def test_an_unwritable_out_is_one_line(capsys, tmp_path, tiny_run):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = cli(capsys, "heatmap", "--run", tiny_run["run"], "--bags", tiny_run["bags"],
                       "--out", blocker / "hm")
    assert code == 2 and "not writable" in err and "Traceback" not in err
    assert blocker.read_text() == "not a directory"


def test_a_slide_whose_test_fold_is_unfinished_is_refused(capsys, tmp_path, tiny_run):
    """Folds still training are not used, and no other fold's model (which trained on the slide)
    stands in for them."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run["run"], run)
    splits = pd.read_csv(run / "splits.csv", dtype={"slide_id": str})
    test = splits[splits.split == "test"]
    k = int(test.fold.iloc[0])
    sid = test.slide_id.iloc[0]
    (run / f"fold_{k}" / "DONE").unlink()  # as if fold k were still training
    code, _, err = cli(capsys, "heatmap", "--run", run, "--bags", tiny_run["bags"],
                       "--out", tmp_path / "hm", "--slide-ids", sid)
    assert code == 1 and f"slide {sid}: its test fold {k} is not finished" in err
    assert not (tmp_path / "hm" / sid / "heatmap.json").exists()
