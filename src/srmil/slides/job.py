"""Job machinery for a cohort of slides: shards, per-slide claims, and the status table.

Many processes (SLURM array tasks, several machines) may work on one job directory with no
coordination beyond the directory itself:

* ``select_shard(ids, "i/n")`` splits the sorted slide ids round-robin into ``n`` disjoint
  shards; ``i`` is **0-based** (``0/4`` … ``3/4``), as ``$SLURM_ARRAY_TASK_ID`` with
  ``--array=0-3``.
* ``Claim(output, mode=...)`` (:mod:`srmil.locks`) takes an exclusive claim on a hidden
  ``.<output>.lock`` beside an output before it is computed: an ``flock`` the kernel drops when
  its process dies, or, on network file systems, an ``O_EXCL`` lock file with an owner and a
  heartbeat whose claim expires when its job is dead. A process that finds the output claimed
  skips it. After claiming, the caller re-checks the output (another process may have just
  finished it). The output itself is written to a temporary file and renamed, so a reader
  never sees half a file.
* ``StatusTable`` is a CSV (``slide_id,status,reason,seconds``; status ``done`` | ``skipped``
  | ``failed``) updated row by row: read, merge, atomic rewrite, under the same kind of lock.

``flock`` works on local file systems and on NFSv4 (Linux maps it to POSIX locks there); the
``auto`` lock mode uses lock files on NFS, Lustre, GPFS & co. (:mod:`srmil.locks`).
"""

from __future__ import annotations

import csv
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from srmil.errors import SrmilError
from srmil.locks import Claim
from srmil.storage import atomic_path

__all__ = ["Claim", "StatusRow", "StatusTable", "ensure_writable", "parse_shard",
           "resolve_slides", "select_shard"]

STATUS_COLUMNS = ("slide_id", "status", "reason", "seconds")
STATUSES = ("done", "skipped", "failed")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 ≤ i < n.

    Raises:
        SrmilError: malformed, or i outside [0, n).
    """
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise SrmilError(f"--shard expects i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise SrmilError(f"--shard {text}: need 0 <= i < n (shards are 0-based: 0/{max(n, 1)} "
                         f"… {max(n, 1) - 1}/{max(n, 1)})")
    return i, n


def select_shard(ids: list[str], shard: str | None) -> list[str]:
    """The slide ids of shard ``"i/n"`` (all of them when ``shard`` is None).

    Shards are disjoint, cover every id, differ in size by at most one, and depend only on the
    set of ids (sorted, then taken round-robin), so every process computes the same split.
    """
    ordered = sorted(ids)
    if shard is None:
        return ordered
    i, n = parse_shard(shard)
    return ordered[i::n]


@dataclass(frozen=True)
class StatusRow:
    """One slide's outcome in one stage."""

    slide_id: str
    status: str  # done | skipped | failed
    reason: str = ""
    seconds: float = 0.0


class StatusTable:
    """Per-slide status CSV (``slide_id,status,reason,seconds``), safe to share between processes.

    ``record`` replaces the slide's row, except that a ``skipped`` row (the output exists)
    never hides a ``done`` row, and a *weak* row (e.g. "busy in another process") is only
    written when the slide has no row yet: the table keeps who did the work and how long it took.
    """

    def __init__(self, path: str | os.PathLike, lock: str = "auto") -> None:
        self.path = Path(path)
        self.lock = lock

    def read(self) -> dict[str, StatusRow]:
        """{slide_id: row}; empty when the table does not exist yet."""
        if not self.path.is_file():
            return {}
        rows: dict[str, StatusRow] = {}
        with open(self.path, newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                try:
                    secs = float(r.get("seconds") or 0.0)
                except ValueError:
                    secs = 0.0
                rows[r["slide_id"]] = StatusRow(r["slide_id"], r["status"], r.get("reason") or "",
                                                secs)
        return rows

    def record(self, row: StatusRow, weak: bool = False) -> None:
        """Merge ``row`` into the table (atomic rewrite under a lock)."""
        if row.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {row.status!r}")
        with Claim(self.path, blocking=True, mode=self.lock):
            rows = self.read()
            old = rows.get(row.slide_id)
            if old is not None and (weak or (row.status == "skipped" and old.status == "done")):
                return
            rows[row.slide_id] = row
            with atomic_path(self.path, overwrite=True) as tmp:
                with open(tmp, "w", newline="", encoding="utf-8") as fh:
                    w = csv.writer(fh)
                    w.writerow(STATUS_COLUMNS)
                    for sid in sorted(rows):
                        r = rows[sid]
                        reason = " ".join(r.reason.split())  # one line
                        w.writerow([r.slide_id, r.status, reason, f"{r.seconds:.2f}"])


def ensure_writable(directory: str | os.PathLike) -> Path:
    """Create ``directory`` if needed and check a file can be written in it.

    Raises:
        SrmilError: one line when it cannot be created or written.
    """
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        # a unique probe name: threads of one process share pid and host name
        fd, probe = tempfile.mkstemp(prefix=".write_probe.", dir=d)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise SrmilError(f"output directory is not writable: {why}", d) from None
    return d


def resolve_slides(source: str | os.PathLike, mpp_csv: str | os.PathLike | None = None
                   ) -> tuple[dict[str, Path], dict[str, float]]:
    """The slides of a job: a directory of slide files, or a slide list.

    Args:
        source: a directory (every slide file in it), a text file with one path per line, or
            a CSV with a ``path`` (or ``wsi``) column and an optional ``mpp`` column.
        mpp_csv: ``slide_id,mpp`` overrides of the pixel size (µm/px), applied last.

    Returns:
        ({slide_id: path}, {slide_id: mpp override}).

    Raises:
        SrmilError: no such directory or list, or it names no slide.
    """
    from srmil.slides.readers import (
        SLIDE_EXTENSIONS,
        find_slides,
        read_mpp_overrides,
        read_slide_list,
    )

    src = Path(source)
    mpp: dict[str, float] = {}
    if src.is_dir():
        slides = find_slides(src)
        if not slides:
            raise SrmilError(f"no slide files ({' '.join(SLIDE_EXTENSIONS)})", src)
    elif src.is_file():
        slides, mpp = read_slide_list(src)
        if not slides:
            raise SrmilError("the slide list names no slide", src)
    else:
        raise SrmilError("no such slide directory or slide list", src)
    if mpp_csv:
        mpp.update(read_mpp_overrides(mpp_csv))
    return slides, mpp
