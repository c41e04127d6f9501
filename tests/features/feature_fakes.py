"""In-memory slides and patch files for the feature tests (no slide file needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.color import hed2rgb

from srmil.slides.patching import PatchGrid, write_patches
from srmil.slides.readers import Slide, magnification_from_mpp


def stain_rgb(h: float, e: float, shape: tuple[int, int], seed: int = 0,
              noise: float = 0.05) -> np.ndarray:
    """(h, w, 3) uint8 RGB of haematoxylin/eosin densities ``h``/``e`` (Beer-Lambert, skimage's
    stain vectors) with multiplicative density noise, so texture is not flat."""
    rng = np.random.default_rng(seed)
    hed = np.zeros((*shape, 3))
    hed[..., 0] = h * (1 + noise * rng.standard_normal(shape)).clip(0)
    hed[..., 1] = e * (1 + noise * rng.standard_normal(shape)).clip(0)
    return (hed2rgb(hed) * 255).round().clip(0, 255).astype(np.uint8)


class ArraySlide(Slide):
    """A one-level slide held in memory: ``image`` (H, W, 3) uint8; white outside."""

    def __init__(self, image: np.ndarray, mpp: float = 0.5, slide_id: str = "array") -> None:
        self.image = image
        self.path = None  # type: ignore[assignment]  # no file: DataLoader workers share it
        self.slide_id = slide_id
        h, w = image.shape[:2]
        self.dimensions = (w, h)
        self.level_count = 1
        self.level_dimensions = ((w, h),)
        self.level_downsamples = (1.0,)
        self.mpp = mpp
        self.magnification = magnification_from_mpp(mpp)

    def read_region(self, xy, level, size):
        x, y = int(xy[0]), int(xy[1])
        w, h = int(size[0]), int(size[1])
        out = np.full((h, w, 3), 255, np.uint8)
        H, W = self.image.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x1 > x0 and y1 > y0:
            out[y0 - y:y1 - y, x0 - x:x1 - x] = self.image[y0:y1, x0:x1]
        return out


def tissue_image(side: int = 512, seed: int = 0) -> np.ndarray:
    """Left half haematoxylin-rich, right half eosin-rich, bottom quarter background."""
    img = np.concatenate([stain_rgb(0.12, 0.02, (side, side // 2), seed),
                          stain_rgb(0.01, 0.06, (side, side // 2), seed + 1)], axis=1)
    img[3 * side // 4:] = 245
    return img


def patch_file(path: Path, coords: np.ndarray, slide: Slide, patch_size: int,
               target_mag: int | None = None) -> Path:
    """S's TRIDENT patch file for ``coords`` on ``slide`` (no overlap)."""
    mag0 = slide.magnification
    mag = target_mag or mag0
    ps0 = patch_size * mag0 // mag
    w, h = slide.dimensions
    grid = PatchGrid(mag0, mag, patch_size, ps0, 0, 0, ps0, w, h)
    return write_patches(path, coords, grid, slide.slide_id, path.parent)
