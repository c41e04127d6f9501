import h5py
import numpy as np
import pytest

from srmil.bags.readers import read_bag
from srmil.config import GraphConfig, PatchConfig
from srmil.errors import SrmilError
from srmil.graphs.grid import resolve_step
from srmil.slides.patching import (
    TRIDENT_COORDS_ATTRS,
    grid_coords,
    patch_grid,
    patch_level,
    read_patch,
    read_patches,
    select_patches,
    trident_dir,
    write_patches,
)
from srmil.slides.readers import open_slide
from srmil.slides.tissue import rasterize, segment_tissue


@pytest.fixture(scope="module")
def svs(svs_path):
    with open_slide(svs_path) as s:
        yield s, segment_tissue(s).polygons


@pytest.fixture(scope="module")
def scan40(pyramid_path):
    with open_slide(pyramid_path) as s:
        yield s, segment_tissue(s).polygons


def _bag_from_patches(patch_file, out):
    """A feature file as the features stage writes it (zeros), to read back with read_bag."""
    coords, attrs = read_patches(patch_file)
    with h5py.File(out, "w") as h5:
        c = h5.create_dataset("coords", data=coords)
        for k, v in attrs.items():
            c.attrs[k] = v
        h5.create_dataset("features", data=np.zeros((len(coords), 4), np.float32))
    return read_bag(out)


def test_grid_on_the_real_svs(svs):
    slide, polygons = svs
    cfg = PatchConfig(min_tissue=0.5)
    coords, frac, grid = select_patches(slide, polygons, cfg)
    assert (grid.patch_size_level0, grid.step, grid.level0_magnification) == (224, 224, 20)
    assert 20 < len(coords) < len(grid_coords(grid)) == (2220 // 224) * (2967 // 224)
    assert coords.dtype == np.int64 and coords.shape[1] == 2
    assert (coords % grid.step == 0).all()  # global grid aligned at level-0 (0, 0)
    assert (coords >= 0).all()
    assert (coords[:, 0] + 224 <= 2220).all() and (coords[:, 1] + 224 <= 2967).all()
    assert (frac >= 0.5).all()
    # the threshold, checked against a level-0-resolution mask of the same contours
    fine = rasterize(polygons, (2967, 2220), 1.0)
    exact = np.array([fine[y:y + 224, x:x + 224].mean() for x, y in grid_coords(grid)])
    kept = {tuple(c) for c in coords.tolist()}
    is_kept = np.array([tuple(c) in kept for c in grid_coords(grid).tolist()])
    assert (exact[is_kept] > 0.5 - 0.07).all()
    assert (exact[~is_kept] < 0.5 + 0.07).all()
    assert is_kept.sum() == pytest.approx((exact >= 0.5).sum(), abs=3)
    more, _, _ = select_patches(slide, polygons, PatchConfig(min_tissue=0.1))
    assert len(more) > len(coords)


def test_patch_file_has_tridents_attrs(svs, tmp_path):
    slide, polygons = svs
    coords, _, grid = select_patches(slide, polygons, PatchConfig())
    job = tmp_path / trident_dir(20, 224, 0)
    assert trident_dir(20, 224, 0) == "20x_224px_0px_overlap"
    out = write_patches(job / "patches" / "cmu_patches.h5", coords, grid, "cmu", job)
    with h5py.File(out, "r") as h5:
        assert list(h5.keys()) == ["coords"]
        assert h5["coords"].dtype == np.int64
        attrs = dict(h5["coords"].attrs)
    assert set(TRIDENT_COORDS_ATTRS) <= set(attrs)
    assert {k: attrs[k] for k in TRIDENT_COORDS_ATTRS} == {
        "patch_size": 224, "patch_size_level0": 224, "level0_magnification": 20,
        "target_magnification": 20, "overlap": 0, "name": "cmu", "savetodir": str(job),
        "level0_width": 2220, "level0_height": 2967}
    back, battrs = read_patches(out)
    np.testing.assert_array_equal(back, coords)
    assert battrs["name"] == "cmu" and isinstance(battrs["patch_size"], int)
    bag = _bag_from_patches(out, tmp_path / "cmu.h5")
    assert bag.reader == "trident"
    est = resolve_step(bag, GraphConfig())
    assert (est.step, est.source) == (224, "attrs+coords")
    with pytest.raises(SrmilError, match="refusing to overwrite"):
        write_patches(out, coords, grid, "cmu", job)


def test_20x_from_a_40x_scan_reads_level_1(scan40, tmp_path):
    slide, polygons = scan40
    coords, _, grid = select_patches(slide, polygons, PatchConfig())
    assert (grid.level0_magnification, grid.patch_size_level0, grid.step) == (40, 448, 448)
    assert len(coords) > 3 and (coords % 448 == 0).all()
    assert (coords + 448 <= 2048).all()
    assert patch_level(slide, 448, 224) == (1, 224)
    x, y = coords[0]
    patch = read_patch(slide, (x, y), 448, 224)
    assert patch.shape == (224, 224, 3) and patch.dtype == np.uint8
    np.testing.assert_array_equal(patch, slide.read_region((x, y), 1, (224, 224)))
    # a patch that is not a pyramid level: read from level 1, resized (antialiased)
    assert patch_level(slide, 448, 160) == (1, 224)
    small = read_patch(slide, (x, y), 448, 160)
    assert small.shape == (160, 160, 3)
    assert abs(small.astype(float).mean() - patch.astype(float).mean()) < 3
    # 40× patches of the 40× scan come from level 0, step 224
    c40, _, g40 = select_patches(slide, polygons, PatchConfig(magnification=40))
    assert (g40.patch_size_level0, g40.step) == (224, 224) and patch_level(slide, 224, 224)[0] == 0
    # and the graph builder recovers the step 448 from the written attrs
    out = write_patches(tmp_path / "p.h5", coords, grid, "scan40x", tmp_path)
    assert resolve_step(_bag_from_patches(out, tmp_path / "scan40x.h5")).step == 448


def test_overlap_steps_and_refusals(svs):
    slide, polygons = svs
    coords, _, grid = select_patches(slide, polygons, PatchConfig(overlap=32))
    assert (grid.patch_size_level0, grid.overlap_level0, grid.step) == (224, 32, 192)
    assert (coords % 192 == 0).all()
    g10 = patch_grid(slide, PatchConfig(magnification=10, patch_size=256))
    assert (g10.patch_size_level0, g10.step) == (512, 512)
    with pytest.raises(SrmilError, match="target magnification 40× is above the scan's 20×"):
        patch_grid(slide, PatchConfig(magnification=40))
    with pytest.raises(SrmilError, match="overlap"):
        patch_grid(slide, PatchConfig(overlap=224))


def test_read_patches_errors(tmp_path):
    bad = tmp_path / "bad_patches.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # truncated
    with pytest.raises(SrmilError, match="truncated or corrupt"):
        read_patches(bad)
    with h5py.File(tmp_path / "x.h5", "w") as h5:
        h5["coords"] = np.zeros((3, 3))
    with pytest.raises(SrmilError, match=r"shape \(3, 3\)"):
        read_patches(tmp_path / "x.h5")


def test_tissue_fractions_from_an_int32_integral_image():
    """Fractions equal a direct count, and the summed-area table costs ~4 bytes per mask pixel
    (the int64 cumsums before: ~32; 744 MiB on a 102k-patch slide)."""
    import tracemalloc

    from srmil.slides.patching import integral_image, tissue_fractions

    rng = np.random.default_rng(0)
    mask = rng.random((700, 900)) < 0.3
    integral = integral_image(mask)
    assert integral.dtype == np.int32 and integral.shape == (701, 901)
    ref = np.zeros((701, 901), np.int64)
    ref[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    np.testing.assert_array_equal(integral, ref)
    coords = np.array([[0, 0], [160, 320], [1760, 1360], [1700, 1300]])  # level-0, ds 2
    frac = tissue_fractions(coords, 80, mask, 2.0)
    for (x, y), f in zip(coords // 2, frac, strict=True):
        assert f == pytest.approx(mask[y:y + 40, x:x + 40].mean())
    tracemalloc.start()
    try:
        tissue_fractions(coords, 80, mask, 2.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / mask.size < 6, f"{peak / mask.size:.1f} bytes per mask pixel"
