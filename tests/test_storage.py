import pytest

from srmil.errors import SrmilError
from srmil.storage import atomic_path, write_json, write_text


def test_atomic_write_refuses_existing_and_overwrites_when_told(tmp_path):
    p = write_text(tmp_path / "a.txt", "one")
    with pytest.raises(SrmilError, match="refusing to overwrite"):
        write_text(p, "two")
    assert p.read_text() == "one"
    write_json(p, {"x": 1}, overwrite=True)
    assert '"x": 1' in p.read_text()


def test_failed_write_leaves_nothing_behind(tmp_path):
    dest = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed mid-write")
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        p = write_text(tmp_path / "report.html", "<html></html>")
        os.umask(0o077)
        q = write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    assert stat.S_IMODE(q.stat().st_mode) == 0o600


def test_a_file_written_meanwhile_by_another_writer_is_not_replaced(tmp_path):
    dest = tmp_path / "features.h5"
    with pytest.raises(SrmilError, match="another process meanwhile"):
        with atomic_path(dest) as slow:
            slow.write_text("second")
            write_text(dest, "first")  # another process finishes first
    assert dest.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["features.h5"]
    with atomic_path(dest, overwrite=True) as tmp:  # asked to: replaced
        tmp.write_text("third")
    assert dest.read_text() == "third"
