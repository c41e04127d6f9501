"""Atomic writes: a file that exists is complete.

Every output goes to a temporary file in the destination folder and is moved into place
(``os.replace``, or a hard link where nothing may be replaced), so an interrupted job never
leaves a half-written file under the final name, and two writers never silently replace each
other's output.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from srmil.errors import SrmilError


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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is moved to ``path``.

    Args:
        path: final destination.
        overwrite: replace an existing file; otherwise an existing ``path`` is refused, also
            when another process creates it while this one writes.

    Raises:
        SrmilError: ``path`` exists and ``overwrite`` is false.
    """
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise SrmilError("already exists; refusing to overwrite it", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_temp(dest)
    try:
        yield tmp_path
        _publish(tmp_path, dest, overwrite)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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
