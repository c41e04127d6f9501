"""Atomic writes: a file that exists is complete.

Every output goes to a temporary file in the destination folder, is flushed to the disk
(``fsync``) and moved into place (``os.replace``, or a hard link where nothing may be
replaced), then the folder is synced too; so an interrupted job or a power loss never leaves a
half-written or empty file under the final name, and two writers never silently replace each
other's output. A write that fails (disk full, permission, I/O error) is one
:class:`~srmil.errors.WriteError` naming the file; what was there before stays as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from srmil.errors import SrmilError, WriteError, exc_line


def _new_temp(dest: Path) -> Path:
    """An empty, new file beside ``dest``, created with mode 0o666 so the umask and default ACLs
    of the folder apply as to any other file (``mkstemp`` would make it 0600)."""
    for _ in range(100):
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise SrmilError("cannot create a temporary file beside it", dest)


def _publish(tmp: Path, dest: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``dest``; without ``overwrite`` never replace a file that
    appeared meanwhile (another process): a hard link fails if ``dest`` exists."""
    if overwrite:
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise SrmilError("was written by another process meanwhile; refusing to overwrite it",
                         dest) from None
    except OSError:  # a file system without hard links: check, then rename
        if dest.exists():
            raise SrmilError("already exists; refusing to overwrite it", dest) from None
        os.replace(tmp, dest)


def _fsync(path: Path) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable; a no-op where folders cannot be synced."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and Windows) refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def write_failure(dest: str | os.PathLike, exc: BaseException) -> WriteError:
    """The one-line error of a failed write of ``dest``: its cause without the temp name."""
    cause = getattr(exc, "strerror", None) or exc_line(exc)
    return WriteError(f"cannot write it: {cause}", dest)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is moved to ``path``.

    Args:
        path: final destination.
        overwrite: replace an existing file; otherwise an existing ``path`` is refused, also
            when another process creates it while this one writes.

    Raises:
        SrmilError: ``path`` exists and ``overwrite`` is false.
        WriteError: the write failed with an ``OSError`` (disk full, permission, I/O error);
            an existing ``path`` is left as it was.
    """
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise SrmilError("already exists; refusing to overwrite it", dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _new_temp(dest)
    except OSError as exc:
        raise write_failure(dest, exc) from None
    try:
        try:
            yield tmp_path
            _fsync(tmp_path)  # the data is on the disk before the name points at it
            _publish(tmp_path, dest, overwrite)
        except OSError as exc:
            raise write_failure(dest, exc) from None
        _fsync_dir(dest.parent)
    finally:
        try:
            tmp_path.unlink(missing_ok=True)
        except OSError:  # a failing disk: the hidden temp file is all that is left behind
            pass


def open_h5(path: str | os.PathLike) -> Any:
    """An HDF5 file opened for reading without HDF5's own file locking.

    Every file srmil reads is complete once it exists under its name (written to a temporary
    file and renamed), so readers need no lock; and HDF5's ``flock``-based locking fails on
    some NFS and Lustre mounts ("unable to lock file, errno = 37"), or refuses to read a file
    another process still has open. h5py's ``locking=False`` switches it off for this file
    only (setting ``HDF5_USE_FILE_LOCKING`` after h5py is imported has no effect).
    """
    import h5py

    return h5py.File(path, "r", locking=False)


def write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, overwrite: bool = False) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", overwrite)


def write_csv(path: str | os.PathLike, df: pd.DataFrame, overwrite: bool = False) -> Path:
    """Atomically write a DataFrame as CSV without its index."""
    with atomic_path(path, overwrite) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def write_image(path: str | os.PathLike, rgb: np.ndarray, overwrite: bool = False,
                quality: int = 90) -> Path:
    """Atomically write an (h, w, 3) uint8 image; the format follows the suffix (``.png``,
    ``.jpg`` with ``quality``)."""
    from PIL import Image

    dest = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(dest.suffix.lower())
    if fmt is None:
        raise ValueError(f"write_image: unknown image suffix {dest.suffix!r}")
    extra = {"quality": quality} if fmt == "JPEG" else {}
    with atomic_path(dest, overwrite) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb)).save(tmp, format=fmt, **extra)
    return dest
