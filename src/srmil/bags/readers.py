"""Bag readers, one registry, chosen by file content (never by the file's name).

Readers, tried in this order:

- ``stamp``: STAMP h5, ``feats`` (N, D) and ``coords`` in micrometres (root attrs ``unit``,
  ``tile_size_um``).
- ``clam_h5``: CLAM h5, ``features`` + ``coords`` with CLAM's attrs on ``coords``
  (``patch_level`` / ``downsample``); level-0 step = ``patch_size · downsample``.
- ``trident``: TRIDENT h5 (and any h5 with ``features`` + ``coords``); attrs on ``coords``:
  ``patch_size_level0``, ``patch_size``, ``overlap``, ``level0_magnification``,
  ``target_magnification``.
- ``clam_pt``: a torch file holding the (N, D) tensor (CLAM ``pt_files``), loaded with
  ``weights_only=True``; coordinates come from the matching ``h5_files/<id>.h5``,
  ``patches/<id>.h5`` or ``<id>.h5`` beside it when one exists.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np
import torch

from srmil.bags.bag import FeatureBag
from srmil.errors import BagError, exc_line
from srmil.registry import Registry
from srmil.storage import open_h5

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class BagReader(Protocol):
    name: str

    def can_read(self, path: Path) -> bool: ...

    def read(self, path: Path) -> FeatureBag: ...


BAG_READERS: Registry[type] = Registry("bag reader")


def _is_hdf5(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def _open_h5(path: Path) -> h5py.File:
    try:
        return open_h5(path)
    except OSError as exc:
        raise BagError(f"cannot open as HDF5 (truncated or corrupt): {exc}", path) from None


def _attr(attrs: Any, key: str) -> Any:
    """An h5 attribute as a plain Python value; TRIDENT stores None as the string 'None'."""
    if key not in attrs:
        return None
    v = attrs[key]
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.ndarray):
        v = v.tolist()
    elif isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, str) and v in ("None", ""):
        return None
    return v


def _number(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, list):
        v = v[0] if v else None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) and f > 0 else None


def _read_array(h5: h5py.File, key: str, path: Path) -> np.ndarray:
    try:
        return h5[key][()]
    except (OSError, KeyError, RuntimeError) as exc:
        raise BagError(f"cannot read dataset {key!r} (truncated file?): {exc}", path) from None


def _checked(
    features: np.ndarray, coords: np.ndarray | None, path: Path, fkey: str = "features"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Shape and dtype checks shared by every reader (one-line errors naming the file)."""
    if features.ndim != 2:
        raise BagError(f"{fkey!r} has shape {features.shape}, expected (N, D)", path)
    if not np.issubdtype(features.dtype, np.floating):
        raise BagError(f"{fkey!r} has dtype {features.dtype}, expected float16/float32", path)
    if features.dtype not in (np.float16, np.float32):
        features = features.astype(np.float32)
    if coords is not None:
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise BagError(f"'coords' has shape {coords.shape}, expected (N, 2)", path)
        if coords.shape[0] != features.shape[0]:
            raise BagError(
                f"{fkey!r} has {features.shape[0]} rows but 'coords' has {coords.shape[0]}", path
            )
        if not np.issubdtype(coords.dtype, np.number):
            raise BagError(f"'coords' has dtype {coords.dtype}, expected numbers", path)
        if np.issubdtype(coords.dtype, np.integer):
            coords = coords.astype(np.int64)
        else:
            coords = coords.astype(np.float64)
            if not np.isfinite(coords).all():
                raise BagError("'coords' contains NaN/Inf", path)
    return features, coords


def _slide_id(path: Path) -> str:
    return path.name[: -len(".h5")] if path.name.endswith(".h5") else path.stem


def _trident_step(a: dict[str, Any]) -> tuple[float | None, float | None]:
    """(patch size at level 0, step at level 0) from TRIDENT's attrs on ``coords``."""
    ps = _number(a.get("patch_size"))
    ps0 = _number(a.get("patch_size_level0"))
    mag0 = _number(a.get("level0_magnification"))
    magt = _number(a.get("target_magnification"))
    if ps0 is None and ps is not None and mag0 is not None and magt is not None:
        ps0 = ps * mag0 // magt
    if ps0 is None:
        return None, None
    overlap = _number(a.get("overlap")) or 0.0
    scale = ps0 / ps if ps else 1.0
    return ps0, ps0 - overlap * scale


def _clam_step(a: dict[str, Any]) -> tuple[float | None, float | None]:
    """(patch size at level 0, step) from CLAM's ``patch_size`` × ``downsample``."""
    ps = _number(a.get("patch_size"))
    if ps is None:
        return None, None
    ds = _number(a.get("downsample"))
    if ds is None:
        ds = 1.0 if a.get("patch_level") in (0, None) else None
    if ds is None:
        return None, None
    return ps * ds, ps * ds  # CLAM does not store its step_size; coordinates will tell


def _coords_attrs(h5: h5py.File) -> dict[str, Any]:
    if "coords" not in h5:
        return {}
    return {k: _attr(h5["coords"].attrs, k) for k in h5["coords"].attrs}


@BAG_READERS.register("stamp")
class StampReader:
    """STAMP feature h5: ``feats`` float16 (N, D), ``coords`` (N, 2) in micrometres."""

    name = "stamp"

    def can_read(self, path: Path) -> bool:
        if not _is_hdf5(path):
            return False
        try:
            with open_h5(path) as h5:
                return "feats" in h5 and "features" not in h5
        except OSError:
            return False

    def read(self, path: Path) -> FeatureBag:
        with _open_h5(path) as h5:
            feats = _read_array(h5, "feats", path)
            coords = _read_array(h5, "coords", path) if "coords" in h5 else None
            root = {k: _attr(h5.attrs, k) for k in h5.attrs}
        if coords is None:
            raise BagError("'feats' present but no 'coords' dataset", path)
        feats, coords = _checked(feats, coords, path, "feats")
        unit = root.get("unit")
        tile_um = _number(root.get("tile_size_um"))
        if unit == "um":
            coords = coords.astype(np.float64)
            step = tile_um
        else:
            step = None  # older STAMP files: unit unknown, the coordinates alone tell the step
        return FeatureBag(
            features=feats, coords=coords, slide_id=_slide_id(path), source=path,
            reader=self.name, patch_size_level0=step, step=step,
            coord_unit="um" if unit == "um" else "px", attrs=root,
        )


@BAG_READERS.register("clam_h5")
class ClamH5Reader:
    """CLAM ``h5_files/<id>.h5``: ``features``, ``coords`` with attrs ``patch_level``,
    ``downsample`` (step = ``patch_size · downsample``; CLAM grids are per tissue contour)."""

    name = "clam_h5"

    def can_read(self, path: Path) -> bool:
        if not _is_hdf5(path):
            return False
        try:
            with open_h5(path) as h5:
                a = h5["coords"].attrs if "coords" in h5 else {}
                return "features" in h5 and ("patch_level" in a or "downsample" in a)
        except OSError:
            return False

    def read(self, path: Path) -> FeatureBag:
        return _read_features_h5(path, self.name, _clam_step)


@BAG_READERS.register("trident")
class TridentReader:
    """TRIDENT ``features_<encoder>/<slide>.h5`` (and any h5 with ``features`` + ``coords``)."""

    name = "trident"

    def can_read(self, path: Path) -> bool:
        if not _is_hdf5(path):
            return False
        try:
            with open_h5(path) as h5:
                return "features" in h5
        except OSError:
            return False

    def read(self, path: Path) -> FeatureBag:
        return _read_features_h5(path, self.name, _trident_step)


def _read_features_h5(path: Path, reader: str, step_fn: Any) -> FeatureBag:
    with _open_h5(path) as h5:
        feats = _read_array(h5, "features", path)
        if "coords" not in h5:
            raise BagError("'features' present but no 'coords' dataset", path)
        coords = _read_array(h5, "coords", path)
        attrs = _coords_attrs(h5)
    feats, coords = _checked(feats, coords, path)
    ps0, step = step_fn(attrs)
    return FeatureBag(
        features=feats, coords=coords, slide_id=_slide_id(path), source=path, reader=reader,
        patch_size_level0=ps0, step=step, coord_unit="px", attrs=attrs,
    )


def _matching_coords_h5(path: Path) -> Path | None:
    """CLAM keeps coordinates beside ``pt_files/``: ``h5_files/<id>.h5`` or ``patches/<id>.h5``."""
    sid = path.stem
    for cand in (
        path.parent.parent / "h5_files" / f"{sid}.h5",
        path.parent.parent / "patches" / f"{sid}.h5",
        path.parent / f"{sid}.h5",
    ):
        if cand.is_file():
            return cand
    return None


@BAG_READERS.register("clam_pt")
class ClamPtReader:
    """CLAM ``pt_files/<id>.pt``: the (N, D) tensor only, loaded with ``weights_only=True``."""

    name = "clam_pt"

    def can_read(self, path: Path) -> bool:
        return zipfile.is_zipfile(path)

    def read(self, path: Path) -> FeatureBag:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure is a bad file, reported in one line
            msg = exc_line(exc)
            raise BagError(f"cannot load as a torch tensor file: {msg}", path) from None
        if not isinstance(obj, torch.Tensor):
            raise BagError(f"holds a {type(obj).__name__}, expected a (N, D) tensor", path)
        feats = obj.detach().float().numpy() if obj.dtype == torch.bfloat16 else obj.numpy()
        coords = None
        attrs: dict[str, Any] = {}
        ps0 = step = None
        h5_path = _matching_coords_h5(path)
        if h5_path is not None:
            with _open_h5(h5_path) as h5:
                if "coords" in h5:
                    coords = _read_array(h5, "coords", h5_path)
                    attrs = _coords_attrs(h5)
            attrs["coords_file"] = os.fspath(h5_path)
            ps0, step = _clam_step(attrs)
        feats, coords = _checked(feats, coords, path)
        return FeatureBag(
            features=feats, coords=coords, slide_id=path.stem, source=path, reader=self.name,
            patch_size_level0=ps0, step=step, coord_unit="px", attrs=attrs,
        )


def read_bag(path: str | os.PathLike) -> FeatureBag:
    """Read one feature bag with the first reader that recognises its content.

    Args:
        path: an h5 (TRIDENT, CLAM, STAMP) or torch (CLAM ``pt_files``) file.

    Returns:
        The bag; shape problems raise, content problems are in ``bag.problems()``.

    Raises:
        BagError: missing, unreadable or malformed file (one line naming it).
    """
    p = Path(path)
    if not p.exists():
        raise BagError("no such file", p)
    if not p.is_file():
        raise BagError("not a file", p)
    if not os.access(p, os.R_OK):
        raise BagError("not readable (permission denied)", p)
    for _name, cls in BAG_READERS.items():
        reader = cls()
        if reader.can_read(p):
            return reader.read(p)
    if _is_hdf5(p):
        with _open_h5(p) as h5:
            found = ", ".join(sorted(h5.keys())) or "nothing"
        raise BagError(f"no 'features' (or STAMP 'feats') dataset; found: {found}", p)
    raise BagError("not an HDF5 or torch file (truncated, corrupt or another format)", p)


def has_coords(path: str | os.PathLike) -> bool:
    """Whether a bag file carries (or is paired with) coordinates, without reading features."""
    p = Path(path)
    if _is_hdf5(p):
        try:
            with open_h5(p) as h5:
                return "coords" in h5
        except OSError:
            return False
    return _matching_coords_h5(p) is not None


BAG_SUFFIXES = (".h5", ".pt")


def find_bags(directory: str | os.PathLike) -> dict[str, Path]:
    """Map slide_id → bag path for the ``*.h5`` / ``*.pt`` files directly in ``directory``.

    A single bag file is accepted too. TRIDENT ``*_patches.h5`` (coordinates only) are not bags.

    Raises:
        BagError: the directory is missing, holds no bags, or two files claim one slide_id.
    """
    d = Path(directory)
    if d.is_file():
        return {_slide_id(d) if d.suffix == ".h5" else d.stem: d}
    if not d.is_dir():
        raise BagError("no such directory", d)
    out: dict[str, Path] = {}
    for p in sorted(d.iterdir()):
        if p.suffix not in BAG_SUFFIXES or not p.is_file() or p.name.startswith("."):
            continue
        if p.name.endswith("_patches.h5"):
            continue
        sid = _slide_id(p) if p.suffix == ".h5" else p.stem
        if sid in out:
            raise BagError(f"two bags for slide {sid!r}: {out[sid].name} and {p.name}", d)
        out[sid] = p
    if not out:
        raise BagError("no feature bags (*.h5, *.pt) in this directory", d)
    return out
