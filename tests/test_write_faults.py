"""Faults at write time: one line naming the file, nothing before it lost, resumable."""

from __future__ import annotations

import errno
from pathlib import Path

import pandas as pd
import pytest
import torch

import srmil.storage as storage
from srmil.bags.synth import write_cohort
from srmil.cli.main import main
from srmil.config import SynthConfig
from srmil.errors import WriteError
from srmil.storage import atomic_path, write_csv, write_text
from srmil.training.checkpoint import load_state


def cli(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and "epoch" not in ln
             and not ln.startswith("fold ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_an_os_error_while_writing_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    p = write_text(tmp_path / "t.txt", "old")

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(a[0]))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    with pytest.raises(WriteError) as e:
        write_csv(p, pd.DataFrame({"a": [1]}), overwrite=True)
    assert str(e.value) == f"{p}: cannot write it: No space left on device"
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["t.txt"]  # no temp file left


def test_the_data_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events: list[str] = []
    real = storage._fsync, storage._publish, storage._fsync_dir
    monkeypatch.setattr(storage, "_fsync", lambda p: (events.append(f"fsync {p.read_text()}"),
                                                      real[0](p))[1])
    monkeypatch.setattr(storage, "_publish", lambda *a: (events.append("rename"),
                                                         real[1](*a))[1])
    monkeypatch.setattr(storage, "_fsync_dir", lambda d: (events.append(f"fsync dir {d.name}"),
                                                          real[2](d))[1])
    write_text(tmp_path / "x.txt", "data")
    assert events == ["fsync data", "rename", f"fsync dir {tmp_path.name}"]


def test_a_failed_rename_is_a_write_error_too(tmp_path, monkeypatch):
    def boom(*a):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(storage, "_publish", boom)
    with pytest.raises(WriteError, match="cannot write it: Input/output error"):
        with atomic_path(tmp_path / "y.bin") as tmp:
            tmp.write_bytes(b"123")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_during_cv_is_one_line_and_the_run_resumes(capsys, tmp_path, monkeypatch):
    """torch.save on a full disk raises RuntimeError ("unexpected pos"): at the third epoch's
    checkpoint the disk fills; the CLI says so in one line naming last.pt, the second epoch's
    checkpoint is intact, and --resume finishes the run."""
    s = write_cohort(SynthConfig(slides=12, dim=6, min_patches=20, max_patches=30, seed=2),
                     tmp_path / "cohort")
    run = tmp_path / "run"
    args = ["cv", "--labels", s["labels_csv"], "--bags", s["features_dir"], "--out", run,
            "--model", "mean", "--epochs", 4, "--device", "cpu", "--set", "split.folds=2",
            "--set", "train.bootstrap=20"]
    real_save = torch.save
    calls = {"n": 0}

    def filling_disk(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            Path(f).write_bytes(b"PK\x03\x04 half a zip")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos "
                               "4096 vs 4030")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", filling_disk)
    code, _, err = cli(capsys, *args)
    last = run / "fold_0" / "last.pt"
    assert code == 2
    assert one_line(err) == (f"srmil cv: error: {last}: cannot write it: [enforce fail at "
                             "inline_container.cc:672] . unexpected pos 4096 vs 4030")
    assert load_state(last)["epoch"] == 1  # the checkpoint before the fault, complete
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(torch, "save", real_save)
    code, out, _ = cli(capsys, *args, "--resume")
    assert code == 0 and "test_auc" in out
    assert pd.read_csv(run / "fold_0" / "history.csv").epoch.tolist() == [0, 1, 2, 3]


def test_an_os_error_outside_the_writers_is_one_line(capsys, tmp_path, monkeypatch):
    def denied(self, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    s = write_cohort(SynthConfig(slides=8, dim=4, min_patches=10, max_patches=12),
                     tmp_path / "c")
    monkeypatch.setattr(Path, "mkdir", denied)
    code, _, err = cli(capsys, "cv", "--labels", s["labels_csv"], "--bags", s["features_dir"],
                       "--out", tmp_path / "run", "--model", "mean", "--epochs", 1,
                       "--set", "split.folds=2")
    assert code == 2
    assert one_line(err) == f"srmil cv: error: {tmp_path / 'run'}: Permission denied"
