"""Heatmap rendering and per-patch outputs, from bags alone and over a slide."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from srmil.errors import SrmilError
from srmil.reports.heatmaps import (
    normalise,
    outline_field,
    render_heatmap,
    render_overlay,
    score_grid,
)
from srmil.reports.patch_outputs import (
    check_fits_slide,
    scores_table,
    top_bottom,
    write_geojson,
)
from srmil.slides.patching import read_patch


def test_score_grid_matches_brute_force_with_y_down():
    rng = np.random.default_rng(0)
    step = 448
    cells = rng.permutation(np.stack(np.meshgrid(np.arange(9), np.arange(5)), -1)
                            .reshape(-1, 2))[:30]
    coords = cells * step + np.array([1000, 2000])
    vals = rng.random(30)
    g = score_grid(coords, vals, step)
    assert g.values.shape == (cells[:, 1].max() - cells[:, 1].min() + 1,
                              cells[:, 0].max() - cells[:, 0].min() + 1)
    for (x, y), v in zip(coords, vals, strict=True):  # row = y (down), column = x
        r, c = (y - coords[:, 1].min()) // step, (x - coords[:, 0].min()) // step
        assert g.values[r, c] == pytest.approx(v, rel=1e-6)
    assert np.isnan(g.values).sum() == g.values.size - 30  # background stays empty
    left, right, bottom, top = g.extent
    assert (left, top) == (coords[:, 0].min(), coords[:, 1].min()) and bottom > top


def test_patches_sharing_a_cell_are_averaged():
    g = score_grid(np.array([[0, 0], [10, 0], [448, 0]]), np.array([1.0, 3.0, 5.0]), 448)
    assert g.values.tolist() == [[2.0, 5.0]]


def test_outline_follows_cell_borders():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = score_grid(np.array([[0, 0], [100, 0]]), np.array([1.0, 2.0]), 100)  # 1 × 2 block
    xs, ys, m = outline_field(g)
    fig, ax = plt.subplots()
    cs = ax.contour(xs, ys, m, levels=[0.5])
    v = np.concatenate([p.vertices for p in cs.get_paths()])
    plt.close(fig)
    # the outline is the block's border [0, 200] × [0, 100], corners cut by at most 1/8 cell
    assert v[:, 0].min() == pytest.approx(0) and v[:, 0].max() == pytest.approx(200)
    assert v[:, 1].min() == pytest.approx(0) and v[:, 1].max() == pytest.approx(100)
    on_border = (np.isclose(v[:, 0], 0) | np.isclose(v[:, 0], 200) | np.isclose(v[:, 1], 0)
                 | np.isclose(v[:, 1], 100))
    corner = np.minimum(np.abs(v[:, 0] - np.array([[0], [200]])).min(0),
                        np.abs(v[:, 1] - np.array([[0], [100]])).min(0))
    assert (on_border | (corner <= 100 / 8 + 1e-9)).all()


def test_scores_and_coordinates_of_different_lengths_are_one_line(tmp_path):
    with pytest.raises(SrmilError, match="3 scores for 4 coordinates") as e:
        render_heatmap(tmp_path / "h.png", np.zeros((4, 2)), np.zeros(3), 1.0)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "h.png").exists()


def test_normalisations_and_their_colour_bar_labels():
    v, lo, hi, label = normalise(np.array([0.5, 0.1, 0.9]), "rank", "attention")
    assert v.tolist() == pytest.approx([200 / 3, 100 / 3, 100.0]) and (lo, hi) == (0, 100)
    assert "rank percentile" in label and "attention" in label
    v, lo, hi, label = normalise(np.array([0.5, 0.1, 0.9]), "minmax", "attention")
    assert (lo, hi) == (0.1, 0.9) and "min to max" in label
    v, lo, hi, label = normalise(np.array([-0.2, 0.1, 0.5]), "minmax", "grad_x_input")
    assert (lo, hi) == (-0.5, 0.5) and "signed, 0 at the centre" in label
    with pytest.raises(SrmilError, match="unknown normalisation"):
        normalise(np.ones(2), "zscore")


def test_heatmap_png_keeps_the_slide_aspect_and_is_never_overwritten(tmp_path):
    cells = np.stack(np.meshgrid(np.arange(60), np.arange(12)), -1).reshape(-1, 2)  # 5:1 wide
    coords = cells * 256
    scores = cells[:, 0] + 0.1 * cells[:, 1]  # increases to the right
    p = render_heatmap(tmp_path / "wide.png", coords, scores, 256, title="wide", max_side=800)
    img = mpimg.imread(p)  # (h, w, 4) floats
    assert img.shape[1] > 2 * img.shape[0]
    # the map's left end is the colour map's low end (dark), the right end its high end
    row = img[img.shape[0] // 2, :, :3]
    dark = row.sum(axis=1) < 1.0
    assert dark.any()
    yellowish = (row[:, 0] > 0.8) & (row[:, 1] > 0.8) & (row[:, 2] < 0.4)
    assert np.flatnonzero(dark).min() < np.flatnonzero(yellowish).min()
    with pytest.raises(SrmilError, match="refusing to overwrite"):
        render_heatmap(p, coords, scores, 256)


def test_geojson_is_a_qupath_feature_collection(tmp_path):
    coords = np.array([[0, 0], [512, 0], [0, 512]])
    p = write_geojson(tmp_path / "p.geojson", coords, 512,
                      {"score": np.array([0.1, 0.7, 0.2]), "score_percentile": np.ones(3)})
    fc = json.loads(p.read_text())
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 3
    f = fc["features"][1]
    assert f["geometry"] == {"type": "Polygon", "coordinates": [
        [[512, 0], [1024, 0], [1024, 512], [512, 512], [512, 0]]]}
    assert f["properties"]["objectType"] == "detection"
    assert f["properties"]["measurements"] == {"score": 0.7, "score_percentile": 1.0}


def test_top_and_bottom_patches():
    t = scores_table(np.arange(12).reshape(6, 2), np.array([3, 9, 1, 9, 0, 5.0]), np.ones(6))
    tb = top_bottom(t, 2)
    assert tb[tb.group == "top"].patch.tolist() == [1, 3]  # ties keep row order
    assert tb[tb.group == "bottom"].patch.tolist() == [4, 2]
    assert tb["rank"].tolist() == [1, 2, 1, 2]
    assert len(top_bottom(t, 50)) == 12


class FakeSlide:
    """A two-level in-memory slide following the ``srmil.slides`` Slide contract."""

    def __init__(self, w: int = 2000, h: int = 1200) -> None:
        yy, xx = np.mgrid[0:h, 0:w]
        self.img = np.stack([xx % 256, yy % 256, (xx // 7) % 256], -1).astype(np.uint8)
        self.dimensions = (w, h)
        self.level_downsamples = (1.0, 4.0)
        self.mpp = 0.5

    def read_region(self, xy, level, size):
        ds = int(self.level_downsamples[level])
        x, y = xy
        return self.img[y:y + size[1] * ds:ds, x:x + size[0] * ds:ds][:size[1], :size[0]]

    def thumbnail(self, max_side):
        ds = int(np.ceil(max(self.dimensions) / max_side))
        return self.img[::ds, ::ds], float(ds)


def test_crops_read_the_patch_at_its_coordinates_on_any_contract_slide():
    s = FakeSlide()
    crop = read_patch(s, (512, 256), 256, 256)  # downsample 1: level 0, exact pixels
    assert np.array_equal(crop, s.img[256:512, 512:768])
    small = read_patch(s, (512, 128), 1024, 256)  # downsample 4: level 1, no resize
    assert np.array_equal(small, s.img[128:1152:4, 512:1536:4])


def test_overlay_on_a_slide_thumbnail(tmp_path):
    s = FakeSlide()
    cells = np.stack(np.meshgrid(np.arange(3, 5), np.arange(1, 4)), -1).reshape(-1, 2)
    coords = cells * 256
    check_fits_slide(coords, s.dimensions, "s.svs", "s.h5")
    thumb, scale = s.thumbnail(500)
    p = render_overlay(tmp_path / "o.png", thumb, scale, coords, np.arange(6.0), 256,
                       title="fake")
    img = mpimg.imread(p)
    assert img.shape[1] > 200 and img.shape[0] > 200


def test_a_bag_from_another_slide_is_refused_in_one_line():
    with pytest.raises(SrmilError, match=r"reach \(2048, 0\) but the slide is 2000 × 1200") as e:
        check_fits_slide(np.array([[0, 0], [2048, 0]]), (2000, 1200), "s.svs", "b.h5")
    assert "wrong slide for bag b.h5" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SrmilError, match=r"reach \(-256, 0\)"):
        check_fits_slide(np.array([[-256, 0]]), (2000, 1200), "s.svs", "b.h5")


def test_real_aperio_slide_overlay_and_crops(tmp_path, cmu_svs):
    from srmil.slides.readers import open_slide

    with open_slide(cmu_svs) as slide:
        w, h = slide.dimensions
        cells = np.stack(np.meshgrid(np.arange(w // 256), np.arange(h // 256)), -1).reshape(-1, 2)
        coords = cells * 256
        check_fits_slide(coords, slide.dimensions, cmu_svs, "b.h5")
        thumb, scale = slide.thumbnail(600)
        assert max(thumb.shape[:2]) == 600
        p = render_overlay(tmp_path / "o.png", thumb, scale, coords, cells.sum(1) * 1.0, 256)
        crop = read_patch(slide, (256, 512), 256, 128)
        ref = slide.read_region((256, 512), 0, (256, 256))
    assert mpimg.imread(p).shape[0] > 300
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    # the crop is the region, downsized: the mean colours agree
    assert np.abs(crop.reshape(-1, 3).mean(0) - ref.reshape(-1, 3).mean(0)).max() < 3
    assert pd.Series(crop.reshape(-1)).nunique() > 20  # tissue, not a blank read
