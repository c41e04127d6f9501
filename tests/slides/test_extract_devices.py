"""``srmil extract --devices N``: N worker processes on one job, each output written once."""

import os
import subprocess
import sys
import time

import h5py
import numpy as np

from srmil import api
from srmil.config import ExtractConfig
from srmil.slides.job import StatusTable
from srmil.storage import open_h5


def _slides(tmp_path, region_path, n):
    d = tmp_path / "slides"
    d.mkdir()
    for i in range(n):
        (d / f"s{i}.tiff").symlink_to(region_path)
    return d


def test_two_worker_processes_write_each_output_once_as_one_process_does(tmp_path,
                                                                          region_path):
    slides = _slides(tmp_path, region_path, 5)
    enc = ExtractConfig(encoder="stain_stats", workers=0, device="cpu")
    one = api.extract(slides, tmp_path / "one", enc, progress=False)
    two = api.extract(slides, tmp_path / "two", enc, progress=False, devices=2, lock="file")
    ids = [f"s{i}" for i in range(5)]
    for stage in ("segment", "patch", "features"):
        assert [r.slide_id for r in two.stages[stage]] == ids
        assert [r.status for r in two.stages[stage]] == ["done"] * 5, two.stages[stage]
        # each slide done by exactly one of the two workers, never by both, none left out
        doers = [sorted(r.slide_id for r in w[stage] if r.status == "done")
                 for w in two.workers]
        assert sorted(doers[0] + doers[1]) == ids
        assert all(doers), doers  # both workers had work
        table = StatusTable(two.layout.status(stage, two.encoder)).read()
        assert sorted(table) == ids and {r.status for r in table.values()} == {"done"}
    for sid in ids:
        with h5py.File(one.layout.features(sid, one.encoder)) as a, \
                h5py.File(two.layout.features(sid, two.encoder)) as b:
            np.testing.assert_array_equal(a["features"][()], b["features"][()])
            np.testing.assert_array_equal(a["coords"][()], b["coords"][()])
    assert not list((tmp_path / "two").rglob(".*.lock"))
    # a rerun on two devices finds everything done: skipped, nothing rewritten
    again = api.extract(slides, tmp_path / "two", enc, progress=False, devices=2)
    assert {r.status for r in again.stages["features"]} == {"skipped"}


def test_devices_needs_gpus_it_has(tmp_path, region_path):
    import pytest

    from srmil.errors import SrmilError

    enc = ExtractConfig(encoder="stain_stats", workers=0, device="cuda:1")
    with pytest.raises(SrmilError, match="--devices 2 needs --device auto, cuda or cpu|CUDA is "
                       "not available"):
        api.extract(_slides(tmp_path, region_path, 1), tmp_path / "j", enc, devices=2)
    with pytest.raises(SrmilError, match="--devices must be >= 1"):
        api.extract(tmp_path, tmp_path / "j", enc, devices=0)


def test_bags_are_read_while_another_process_holds_them_open(tmp_path):
    """HDF5's own file locking is off for reads (it fails on some NFS/Lustre mounts)."""
    path = tmp_path / "held.h5"
    code = (f"import h5py, time; f = h5py.File({str(path)!r}, 'w'); f['x'] = [1, 2, 3]; "
            "f.flush(); open(" + repr(str(path) + ".ready") + ", 'w').close(); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        t0 = time.time()
        while not (tmp_path / "held.h5.ready").exists():
            assert time.time() - t0 < 60 and proc.poll() is None
            time.sleep(0.02)
        with open_h5(path) as h5:
            assert h5["x"][()].tolist() == [1, 2, 3]
        try:  # what HDF5's default locking does in the same place
            h5py.File(path, "r").close()
            locked = False
        except OSError:
            locked = True
        assert locked or os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE"
    finally:
        proc.kill()
        proc.wait()
