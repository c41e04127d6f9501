"""Patch grid on level 0, tissue-fraction filter, TRIDENT's ``patches/<slide>_patches.h5``.

The grid is global and aligned at level-0 (0, 0), as TRIDENT's: with ``patch_size_level0 =
patch_size · level0_mag // target_mag`` and ``overlap_level0 = overlap · level0_mag //
target_mag``, the step is ``patch_size_level0 - overlap_level0`` and every coordinate is a
multiple of it. Patches lie wholly inside the slide. A 20×/224 px job on a 40× scan has step 448.

Example:
    >>> grid = patch_grid(slide, PatchConfig(magnification=20, patch_size=224))
    >>> coords, frac = select_patches(slide, polygons, PatchConfig())
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from srmil.config import PatchConfig
from srmil.errors import SrmilError
from srmil.slides.readers import Slide, best_level
from srmil.slides.tissue import TissuePolygon, rasterize
from srmil.storage import atomic_path, open_h5

# TRIDENT's attrs on `coords`, in the order it writes them
TRIDENT_COORDS_ATTRS = ("patch_size", "patch_size_level0", "level0_magnification",
                        "target_magnification", "overlap", "name", "savetodir",
                        "level0_width", "level0_height")


def trident_dir(mag: int, patch_size: int, overlap: int = 0) -> str:
    """TRIDENT's job sub-folder, e.g. ``20x_224px_0px_overlap`` (also ``srmil.bags.writer``'s)."""
    return f"{mag}x_{patch_size}px_{overlap}px_overlap"


@dataclass(frozen=True)
class PatchGrid:
    """Level-0 geometry of a patch job on one slide (all integers, level-0 px unless named)."""

    level0_magnification: int
    target_magnification: int
    patch_size: int  # at the target magnification
    patch_size_level0: int
    overlap: int  # at the target magnification
    overlap_level0: int
    step: int
    width: int  # level-0 slide size
    height: int


def patch_grid(slide: Slide, cfg: PatchConfig = PatchConfig()) -> PatchGrid:
    """The grid of ``cfg`` on ``slide``.

    Raises:
        SrmilError: target magnification above the scan's (no upsampling), bad sizes.
    """
    mag0, mag = slide.magnification, int(cfg.magnification)
    if mag <= 0 or cfg.patch_size <= 0 or cfg.overlap < 0:
        raise SrmilError(f"need magnification > 0, patch size > 0, overlap >= 0; got {mag}×, "
                         f"{cfg.patch_size} px, overlap {cfg.overlap} px")
    if mag > mag0:
        raise SrmilError(f"target magnification {mag}× is above the scan's {mag0}× "
                         f"(mpp {slide.mpp:g}); srmil does not upsample", slide.path)
    ps0 = cfg.patch_size * mag0 // mag
    ov0 = cfg.overlap * mag0 // mag
    if ov0 >= ps0:
        raise SrmilError(f"overlap {cfg.overlap} px must be smaller than the patch size "
                         f"{cfg.patch_size} px")
    w, h = slide.dimensions
    return PatchGrid(mag0, mag, cfg.patch_size, ps0, cfg.overlap, ov0, ps0 - ov0, w, h)


def grid_coords(grid: PatchGrid) -> np.ndarray:
    """Every grid position whose patch lies inside the slide: (N, 2) int64 (x, y), row-major."""
    xs = np.arange(0, grid.width - grid.patch_size_level0 + 1, grid.step, dtype=np.int64)
    ys = np.arange(0, grid.height - grid.patch_size_level0 + 1, grid.step, dtype=np.int64)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)  # (N, 2)


def integral_image(mask: np.ndarray) -> np.ndarray:
    """Summed-area table of a bool mask: (h+1, w+1), ``[r, c]`` = pixels set in ``mask[:r, :c]``.

    int32 (int64 only past 2³¹ - 1 pixels), built in place: 4 bytes per mask pixel, where
    ``astype(int64).cumsum(0).cumsum(1)`` needed ~32 (744 MiB for a 102k-patch slide).
    """
    h, w = mask.shape
    dtype = np.int32 if h * w < 2**31 else np.int64
    integral = np.zeros((h + 1, w + 1), dtype=dtype)
    for r in range(0, h, 256):  # row prefix sums, 256 rows at a time (numpy buffers `out`)
        np.cumsum(mask[r:r + 256], axis=1, dtype=dtype, out=integral[r + 1:r + 257, 1:])
    for r in range(2, h + 1):  # then down the columns, one row at a time (no temporary)
        integral[r] += integral[r - 1]
    return integral


def tissue_fractions(coords: np.ndarray, size: int, mask: np.ndarray,
                     downsample: float) -> np.ndarray:
    """Share of tissue under each patch, from a mask at ``downsample`` level-0 px per px.

    Args:
        coords: (N, 2) level-0 top-left (x, y).
        size: patch side at level 0.
        mask: (h, w) bool.
        downsample: level-0 px per mask px.

    Returns:
        (N,) float64 in [0, 1].
    """
    if len(coords) == 0:
        return np.zeros(0)
    h, w = mask.shape
    integral = integral_image(mask)  # (h+1, w+1)
    c0 = np.clip(np.round(coords[:, 0] / downsample).astype(np.int64), 0, w)
    r0 = np.clip(np.round(coords[:, 1] / downsample).astype(np.int64), 0, h)
    c1 = np.clip(np.round((coords[:, 0] + size) / downsample).astype(np.int64), 0, w)
    r1 = np.clip(np.round((coords[:, 1] + size) / downsample).astype(np.int64), 0, h)
    c1, r1 = np.maximum(c1, np.minimum(c0 + 1, w)), np.maximum(r1, np.minimum(r0 + 1, h))
    area = (r1 - r0) * (c1 - c0)
    inside = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]  # (N,)
    return np.where(area > 0, inside / np.maximum(area, 1), 0.0)


def select_patches(slide: Slide, polygons: list[TissuePolygon],
                   cfg: PatchConfig = PatchConfig()) -> tuple[np.ndarray, np.ndarray, PatchGrid]:
    """Grid positions whose tissue fraction is at least ``cfg.min_tissue`` (and above 0).

    Returns:
        coords (N, 2) int64 level-0 top-left, their tissue fractions (N,), and the grid.
    """
    grid = patch_grid(slide, cfg)
    ds = max(1.0, grid.patch_size_level0 / max(1, cfg.mask_resolution))
    shape = (int(np.ceil(grid.height / ds)), int(np.ceil(grid.width / ds)))
    mask = rasterize(polygons, shape, ds)  # (h, w)
    coords = grid_coords(grid)
    frac = tissue_fractions(coords, grid.patch_size_level0, mask, ds)
    keep = (frac > 0) & (frac >= cfg.min_tissue)
    return coords[keep], frac[keep], grid


def write_patches(path: str | os.PathLike, coords: np.ndarray, grid: PatchGrid, name: str,
                  savetodir: str | os.PathLike, extra_attrs: dict[str, Any] | None = None,
                  overwrite: bool = False) -> Path:
    """Atomically write TRIDENT's patch file: ``coords`` (N, 2) int64 with its attrs."""
    attrs: dict[str, Any] = {
        "patch_size": grid.patch_size,
        "patch_size_level0": grid.patch_size_level0,
        "level0_magnification": grid.level0_magnification,
        "target_magnification": grid.target_magnification,
        "overlap": grid.overlap,
        "name": name,
        "savetodir": os.fspath(savetodir),
        "level0_width": grid.width,
        "level0_height": grid.height,
    }
    return write_trident_h5(path, coords, {**attrs, **(extra_attrs or {})}, overwrite=overwrite)


def write_trident_h5(path: str | os.PathLike, coords: np.ndarray, coords_attrs: dict[str, Any],
                     features: np.ndarray | None = None,
                     features_attrs: dict[str, Any] | None = None,
                     overwrite: bool = False) -> Path:
    """Atomically write a TRIDENT h5: ``coords`` (N, 2) int64 with its attrs and, for a feature
    file, ``features`` (N, D) with its attrs. ``None`` attrs are stored as ``"None"`` (TRIDENT).

    The one writer of patch files (here), feature files (``srmil.features.extract``) and
    bags (``srmil.bags.writer``).
    """
    with atomic_path(path, overwrite) as tmp:
        with h5py.File(tmp, "w") as h5:
            c = h5.create_dataset("coords", data=np.asarray(coords, dtype=np.int64).reshape(-1, 2))
            for k, v in coords_attrs.items():
                c.attrs[k] = "None" if v is None else v
            if features is not None:
                f = h5.create_dataset("features", data=features)
                for k, v in (features_attrs or {}).items():
                    f.attrs[k] = "None" if v is None else v
    return Path(path)


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def read_patches(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Coordinates (N, 2) int64 (level-0 top-left) and the attrs of ``coords`` (plain types).

    Reads TRIDENT's ``patches/<slide>_patches.h5`` and any h5 with a ``coords`` dataset.

    Raises:
        SrmilError: missing or unreadable file, no ``coords`` of shape (N, 2).
    """
    p = Path(path)
    if not p.is_file():
        raise SrmilError("no such patch file", p)
    try:
        with open_h5(p) as h5:
            if "coords" not in h5 or not isinstance(h5["coords"], h5py.Dataset):
                raise SrmilError("no 'coords' dataset", p)
            coords = h5["coords"][()]
            attrs = {k: _plain(v) for k, v in h5["coords"].attrs.items()}
    except OSError as exc:
        raise SrmilError(f"cannot read as HDF5 (truncated or corrupt): {exc}", p) from None
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise SrmilError(f"'coords' has shape {coords.shape}, expected (N, 2)", p)
    return coords.astype(np.int64), attrs


def patch_level(slide: Slide, patch_size_level0: int, patch_size: int) -> tuple[int, int]:
    """Pyramid level to read a patch from, and the patch side at that level (px).

    Needs only ``slide.level_downsamples``: any object of the Slide contract serves.
    """
    level = best_level(slide.level_downsamples, patch_size_level0 / patch_size)
    return level, max(1, round(patch_size_level0 / slide.level_downsamples[level]))


def read_patch(slide: Slide, xy: tuple[int, int], patch_size_level0: int,
               patch_size: int) -> np.ndarray:
    """One patch: (patch_size, patch_size, 3) uint8 RGB.

    Read from the deepest pyramid level not coarser than needed, then resized (antialiased)
    to ``patch_size``: a 20× patch of a 40× scan comes from the 2× level when there is one.
    """
    level, side = patch_level(slide, patch_size_level0, patch_size)
    rgb = slide.read_region((int(xy[0]), int(xy[1])), level, (side, side))  # (side, side, 3)
    if side == patch_size:
        return rgb
    from PIL import Image

    img = Image.fromarray(rgb).resize((patch_size, patch_size), Image.Resampling.BILINEAR)
    return np.asarray(img)
