"""Claims in both lock modes: racing processes, a claimer killed mid-claim, expiry, auto mode."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from srmil import locks
from srmil.locks import Claim, filesystem_type, lock_path, resolve_lock_mode

RACER = """
import sys, time
from pathlib import Path
from srmil.locks import Claim
root, mode, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
(root / f"ready.{sys.argv[4]}").touch()
while not (root / "go").exists():
    time.sleep(0.005)
for i in range(n):
    out = root / f"out_{i}.txt"
    with Claim(out, mode=mode) as c:
        if c.held and not out.exists():  # claimed, then re-checked: computed once
            time.sleep(0.002)  # widen the window a missing lock would let two writers into
            with open(out, "a") as fh:
                fh.write(sys.argv[4] + "\\n")
"""

HOLDER = """
import sys, time
from pathlib import Path
from srmil.locks import Claim
c = Claim(Path(sys.argv[1]), mode=sys.argv[2], heartbeat_s=0.05, stale_s=0.5)
assert c.acquire()
Path(sys.argv[1] + ".held").touch()
time.sleep(float(sys.argv[3]))
c.release()
"""


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, "the holder ended early"
        assert time.time() - t0 < timeout, "the holder never took its claim"
        time.sleep(0.01)


@pytest.mark.parametrize("mode", ["flock", "file"])
def test_racing_processes_compute_every_output_exactly_once(tmp_path, mode):
    n_out, n_proc = 40, 4
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), mode, str(n_out),
                               str(i)]) for i in range(n_proc)]
    t0 = time.time()
    while len(list(tmp_path.glob("ready.*"))) < n_proc:
        assert time.time() - t0 < 60
        time.sleep(0.01)
    (tmp_path / "go").touch()
    assert [p.wait(timeout=120) for p in procs] == [0] * n_proc
    writers = [(tmp_path / f"out_{i}.txt").read_text().split() for i in range(n_out)]
    assert all(len(w) == 1 for w in writers), writers
    assert not list(tmp_path.glob(".*.lock*"))  # every claim released and cleaned up


@pytest.mark.parametrize("mode", ["flock", "file"])
def test_a_claimer_killed_mid_claim_does_not_block_the_output(tmp_path, mode):
    out = tmp_path / "slide.h5"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), mode, "600"])
    try:
        _wait_for(Path(str(out) + ".held"), proc)
        busy = Claim(out, mode=mode)
        assert not busy.acquire() and busy.holder() == f"{proc.pid}@{os.uname().nodename}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert lock_path(out).exists()  # the killed holder left its lock file behind
    c = Claim(out, mode=mode)
    assert c.acquire()  # flock: the kernel dropped it; file: its holder is gone from this host
    c.release()
    assert not lock_path(out).exists()


def test_a_live_holders_heartbeat_keeps_its_claim(tmp_path):
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), "file", "2"])
    try:
        _wait_for(Path(str(out) + ".held"), proc)
        t0 = time.time()
        while time.time() - t0 < 1.2:  # well past stale_s = 0.5: the heartbeat keeps it fresh
            assert not Claim(out, mode="file", stale_s=0.5).acquire()
            time.sleep(0.1)
    finally:
        proc.wait(timeout=60)
    assert Claim(out, mode="file").acquire()


def test_a_dead_jobs_claim_from_another_machine_expires(tmp_path):
    out = tmp_path / "o"
    lock = lock_path(out)
    lock.write_text(json.dumps({"pid": 1, "host": "node-elsewhere", "token": "x",
                                "since": time.time()}))
    assert not Claim(out, mode="file", stale_s=60).acquire()  # fresh: its job may be alive
    assert Claim(out, mode="file").holder() == "1@node-elsewhere"
    old = time.time() - 120
    os.utime(lock, (old, old))  # no heartbeat for two minutes
    c = Claim(out, mode="file", stale_s=60)
    assert c.acquire() and json.loads(lock.read_text())["pid"] == os.getpid()
    c.release()


def test_blocking_claim_waits_for_the_holder(tmp_path):
    out = tmp_path / "table.csv"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), "file", "0.5"])
    try:
        _wait_for(Path(str(out) + ".held"), proc)
        c = Claim(out, blocking=True, mode="file")
        assert c.acquire() and proc.poll() is not None  # got it only once the holder let go
        c.release()
    finally:
        proc.wait(timeout=60)


def test_auto_mode_picks_lock_files_on_network_file_systems(tmp_path, monkeypatch):
    assert filesystem_type(tmp_path)  # a type for every path on Linux
    monkeypatch.delenv("SRMIL_LOCK", raising=False)
    monkeypatch.setattr(locks, "filesystem_type", lambda p: "ext4")
    assert resolve_lock_mode("auto", tmp_path) == "flock"
    monkeypatch.setattr(locks, "filesystem_type", lambda p: "lustre")
    assert resolve_lock_mode("auto", tmp_path / "not" / "yet") == "file"
    monkeypatch.setattr(locks, "filesystem_type", lambda p: "nfs4")
    c = Claim(tmp_path / "x")
    assert c.acquire() and c.used_mode == "file"
    c.release()
    monkeypatch.setenv("SRMIL_LOCK", "flock")
    assert resolve_lock_mode("auto", tmp_path) == "flock"
    assert resolve_lock_mode("file", tmp_path) == "file"
    with pytest.raises(ValueError, match="lock mode must be one of"):
        resolve_lock_mode("fcntl", tmp_path)


def test_auto_mode_falls_back_to_lock_files_where_flock_fails(tmp_path, monkeypatch):
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.delenv("SRMIL_LOCK", raising=False)
    monkeypatch.setattr(locks, "filesystem_type", lambda p: "ext4")
    monkeypatch.setattr(locks, "_FLOCK_BROKEN", set())
    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(OSError, match="No locks"):
        Claim(tmp_path / "a", mode="flock").acquire()  # asked for flock: its failure shows
    c = Claim(tmp_path / "a")
    assert c.acquire() and c.used_mode == "file"
    assert not Claim(tmp_path / "a").acquire()  # the fallback still excludes
    c.release()
    assert resolve_lock_mode("auto", tmp_path) == "file"  # remembered for this file system
