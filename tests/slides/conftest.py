"""Real slides for the slide tests.

The SVS and the bad slides are fetched by ``make fixtures`` (``tests/fetch_fixtures.py``) into
``.cache/fixtures/``; a test that needs one fails (never skips) when it is missing. The 40×
pyramid and the blank slide are written here with tifffile from the real SVS pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fixture_files import fixture_file

SVS_MPP = 0.499


@pytest.fixture(scope="session")
def svs_path() -> Path:
    """OpenSlide's CMU-1-Small-Region: Aperio SVS, 2220×2967, mpp 0.499, one level."""
    return fixture_file("cmu_small_region.svs")


@pytest.fixture(scope="session")
def unopenable_path() -> Path:
    """OpenSlide's fixture that fails to open (unsupported TIFF compression)."""
    return fixture_file("unopenable.tiff")


@pytest.fixture(scope="session")
def unreadable_path() -> Path:
    """OpenSlide's fixture that opens, then fails on the first pixel read."""
    return fixture_file("unreadable.svs")


def write_pyramid(path: Path, base: np.ndarray, mpp: float | None, levels: int,
                  compression: str = "zlib") -> Path:
    """Tiled pyramid TIFF, levels as top-level IFDs (tile 256), resolution in px/cm.

    OpenSlide reads it as ``generic-tiff`` with ``openslide.mpp-x`` from the resolution tags.
    """
    import tifffile
    from PIL import Image

    img = base
    with tifffile.TiffWriter(path) as tif:
        for lvl in range(levels):
            kw = {}
            if mpp is not None:
                res = 1e4 / (mpp * 2**lvl)  # px per cm
                kw = {"resolution": (res, res), "resolutionunit": "CENTIMETER"}
            tif.write(img, tile=(256, 256), compression=compression, photometric="rgb",
                      subfiletype=1 if lvl else 0, metadata=None, **kw)
            h, w = img.shape[:2]
            img = np.asarray(Image.fromarray(img).resize((w // 2, h // 2), Image.Resampling.BOX))
    return path


@pytest.fixture(scope="session")
def svs_region(svs_path) -> np.ndarray:
    """A 1024×1024 region of the SVS with tissue and background: (1024, 1024, 3) uint8."""
    import openslide

    with openslide.OpenSlide(str(svs_path)) as s:
        return np.asarray(s.read_region((400, 1500), 0, (1024, 1024)).convert("RGB"))


@pytest.fixture(scope="session")
def pyramid_path(tmp_path_factory, svs_region) -> Path:
    """A "40×" scan: the SVS region upsampled 2× (2048², mpp 0.2495), 3 levels (1, 2, 4)."""
    from PIL import Image

    base = np.asarray(Image.fromarray(svs_region).resize((2048, 2048), Image.Resampling.BICUBIC))
    return write_pyramid(tmp_path_factory.mktemp("pyr") / "scan40x.tiff", base, SVS_MPP / 2, 3)


@pytest.fixture(scope="session")
def blank_path(tmp_path_factory) -> Path:
    """A white 20× slide (1024², mpp 0.5): no tissue."""
    base = np.full((1024, 1024, 3), 250, dtype=np.uint8)
    return write_pyramid(tmp_path_factory.mktemp("blank") / "blank.tiff", base, 0.5, 1)


@pytest.fixture(scope="session")
def no_mpp_path(tmp_path_factory, svs_region) -> Path:
    """The SVS region as a tiled TIFF without resolution tags: no pixel size."""
    return write_pyramid(tmp_path_factory.mktemp("nompp") / "nompp.tiff", svs_region, None, 1)


@pytest.fixture(scope="session")
def region_path(tmp_path_factory, svs_region) -> Path:
    """The 1024² SVS region as a small 20× slide (mpp 0.499): fast pipeline runs."""
    return write_pyramid(tmp_path_factory.mktemp("region") / "region.tiff", svs_region,
                         SVS_MPP, 1)
