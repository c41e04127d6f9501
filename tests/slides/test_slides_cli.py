"""``srmil segment | patch | extract`` end to end, in process through ``main``."""

import h5py
import numpy as np
import pytest

from srmil.bags.readers import read_bag
from srmil.cli.main import main
from srmil.graphs.grid import resolve_step
from srmil.slides.job import StatusTable
from srmil.slides.patching import read_patches


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _link_dir(tmp_path, name, **slides):
    d = tmp_path / name
    d.mkdir()
    for sid, path in slides.items():
        (d / f"{sid}{path.suffix}").symlink_to(path)
    return d


@pytest.fixture(scope="module")
def cohort_job(tmp_path_factory, svs_path, unopenable_path, unreadable_path, blank_path):
    """One `srmil extract` run over the real SVS and three bad slides."""
    tmp = tmp_path_factory.mktemp("cli")
    slides = _link_dir(tmp, "slides", cmu=svs_path, unopenable=unopenable_path,
                       unreadable=unreadable_path, blank=blank_path)
    job = tmp / "job"
    argv = ["extract", "--slides", str(slides), "--out", str(job), "--encoder", "stain_stats",
            "--workers", "0", "--quiet"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return job, argv, exc.value.code


def test_extract_writes_tridents_layout(cohort_job):
    job, _, code = cohort_job
    assert code == 1  # three slides failed; the cohort still finished
    sub = job / "20x_224px_0px_overlap"
    for p in ("thumbnails/cmu.jpg", "contours/cmu.jpg", "contours_geojson/cmu.geojson"):
        assert (job / p).is_file(), p
    assert (sub / "patches" / "cmu_patches.h5").is_file()
    assert (sub / "visualization" / "cmu.jpg").is_file()
    feats = sub / "features_stain_stats" / "cmu.h5"
    coords, pattrs = read_patches(sub / "patches" / "cmu_patches.h5")
    with h5py.File(feats, "r") as h5:
        f = h5["features"]
        assert f.shape == (len(coords), 39) and f.dtype == np.float32
        assert f.attrs["encoder"] == "stain_stats"
        np.testing.assert_array_equal(h5["coords"][()], coords)
        cattrs = dict(h5["coords"].attrs)
        assert np.isfinite(f[()]).all() and f[()].std(axis=0).max() > 0
    for k in ("patch_size", "patch_size_level0", "level0_magnification",
              "target_magnification", "overlap", "level0_width", "level0_height"):
        assert cattrs[k] == pattrs[k]
    assert (cattrs["patch_size"], cattrs["patch_size_level0"]) == (224, 224)
    bag = read_bag(feats)
    assert bag.slide_id == "cmu" and bag.features.shape == (len(coords), 39)
    est = resolve_step(bag)
    assert (est.step, est.source) == (224, "attrs+coords")


def test_extract_status_tables_and_one_line_errors(cohort_job, capsys):
    job, _, _ = cohort_job
    sub = job / "20x_224px_0px_overlap"
    seg = StatusTable(job / "status_segment.csv").read()
    feats = StatusTable(sub / "status_features_stain_stats.csv").read()
    assert {s: r.status for s, r in seg.items()} == {
        "blank": "failed", "cmu": "done", "unopenable": "failed", "unreadable": "failed"}
    assert feats["cmu"].status == "done" and feats["cmu"].reason.startswith(
        f"{len(read_patches(sub / 'patches' / 'cmu_patches.h5')[0])} patches")
    assert feats["blank"].reason == "not run: segment failed"


def test_rerun_skips_and_redoes_truncated_features(cohort_job, capsys):
    job, argv, _ = cohort_job
    feats = job / "20x_224px_0px_overlap" / "features_stain_stats" / "cmu.h5"
    before = feats.stat().st_mtime_ns
    code, out, err = run_cli(argv, capsys)
    assert code == 1
    assert "segment: 0 done, 1 skipped, 3 failed" in out
    assert "features: 0 done, 1 skipped, 3 failed" in out
    lines = err.strip().splitlines()
    assert len(lines) == 3  # one line per bad slide, no traceback
    assert any("unopenable.tiff: cannot open slide" in ln for ln in lines)
    assert any("unreadable.svs: cannot read slide pixels" in ln for ln in lines)
    assert any("blank.tiff: no tissue found" in ln for ln in lines)
    assert feats.stat().st_mtime_ns == before
    data = feats.read_bytes()
    feats.write_bytes(data[: len(data) // 3])
    # without --quiet, and stderr not a terminal (a SLURM log): no progress bars, only errors
    code, out, err = run_cli([a for a in argv if a != "--quiet"], capsys)
    assert "features: 1 done, 0 skipped, 3 failed" in out
    assert "\r" not in err and len(err.strip().splitlines()) == 3
    assert read_bag(feats).features.shape[1] == 39


def test_bad_arguments_are_one_line(tmp_path, region_path, capsys):
    slides = _link_dir(tmp_path, "slides", r=region_path)
    code, _, err = run_cli(["extract", "--slides", str(slides), "--out", str(tmp_path / "j"),
                            "--encoder", "uni_v3"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "unknown encoder 'uni_v3'" in err and "stain_stats" in err
    f = tmp_path / "file"
    f.write_text("x")
    code, _, err = run_cli(["segment", "--slides", str(slides), "--out", str(f / "job")],
                           capsys)
    assert code == 2 and "not writable" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["segment", "--slides", str(tmp_path / "nope"), "--out",
                            str(tmp_path / "j")], capsys)
    assert code == 2 and "no such slide directory" in err
    code, _, err = run_cli(["patch", "--slides", str(slides), "--out", str(tmp_path / "j"),
                            "--shard", "2/2"], capsys)
    assert code == 2 and "0-based" in err


def test_shards_split_the_cohort(tmp_path, region_path, capsys):
    slides = _link_dir(tmp_path, "slides", **{f"s{i}": region_path for i in range(5)})
    job = tmp_path / "job"
    done = []
    for i in range(2):
        code, out, _ = run_cli(["segment", "--slides", str(slides), "--out", str(job),
                                "--shard", f"{i}/2", "--quiet"], capsys)
        assert code == 0
        done.append(set(StatusTable(job / "status_segment.csv").read()) - set().union(*done))
    assert done == [{"s0", "s2", "s4"}, {"s1", "s3"}]


def test_patch_a_40x_scan_and_mpp_overrides(tmp_path, pyramid_path, no_mpp_path, capsys):
    slides = _link_dir(tmp_path, "slides", scan40x=pyramid_path, nompp=no_mpp_path)
    job = tmp_path / "job"
    argv = ["patch", "--slides", str(slides), "--out", str(job), "--quiet"]
    code, out, err = run_cli(argv, capsys)
    assert code == 1 and "nompp" in err and "--mpp-csv" in err
    coords, attrs = read_patches(job / "20x_224px_0px_overlap" / "patches" / "scan40x_patches.h5")
    assert (attrs["level0_magnification"], attrs["patch_size_level0"]) == (40, 448)
    assert (coords % 448 == 0).all()
    csv = tmp_path / "mpp.csv"
    csv.write_text("slide_id,mpp\nnompp,0.499\n")
    code, out, err = run_cli(argv + ["--mpp-csv", str(csv)], capsys)
    assert code == 0, err
    assert "patch: 1 done, 1 skipped, 0 failed" in out
    _, attrs = read_patches(job / "20x_224px_0px_overlap" / "patches" / "nompp_patches.h5")
    assert (attrs["level0_magnification"], attrs["patch_size_level0"]) == (20, 224)


def test_pixels_that_fail_in_a_reader_worker_are_one_line(tmp_path, svs_path, capsys):
    """A slide whose tiles break after patching: the DataLoader worker's error, as one line."""
    slides = tmp_path / "slides"
    slides.mkdir()
    svs = slides / "x.svs"
    svs.write_bytes(svs_path.read_bytes())
    job = tmp_path / "job"
    assert run_cli(["patch", "--slides", str(slides), "--out", str(job), "--quiet"],
                   capsys)[0] == 0
    data = bytearray(svs.read_bytes())
    data[100_000:400_000] = bytes(300_000)  # the JPEG tiles of the top rows
    svs.write_bytes(bytes(data))
    code, out, err = run_cli(["extract", "--slides", str(slides), "--out", str(job),
                              "--encoder", "stain_stats", "--workers", "1", "--quiet"], capsys)
    assert code == 1 and "features: 0 done, 0 skipped, 1 failed" in out
    assert err.strip().splitlines() == [
        f"srmil extract: features x: {svs}: cannot read slide pixels: Not a JPEG file: "
        "starts with 0x00 0x00"]
    row = StatusTable(job / "20x_224px_0px_overlap" / "status_features_stain_stats.csv").read()
    assert row["x"].status == "failed" and "Traceback" not in row["x"].reason
    assert not (job / "20x_224px_0px_overlap" / "features_stain_stats" / "x.h5").exists()
