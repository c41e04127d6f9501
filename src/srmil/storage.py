"""Atomic writes: a file that exists is complete.

Every output goes to a temporary file in the destination folder and is moved into place with
``os.replace``, so an interrupted job never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from srmil.errors import SrmilError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    Args:
        path: final destination.
        overwrite: replace an existing file; otherwise an existing ``path`` is refused.

    Raises:
        SrmilError: ``path`` exists and ``overwrite`` is false.
    """
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise SrmilError("already exists; refusing to overwrite it", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp_path, dest)
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
