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


def test_written_files_get_the_usual_mode_not_mkstemps_0600(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        p = write_text(tmp_path / "report.html", "<html></html>")
    finally:
        os.umask(umask)
    # the module reads the umask at import; the default (0o022 here) gives rw-r--r--
    assert stat.S_IMODE(p.stat().st_mode) & 0o044 == 0o044
