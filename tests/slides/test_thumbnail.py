"""``Slide.thumbnail`` on slides without small pyramid levels: right pixels, bounded memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image

import srmil.slides.readers as readers
from srmil.slides.readers import open_slide


def _single_level_tiff(path: Path, width: int, height: int, tile: int = 256) -> Path:
    """A single-level tiled RGB TIFF whose tiles are written one by one (never whole in memory).

    Each tile is a smooth ramp plus a per-tile offset, so every tile differs.
    """
    import tifffile

    yy, xx = np.mgrid[0:tile, 0:tile]
    base = np.stack([xx, yy, (xx + yy) // 2], -1).astype(np.uint8)  # (tile, tile, 3)

    def tiles():
        for ty in range(height // tile):
            for tx in range(width // tile):
                yield base + np.uint8((tx * 7 + ty * 13) % 256)

    tifffile.imwrite(path, tiles(), shape=(height, width, 3), dtype=np.uint8,
                     tile=(tile, tile), photometric="rgb", metadata=None)
    return path


def test_thumbnail_in_tiles_equals_a_box_downsample_of_the_whole_level(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1792, 2816, 3), dtype=np.uint8)  # (h, w, 3) level 0, noise
    img[:, :, 1] = np.arange(2816, dtype=np.int64)[None, :] % 256  # and a ramp
    import tifffile

    p = tmp_path / "single.tif"
    tifffile.imwrite(p, img, tile=(256, 256), photometric="rgb", metadata=None)
    monkeypatch.setattr(readers, "THUMB_TILE", 300)  # many tiles, fractional boxes across them
    with open_slide(p, mpp=0.5) as s:
        assert s.level_count == 1
        thumb, scale = s.thumbnail(500)
    ref = np.asarray(Image.fromarray(img).resize((500, 318), Image.Resampling.BOX))
    assert thumb.shape == ref.shape == (318, 500, 3) and thumb.dtype == np.uint8
    assert scale == 2816 / 500
    assert np.abs(thumb.astype(int) - ref).max() <= 1  # rounding of the box weights only


def test_thumbnail_memory_is_bounded_by_the_tile_not_the_level(tmp_path):
    w, h = 8192, 4096
    p = _single_level_tiff(tmp_path / "big.tif", w, h)
    level_bytes = w * h * 4  # what get_thumbnail reads at once (RGBA): 134 MB
    with open_slide(p, mpp=0.5) as s:
        assert s.level_count == 1
        tracemalloc.start()
        try:
            thumb, scale = s.thumbnail(1000)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        corner = s.read_region((w - 256, h - 256), 0, (256, 256))  # (256, 256, 3)
    assert thumb.shape == (500, 1000, 3) and scale == w / 1000
    assert peak < level_bytes / 6, f"peak {peak / 1e6:.0f} MB of a {level_bytes / 1e6:.0f} MB level"
    # the bottom-right corner of the thumbnail is the mean of the slide's corner
    k = int(scale)  # 8 level px per thumbnail px
    want = corner[-k:, -k:].reshape(-1, 3).mean(0)
    assert np.abs(thumb[-1, -1].astype(float) - want).max() <= 1.5
