"""Write feature bags in TRIDENT's layout and attrs, so TRIDENT-based tools read ours."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from srmil.slides.patching import trident_dir  # TRIDENT's job sub-folder name
from srmil.storage import atomic_path

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
    with atomic_path(dest, overwrite) as tmp:
        with h5py.File(tmp, "w") as h5:
            c = h5.create_dataset("coords", data=np.asarray(coords, dtype=np.int64))
            c.attrs["patch_size"] = patch_size
            c.attrs["patch_size_level0"] = patch_size * level0_magnification // target_magnification
            c.attrs["level0_magnification"] = level0_magnification
            c.attrs["target_magnification"] = target_magnification
            c.attrs["overlap"] = overlap
            c.attrs["name"] = name
            for k, v in (extra_attrs or {}).items():
                c.attrs[k] = "None" if v is None else v
            f = h5.create_dataset("features", data=features)
            f.attrs["name"] = name
            f.attrs["encoder"] = encoder or "None"
    return dest
