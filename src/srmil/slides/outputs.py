"""The extraction job's layout and the checks that decide whether an output is kept.

:class:`JobLayout` owns every path of a job directory (TRIDENT's layout); ``check_*`` say why
an existing output is not valid for the current settings (``None``: valid, keep it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srmil.config import PatchConfig
from srmil.errors import SrmilError, first_line
from srmil.slides.patching import (
    TRIDENT_COORDS_ATTRS,
    PatchGrid,
    read_patches,
    trident_dir,
)
from srmil.slides.tissue import read_geojson
from srmil.storage import open_h5


@dataclass(frozen=True)
class JobLayout:
    """Paths of a job directory (TRIDENT's names)."""

    root: Path
    patch: PatchConfig = PatchConfig()

    @property
    def mag_dir(self) -> Path:
        p = self.patch
        return self.root / trident_dir(p.magnification, p.patch_size, p.overlap)

    def geojson(self, sid: str) -> Path:
        return self.root / "contours_geojson" / f"{sid}.geojson"

    def thumbnail(self, sid: str) -> Path:
        return self.root / "thumbnails" / f"{sid}.jpg"

    def contours(self, sid: str) -> Path:
        return self.root / "contours" / f"{sid}.jpg"

    def patches(self, sid: str) -> Path:
        return self.mag_dir / "patches" / f"{sid}_patches.h5"

    def visualization(self, sid: str) -> Path:
        return self.mag_dir / "visualization" / f"{sid}.jpg"

    def features(self, sid: str, encoder: str) -> Path:
        return self.mag_dir / f"features_{encoder}" / f"{sid}.h5"

    def status(self, stage: str, encoder: str | None = None) -> Path:
        if stage == "segment":
            return self.root / "status_segment.csv"
        if stage == "patch":
            return self.mag_dir / "status_patch.csv"
        return self.mag_dir / f"status_features_{encoder}.csv"


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def check_geojson(path: Path) -> str | None:
    """None when ``path`` is a readable GeoJSON with at least one polygon, else why not."""
    if not path.is_file():
        return "missing"
    try:
        n = len(read_geojson(path))
    except SrmilError as exc:
        return exc.problem
    return None if n else "no polygon"


def check_patches(path: Path, cfg: PatchConfig, contours_sha1: str | None = None,
                  grid: PatchGrid | None = None) -> str | None:
    """None when ``path`` is a complete patch file for ``cfg`` and these contours, else why.

    With ``grid`` (``patch_grid`` of the slide as opened now), the file's scan magnification and
    level-0 patch size must be the grid's: an mpp override that changes them makes it stale.
    """
    if not path.is_file():
        return "missing"
    try:
        coords, attrs = read_patches(path)
    except SrmilError as exc:
        return exc.problem
    missing = [k for k in TRIDENT_COORDS_ATTRS if k not in attrs]
    if missing:
        return f"attrs missing: {', '.join(missing)}"
    want = {"patch_size": cfg.patch_size, "target_magnification": cfg.magnification,
            "overlap": cfg.overlap}
    for k, v in want.items():
        if attrs[k] != v:
            return f"made with {k}={attrs[k]}, not {v}"
    if grid is not None:
        for k in ("level0_magnification", "patch_size_level0"):
            if attrs[k] != getattr(grid, k):
                return f"made with {k}={attrs[k]}, the slide now gives {getattr(grid, k)}"
    if "min_tissue" in attrs and abs(float(attrs["min_tissue"]) - cfg.min_tissue) > 1e-9:
        return f"made with min_tissue={attrs['min_tissue']}, not {cfg.min_tissue}"
    if contours_sha1 and attrs.get("contours_sha1") not in (None, "None", contours_sha1):
        return "made from other tissue contours"
    return None


_PRECISION_DTYPES = {"fp32": np.dtype(np.float32), "fp16": np.dtype(np.float16)}


def _attr_text(v: Any) -> Any:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def check_features(path: Path, patches: Path, encoder: str | None = None,
                   precision: str | None = None,
                   weights_sha256: str | None = None) -> str | None:
    """None when ``path`` holds features for exactly the coordinates of ``patches``, made as
    asked, else why not.

    ``encoder`` is compared with the ``encoder`` attr of ``features`` when the file has one.
    ``precision`` (storage dtype) and ``weights_sha256`` are compared only on files srmil wrote
    (they have a ``weights_sha256`` attr): a TRIDENT-made file is kept as it is. ``None``: not
    compared.
    """
    if not path.is_file():
        return "missing"
    try:
        with open_h5(path) as h5:
            if "features" not in h5 or "coords" not in h5:
                return "no 'features' or 'coords' dataset"
            fshape, fdtype = h5["features"].shape, h5["features"].dtype
            fattrs = {k: _attr_text(v) for k, v in h5["features"].attrs.items()}
            coords = h5["coords"][()]
            ps0 = h5["coords"].attrs.get("patch_size_level0")
    except OSError as exc:
        return f"cannot read as HDF5 (truncated or corrupt): {first_line(str(exc))}"
    if len(fshape) != 2 or fshape[0] != len(coords):
        return f"'features' has shape {fshape} for {len(coords)} coords"
    if encoder is not None and fattrs.get("encoder", encoder) != encoder:
        return f"made with encoder {fattrs['encoder']!r}, not {encoder!r}"
    if "weights_sha256" in fattrs:  # srmil's own file
        want_dtype = _PRECISION_DTYPES.get(precision or "")
        if want_dtype is not None and fdtype != want_dtype:
            return f"stored as {fdtype}, not {precision}"
        if weights_sha256 is not None and fattrs["weights_sha256"] != weights_sha256:
            return "made with another weights file"
    try:
        want, pattrs = read_patches(patches)
    except SrmilError:
        return None  # no patch file to compare with: trust the features file
    if coords.shape != want.shape or not np.array_equal(coords, want):
        return "made from other patch coordinates"
    want_ps0 = pattrs.get("patch_size_level0")
    if ps0 is not None and want_ps0 is not None and int(ps0) != int(want_ps0):
        return f"made from patches of level-0 size {int(ps0)}, not {int(want_ps0)}"
    return None
