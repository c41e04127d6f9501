"""Exclusive claims on shared outputs, for processes on one machine or many.

A :class:`Claim` on an output ``dir/name`` is the hidden lock file ``dir/.name.lock``; the
holder writes ``pid@host`` and a timestamp into it. Two mechanisms (``mode``):

* ``flock``: an exclusive ``flock`` on the lock file. The kernel drops it when the process dies,
  so a crash never leaves a stale claim. Reliable on local disks and NFSv4; on some NFS and
  Lustre set-ups ``flock`` fails (``ENOLCK``) or, worse, locks only per host (Lustre
  ``-o localflock``), so two machines would both "hold" a claim.
* ``file``: the lock file is created with ``O_CREAT | O_EXCL`` (atomic on NFSv3+ and Lustre)
  and holds JSON ``{pid, host, token, since}``; a thread of the holder touches it every
  ``heartbeat_s``. A claim is stale, and is broken by the next claimer, when its holder ran on
  this host and is gone (immediately), or when it has not been touched for ``stale_s`` (a dead
  job elsewhere: its claim expires). Breaking is itself guarded by an ``O_EXCL``
  ``.name.lock.break`` file, so two claimers never both break and re-take one claim. Clocks of
  the machines must agree to well within ``stale_s``.
* ``auto`` (default): ``file`` on a network file system (``/proc/self/mounts`` says nfs,
  lustre, gpfs, beegfs, cifs, ceph, …), else ``flock``, falling back to ``file`` where
  ``flock`` fails with anything but contention.

The environment variable ``SRMIL_LOCK`` (``flock`` | ``file``) overrides ``auto``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path

LOCK_MODES = ("auto", "flock", "file")
HEARTBEAT_S = 10.0  # the holder touches its lock file this often (file mode)
STALE_S = 120.0  # an untouched lock file is a dead holder's after this long (file mode)

# file systems where flock is per host or may fail: lock files instead
NETWORK_FS = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs", "ceph", "fuse.ceph",
    "glusterfs", "fuse.glusterfs", "panfs", "wekafs", "fuse.sshfs", "9p", "afs", "orangefs",
})

_CONTENTION = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
_FLOCK_BROKEN: set[int] = set()  # st_dev of folders where flock failed: file mode there


def lock_path(output: str | os.PathLike) -> Path:
    """The lock file of ``output``: ``dir/.name.lock``."""
    p = Path(output)
    return p.with_name(f".{p.name}.lock")


def filesystem_type(path: str | os.PathLike) -> str | None:
    """The type of the file system holding ``path`` (``ext4``, ``nfs4``, ``lustre``…), from
    ``/proc/self/mounts``; ``None`` where that cannot be read (not Linux)."""
    try:
        mounts = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, kind = "", None
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best):
            best, kind = mnt, parts[2]
    return kind


def resolve_lock_mode(mode: str, directory: str | os.PathLike) -> str:
    """``flock`` or ``file`` for claims in ``directory`` (see the module docstring).

    Raises:
        ValueError: ``mode`` is not one of :data:`LOCK_MODES`.
    """
    if mode not in LOCK_MODES:
        raise ValueError(f"lock mode must be one of {', '.join(LOCK_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    env = os.environ.get("SRMIL_LOCK", "").strip().lower()
    if env in ("flock", "file"):
        return env
    d = Path(directory)
    while not d.exists() and d != d.parent:
        d = d.parent
    with contextlib.suppress(OSError):
        if os.stat(d).st_dev in _FLOCK_BROKEN:
            return "file"
    return "file" if filesystem_type(d) in NETWORK_FS else "flock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class Claim:
    """Exclusive claim on one output, held from :meth:`acquire` until :meth:`release`.

    Args:
        output: the file (or folder) claimed; the lock file sits beside it.
        blocking: wait until the claim is free instead of giving up.
        mode: ``auto`` | ``flock`` | ``file`` (module docstring).
        stale_s: file mode: a lock file untouched this long belongs to a dead holder.
        heartbeat_s: file mode: how often the holder touches its lock file.

    Example:
        >>> with Claim(out) as claim:
        ...     if claim.held and not is_valid(out):
        ...         compute_and_write(out)
    """

    def __init__(self, output: str | os.PathLike, blocking: bool = False, mode: str = "auto",
                 stale_s: float = STALE_S, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.output = Path(output)
        self.lock = lock_path(self.output)
        self.blocking = blocking
        self.mode = mode
        self.stale_s = float(stale_s)
        self.heartbeat_s = float(heartbeat_s)
        self.held = False
        self.used_mode: str | None = None  # flock | file once acquired
        self._fd: int | None = None
        self._token = ""
        self._stop: threading.Event | None = None
        self._beat: threading.Thread | None = None

    def holder(self) -> str:
        """Who holds the claim (``pid@host``), as its holder wrote it, or ``""``."""
        try:
            text = self.lock.read_text(encoding="utf-8").strip()
        except OSError:
            return ""
        try:
            d = json.loads(text)
            return f"{d['pid']}@{d['host']}"
        except (ValueError, KeyError, TypeError):
            return text.split(" ")[0]

    def active_holder(self) -> str:
        """Who appears to hold the claim (``pid@host``), without taking it: ``""`` when there is
        no lock file or its holder is gone (dead on this host; file mode: stale). Probing by
        taking the claim would make a job that arrives at that moment find it busy."""
        if not self.lock.exists():
            return ""
        holder = self.holder()
        pid, _, host = holder.partition("@")
        if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
            return ""
        if resolve_lock_mode(self.mode, self.lock.parent) == "file" and self.is_stale():
            return ""
        return holder or "another process"

    def acquire(self) -> bool:
        """Try to take the claim; False when another process or thread holds it."""
        if self.held:
            return True
        if not self.lock.parent.is_dir():
            self.lock.parent.mkdir(parents=True, exist_ok=True)
        mode = resolve_lock_mode(self.mode, self.lock.parent)
        if mode == "flock":
            got = self._acquire_flock()
            if got is not None:
                return got
            # flock is not supported here: lock files from now on in this folder
            with contextlib.suppress(OSError):
                _FLOCK_BROKEN.add(os.stat(self.lock.parent).st_dev)
        return self._acquire_file()

    # -- flock ---------------------------------------------------------------------------------

    def _acquire_flock(self) -> bool | None:
        """True / False as :meth:`acquire`; None when flock itself fails here (not contention)."""
        import fcntl

        for _ in range(100):
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
            except OSError as exc:
                os.close(fd)
                if exc.errno in _CONTENTION:
                    return False
                if self.mode == "auto":
                    # flock does not work on this file system, so no one holds this file by
                    # flock: the empty file just created must not look like a lock file claim
                    with contextlib.suppress(OSError):
                        if os.stat(self.lock).st_size == 0:
                            self.lock.unlink()
                    return None
                raise
            try:  # the holder before us may have unlinked the file we locked: retry on the new one
                same = os.stat(self.lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}@{socket.gethostname()} {time.time():.0f}\n".encode())
            self._fd, self.held, self.used_mode = fd, True, "flock"
            return True
        return False

    # -- lock files ----------------------------------------------------------------------------

    def _acquire_file(self) -> bool:
        delay = 0.02
        while True:
            token = secrets.token_hex(8)
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._break_if_stale():
                    continue
                if not self.blocking:
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            try:
                os.write(fd, (json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                          "token": token, "since": time.time()}) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            self._token, self.held, self.used_mode = token, True, "file"
            self._start_heartbeat()
            return True

    def _owner(self) -> dict | None:
        try:
            d = json.loads(self.lock.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return d if isinstance(d, dict) else None

    def is_stale(self) -> bool:
        """File mode: whether the current lock file's holder is gone (module docstring)."""
        try:
            age = time.time() - os.stat(self.lock).st_mtime
        except FileNotFoundError:
            return False
        owner = self._owner()
        if owner is None:  # being written right now, or garbage: judge by age alone
            return age > self.stale_s
        if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
            if not _pid_alive(owner["pid"]):
                return True
        return age > self.stale_s

    def _break_if_stale(self) -> bool:
        """Remove a stale lock file; True when one was removed (or vanished meanwhile)."""
        if not self.lock.exists():
            return True
        if not self.is_stale():
            return False
        guard = self.lock.with_name(self.lock.name + ".break")
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:  # another claimer is breaking it; a dead breaker's guard expires
            with contextlib.suppress(OSError):
                if time.time() - os.stat(guard).st_mtime > self.stale_s:
                    guard.unlink()
            return False
        try:
            if self.is_stale():  # still the stale one (not a fresh claim made meanwhile)
                self.lock.unlink(missing_ok=True)
                return True
            return False
        finally:
            guard.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        self._stop = threading.Event()

        def beat(stop: threading.Event, lock: Path, token: str, every: float) -> None:
            while not stop.wait(every):
                owner = self._owner()
                if owner is None or owner.get("token") != token:
                    return  # broken by another claimer (we were judged dead): stop touching it
                with contextlib.suppress(OSError):
                    os.utime(lock)

        self._beat = threading.Thread(target=beat, name="srmil-claim-heartbeat", daemon=True,
                                      args=(self._stop, self.lock, self._token, self.heartbeat_s))
        self._beat.start()

    # -- release -------------------------------------------------------------------------------

    def release(self) -> None:
        """Drop the claim and remove the lock file."""
        if not self.held:
            return
        if self.used_mode == "flock" and self._fd is not None:
            try:
                self.lock.unlink(missing_ok=True)  # before unlocking: waiters then see a new inode
            finally:
                os.close(self._fd)  # closing drops the flock
                self._fd = None
        else:
            if self._stop is not None:
                self._stop.set()
            owner = self._owner()
            if owner is not None and owner.get("token") == self._token:
                self.lock.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> Claim:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
