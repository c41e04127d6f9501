"""Write feature bags in TRIDENT's layout and attrs, so TRIDENT-based tools read ours."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from srmil.slides.patching import trident_dir, write_trident_h5  # TRIDENT's layout, h5

__all__ = ["trident_dir", "write_trident_bag"]


def write_trident_bag(
    path: str | os.PathLike,
    features: np.ndarray,
    coords: np.ndarray,
    *,
    patch_size: int,
    level0_magnification: int,
    target_magnification: int,
    overlap: int = 0,
    encoder: str | None = None,
    extra_attrs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Atomically write ``features`` (N, D) and ``coords`` (N, 2) as a TRIDENT feature h5.

    Attrs on ``coords``: ``patch_size``, ``patch_size_level0`` (= patch_size · level-0 mag //
    target mag), ``level0_magnification``, ``target_magnification``, ``overlap``, ``name``;
    attrs on ``features``: ``name``, ``encoder``.
    """
    dest = Path(path)
    name = dest.name[: -len(".h5")] if dest.name.endswith(".h5") else dest.stem
    attrs = {"patch_size": patch_size,
             "patch_size_level0": patch_size * level0_magnification // target_magnification,
             "level0_magnification": level0_magnification,
             "target_magnification": target_magnification, "overlap": overlap, "name": name,
             **(extra_attrs or {})}
    return write_trident_h5(dest, coords, attrs, features, {"name": name, "encoder": encoder},
                            overwrite=overwrite)
