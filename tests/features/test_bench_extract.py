"""``srmil bench extract`` runs end to end on a few patches (figures are not asserted)."""

import numpy as np
import pytest

from srmil.bench import bench_extract, write_bench_pyramid
from srmil.slides.readers import open_slide


@pytest.fixture(scope="module")
def pyramid_40x(tmp_path_factory, svs_path):
    """A 40× pyramid (2 × 1 copies of a 1024 px crop of the CMU-1 slide, upsampled 2×)."""
    import tifffile

    d = tmp_path_factory.mktemp("bench")
    with open_slide(svs_path) as s:
        crop = s.read_region((600, 1200), 0, (1024, 768))  # (768, 1024, 3) at 20×
        res = 1e4 / s.mpp  # px per cm
    src = d / "crop20x.tif"
    tifffile.imwrite(src, crop, tile=(256, 256), photometric="rgb", metadata=None,
                     resolution=(res, res), resolutionunit="CENTIMETER")
    return crop, write_bench_pyramid(src, d / "crop40x.tif", reps=(2, 1))


def test_bench_pyramid_is_the_slide_upsampled_and_tiled(pyramid_40x):
    crop, path = pyramid_40x
    with open_slide(path) as s:
        assert s.dimensions == (4096, 1536) and s.magnification == 40
        assert s.level_downsamples == (1.0, 2.0, 4.0)
        l0 = s.read_region((0, 0), 0, (4096, 1536))  # (1536, 4096, 3)
        l1 = s.read_region((0, 0), 1, (2048, 768))
    assert np.array_equal(l0[::2, ::2], l1) and np.array_equal(l0[1::2, 1::2], l1)
    assert np.array_equal(l1[:, :1024], crop)  # copy 1 as is, copy 2 mirrored
    assert np.array_equal(l1[:, 1024:], crop[:, ::-1])


def test_bench_extract_reports_every_stage(pyramid_40x):
    source, rows = bench_extract(str(pyramid_40x[1]), n_patches=6, workers=(0,),
                                 batch_size=3, encoders=("stain_stats",))
    assert "6 distinct tissue patches of 224 px at 20×" in source
    assert "read as 224 px from level 1 (downsample 2)" in source  # 20× from a 40× scan
    stages = [(r["stage"], r["encoder"], r["workers"]) for r in rows]
    assert stages == [("read", None, 0), ("encode", "stain_stats", None),
                      ("read+encode", "stain_stats", 0)]
    assert all(r["patches"] == 6 and r["patches_per_s"] > 0 for r in rows)


def test_bench_looks_for_the_fixture_where_make_fixtures_puts_it():
    from fetch_fixtures import CACHE
    from srmil.bench import FIXTURES_DIR

    assert FIXTURES_DIR == CACHE
