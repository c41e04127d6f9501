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
