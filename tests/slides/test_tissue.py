import json

import numpy as np
import pytest

from srmil.config import TissueConfig
from srmil.errors import SrmilError
from srmil.slides.readers import open_slide
from srmil.slides.tissue import (
    TissuePolygon,
    draw_contours,
    mask_to_polygons,
    polygons_to_geojson,
    rasterize,
    read_geojson,
    segment_tissue,
    tissue_mask,
)


@pytest.fixture(scope="module")
def svs_tissue(svs_path):
    with open_slide(svs_path) as s:
        return segment_tissue(s)


def test_segmentation_of_the_real_svs(svs_tissue):
    t = svs_tissue
    assert 0.2 < t.fraction < 0.6  # one strip of skin on a white background
    assert t.mask.shape == (370, 277)  # 4 µm/px of a 0.499 µm/px slide: downsample ≈ 8
    assert t.downsample == pytest.approx(2220 / 277, rel=1e-3)
    assert len(t.polygons) >= 1
    big = t.polygons[0]
    assert big.area > 0.8 * sum(p.area for p in t.polygons)  # sorted, largest first
    assert len(big.holes) >= 1  # the lumen in the middle of the strip stays a hole
    xy = np.concatenate([p.exterior for p in t.polygons])
    assert xy[:, 0].min() >= 0 and xy[:, 0].max() <= 2220
    assert xy[:, 1].min() >= 0 and xy[:, 1].max() <= 2967
    # the polygons rasterise back to the mask they came from
    again = rasterize(t.polygons, t.mask.shape, t.downsample)
    iou = (again & t.mask).sum() / (again | t.mask).sum()
    assert iou > 0.95


def test_the_tissue_is_where_the_stain_is(svs_path, svs_tissue):
    with open_slide(svs_path) as s:
        rgb, ds = s.thumbnail(277 * 2)
    mask = rasterize(svs_tissue.polygons, rgb.shape[:2], ds)
    grey = rgb.mean(axis=2)
    assert grey[mask].mean() < grey[~mask].mean() - 40  # tissue is darker than the glass
    assert np.median(grey[~mask]) > 220


def test_geojson_is_a_qupath_feature_collection(svs_tissue, tmp_path):
    gj = polygons_to_geojson(svs_tissue.polygons)
    assert gj["type"] == "FeatureCollection"
    f = gj["features"][0]
    assert f["geometry"]["type"] == "Polygon"
    assert f["properties"]["objectType"] == "annotation"
    assert f["properties"]["classification"]["name"] == "Tissue"
    ids = [g["properties"]["tissue_id"] for g in gj["features"]]
    assert ids == list(range(len(gj["features"])))
    rings = f["geometry"]["coordinates"]
    assert len(rings) == 1 + len(svs_tissue.polygons[0].holes)
    for ring in rings:
        assert ring[0] == ring[-1] and len(ring) >= 4  # closed linear rings
    path = tmp_path / "s.geojson"
    path.write_text(json.dumps(gj))
    back = read_geojson(path)
    assert len(back) == len(svs_tissue.polygons)
    np.testing.assert_allclose(back[0].exterior, svs_tissue.polygons[0].exterior)
    assert len(back[0].holes) == len(svs_tissue.polygons[0].holes)


def test_read_geojson_accepts_qupath_exports(tmp_path):
    square = [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]
    hole = [[40, 40], [60, 40], [60, 60], [40, 60], [40, 40]]
    other = [[200, 200], [300, 200], [300, 300], [200, 200]]
    export = [  # QuPath's "export as array of features" with a MultiPolygon and a point
        {"type": "Feature", "geometry": {"type": "MultiPolygon",
                                          "coordinates": [[square, hole], [other]]},
         "properties": {"classification": {"name": "Tumor"}}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]}},
    ]
    p = tmp_path / "q.geojson"
    p.write_text(json.dumps(export))
    polys = read_geojson(p)
    assert len(polys) == 2 and len(polys[0].holes) == 1
    assert polys[0].area == pytest.approx(100 * 100 - 20 * 20)
    p.write_text("{not json")
    with pytest.raises(SrmilError, match="q.geojson: not valid JSON"):
        read_geojson(p)
    p.write_text(json.dumps({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}))
    with pytest.raises(SrmilError, match="expected"):
        read_geojson(p)


def test_rasterize_keeps_holes_and_islands_in_holes():
    outer = TissuePolygon(np.array([[0, 0], [80, 0], [80, 80], [0, 80], [0, 0]], float),
                          (np.array([[20, 20], [60, 20], [60, 60], [20, 60], [20, 20]], float),))
    island = TissuePolygon(np.array([[30, 30], [50, 30], [50, 50], [30, 50], [30, 30]], float))
    m = rasterize([outer, island], (100, 100), 1.0)
    assert m[10, 10] and m[70, 5]  # the ring
    assert not m[25, 25] and not m[55, 45]  # the hole
    assert m[40, 40]  # the island inside the hole is tissue again
    assert not m[90, 90] and not m[85, 10]  # outside
    area = 80 * 80 - 40 * 40 + 20 * 20
    assert abs(int(m.sum()) - area) < 4 * (80 + 40 + 20)  # within a pixel along the edges
    coarse = rasterize([outer, island], (10, 10), 10.0)  # same picture at downsample 10
    assert coarse[0, 0] and coarse[4, 4] and not coarse[9, 9]


def test_small_holes_are_filled_big_holes_kept_specks_dropped():
    # 4 µm/px image: pink tissue 600×600 px with a 100×100 hole (0.16 mm²), a 10×10 hole
    # (0.0016 mm², below min_hole_mm2) and a detached 5×5 speck (below min_tissue_mm2)
    rgb = np.full((800, 800, 3), 245, np.uint8)
    rgb[100:700, 100:700] = (200, 100, 170)
    rgb[300:400, 300:400] = 245
    rgb[550:560, 550:560] = 245
    rgb[20:25, 20:25] = (200, 100, 170)
    noise = np.random.default_rng(0).integers(-8, 8, rgb.shape)
    rgb = np.clip(rgb + noise, 0, 255).astype(np.uint8)
    mask = tissue_mask(rgb, 4.0, TissueConfig())
    assert not mask[350, 350]  # big hole stays a hole
    assert mask[555, 555]  # small hole filled
    assert not mask[22, 22]  # speck dropped
    assert mask[150, 150] and not mask[50, 700]
    polys = mask_to_polygons(mask, 8.0)  # as if the image were a downsample-8 thumbnail
    assert len(polys) == 1 and len(polys[0].holes) == 1
    assert polys[0].area == pytest.approx((600 * 600 - 100 * 100) * 64, rel=0.03)


def test_blank_slide_has_no_tissue(blank_path):
    with open_slide(blank_path) as s:
        t = segment_tissue(s)
    assert t.polygons == [] and t.fraction == 0.0


def test_contours_are_drawn(svs_path, svs_tissue):
    with open_slide(svs_path) as s:
        rgb, ds = s.thumbnail(600)
    out = draw_contours(rgb, svs_tissue.polygons, ds)
    assert out.shape == rgb.shape
    changed = (out != rgb).any(axis=2)
    assert 0.001 < changed.mean() < 0.2
    assert (out[changed][:, 1] >= out[changed][:, 0]).mean() > 0.9  # green/blue outlines


def test_saturation_is_hsv_saturation_in_integers():
    """⌊255·(max-min)/max⌋, 0 for black: skimage's rgb2hsv S·255 up to its float rounding."""
    from skimage.color import rgb2hsv

    from srmil.slides.tissue import saturation

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    rgb[0, :3] = 0  # black: no saturation
    rgb[1, :3] = (255, 0, 0)  # pure red: full saturation
    got = saturation(rgb, rows=16)  # several row blocks
    c = rgb.astype(np.int64)
    want = 255 * (c.max(2) - c.min(2)) // np.maximum(c.max(2), 1)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.uint8 and got[0, 0] == 0 and got[1, 0] == 255
    ref = (rgb2hsv(rgb)[..., 1] * 255).astype(np.int64)
    assert 0 <= (got - ref).min() and (got - ref).max() <= 1


def test_tissue_mask_needs_few_bytes_per_pixel():
    """The mask of a large segmentation image must not cost float64 HSV (~105 bytes/px before:
    3.1 GB for 6250×5000); integer saturation and boolean morphology need ~16."""
    import tracemalloc

    rgb = np.full((800, 1000, 3), 235, np.uint8)
    rgb[200:600, 200:800] = (170, 90, 160)
    tissue_mask(rgb, 4.0)  # imports and caches outside the measurement
    tracemalloc.start()
    try:
        mask = tissue_mask(rgb, 4.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert mask[400, 500] and not mask[50, 50]
    assert peak / mask.size < 32, f"{peak / mask.size:.0f} bytes per pixel"
