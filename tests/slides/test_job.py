import json
import os
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from srmil.config import PatchConfig
from srmil.errors import SrmilError
from srmil.slides.job import (
    Claim,
    StatusRow,
    StatusTable,
    ensure_writable,
    parse_shard,
    select_shard,
)
from srmil.slides.patching import read_patches
from srmil.slides.pipeline import Pipeline, check_patches


def test_shards_are_disjoint_cover_all_and_balanced():
    ids = [f"s{i:03d}" for i in range(23)]
    shuffled = list(np.random.default_rng(0).permutation(ids))
    parts = [select_shard(shuffled, f"{i}/4") for i in range(4)]
    assert sorted(sum(parts, [])) == ids  # cover, no duplicates
    assert all(set(a).isdisjoint(b) for i, a in enumerate(parts) for b in parts[i + 1:])
    assert {len(p) for p in parts} == {5, 6}
    assert parts == [select_shard(ids, f"{i}/4") for i in range(4)]  # order-independent
    assert select_shard(shuffled, None) == ids
    assert select_shard(ids, "0/1") == ids
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "-1/4", "1/0", "1", "a/b"):
        with pytest.raises(SrmilError, match="shard"):
            parse_shard(bad)


def test_claim_is_exclusive_between_threads(tmp_path):
    out = tmp_path / "x.h5"
    a, b = Claim(out), Claim(out)
    assert a.acquire() and a.held
    assert not b.acquire()
    assert str(os.getpid()) in b.holder()
    a.release()
    assert not (tmp_path / ".x.h5.lock").exists()
    assert b.acquire()
    b.release()
    # many threads racing: exactly one wins each round
    for _ in range(5):
        wins = []
        barrier = threading.Barrier(8)

        def race(wins=wins, barrier=barrier):
            c = Claim(out)
            barrier.wait()
            if c.acquire():
                wins.append(c)

        threads = [threading.Thread(target=race) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1
        wins[0].release()


def test_claim_of_a_dead_process_is_free_again(tmp_path):
    """The kernel drops the lock of a killed process: no stale claims after a crash."""
    out = tmp_path / "y.h5"
    pid = os.fork()
    if pid == 0:  # child: take the claim and die without releasing it
        os._exit(0 if Claim(out).acquire() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert (tmp_path / ".y.h5.lock").exists()  # the file is left behind...
    c = Claim(out)
    assert c.acquire()  # ...but the claim is free
    pid = os.fork()
    if pid == 0:  # another process cannot take it while we hold it
        os._exit(0 if Claim(out).acquire() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 1
    c.release()


def test_status_table_merges_rows(tmp_path):
    t = StatusTable(tmp_path / "status_x.csv")
    t.record(StatusRow("b", "failed", "b.svs: cannot open slide:\nsecond line", 1.5))
    t.record(StatusRow("a", "done", "12 patches", 2.0))
    t.record(StatusRow("b", "done", "3 patches", 0.5))
    t.record(StatusRow("a", "skipped", "busy", 0.0), weak=True)  # never hides a result
    t.record(StatusRow("a", "skipped", "exists", 0.0))  # nor does "the output exists"
    t.record(StatusRow("c", "skipped", "busy", 0.0), weak=True)
    t.record(StatusRow("d", "failed", "x", 0.0))
    t.record(StatusRow("d", "skipped", "exists", 0.0))  # but it replaces a failure
    rows = t.read()
    assert [(r.slide_id, r.status, r.reason) for r in rows.values()] == [
        ("a", "done", "12 patches"), ("b", "done", "3 patches"), ("c", "skipped", "busy"),
        ("d", "skipped", "exists")]
    text = (tmp_path / "status_x.csv").read_text().splitlines()
    assert text[0] == "slide_id,status,reason,seconds" and len(text) == 5
    with pytest.raises(ValueError):
        t.record(StatusRow("a", "ok"))
    threads = [threading.Thread(target=t.record, args=(StatusRow(f"t{i}", "done"),))
               for i in range(12)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(t.read()) == 16  # concurrent updates lose nothing


def test_unwritable_output_is_one_line(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(SrmilError) as err:
        ensure_writable(f / "job")
    assert "not writable" in str(err.value) and "\n" not in str(err.value)


def _rows(results, stage):
    return {r.slide_id: (r.status, r.reason) for r in results[stage]}


def test_resume_skips_done_and_redoes_truncated(region_path, tmp_path):
    job = tmp_path / "job"
    pipe = Pipeline(job, {"cmu": region_path}, progress=False)
    first = pipe.run(["cmu"], ["segment", "patch"])
    assert _rows(first, "segment")["cmu"][0] == "done"
    assert _rows(first, "patch")["cmu"][0] == "done"
    patches = pipe.layout.patches("cmu")
    coords, _ = read_patches(patches)
    mtime = patches.stat().st_mtime_ns
    again = pipe.run(["cmu"], ["segment", "patch"])
    assert _rows(again, "segment")["cmu"][0] == "skipped"
    assert _rows(again, "patch")["cmu"][0] == "skipped"
    assert patches.stat().st_mtime_ns == mtime
    # a truncated patch file (copied half-way, disk full...) is redone
    data = patches.read_bytes()
    patches.write_bytes(data[: len(data) // 2])
    assert check_patches(patches, PatchConfig()) is not None
    third = pipe.run(["cmu"], ["segment", "patch"])
    status, reason = _rows(third, "patch")["cmu"]
    assert status == "done" and "replaced" in reason and "truncated" in reason
    np.testing.assert_array_equal(read_patches(patches)[0], coords)
    # a truncated GeoJSON is redone too
    gj = pipe.layout.geojson("cmu")
    gj.write_text(gj.read_text()[:100])
    assert _rows(pipe.run(["cmu"], ["segment"]), "segment")["cmu"][0] == "done"
    assert json.loads(gj.read_text())["type"] == "FeatureCollection"
    table = (job / "status_segment.csv").read_text()
    assert "cmu,done" in table
    # --overwrite redoes complete outputs
    over = Pipeline(job, {"cmu": region_path}, overwrite=True, progress=False)
    assert _rows(over.run(["cmu"], ["patch"]), "patch")["cmu"][0] == "done"


def test_edited_geojson_round_trip_changes_the_patches(region_path, tmp_path):
    job = tmp_path / "job"
    pipe = Pipeline(job, {"cmu": region_path}, progress=False)
    pipe.run(["cmu"], ["segment", "patch"])
    before, _ = read_patches(pipe.layout.patches("cmu"))
    # the pathologist keeps only the tissue above y = 500 in QuPath and gives the file back
    gj = json.loads(pipe.layout.geojson("cmu").read_text())
    box = [[0, 0], [1024, 0], [1024, 500], [0, 500], [0, 0]]
    gj["features"] = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [box]},
                       "properties": {"objectType": "annotation"}}]
    edited = tmp_path / "edited"
    edited.mkdir()
    (edited / "cmu.geojson").write_text(json.dumps(gj))
    pipe2 = Pipeline(job, {"cmu": region_path}, geojson_dir=edited, progress=False)
    res = pipe2.run(["cmu"], ["segment", "patch"])
    assert _rows(res, "segment")["cmu"] == ("skipped", f"user contours {edited / 'cmu.geojson'}")
    status, reason = _rows(res, "patch")["cmu"]
    assert status == "done" and "other tissue contours" in reason
    after, _ = read_patches(pipe.layout.patches("cmu"))
    assert (after[:, 1] < 500).all() and len(after) > 0  # nothing below the edit
    assert len(after) != len(before)
    # the same edited contours again: nothing to do
    assert _rows(pipe2.run(["cmu"], ["patch"]), "patch")["cmu"][0] == "skipped"


def test_bad_slides_fail_alone(svs_path, unopenable_path, unreadable_path, blank_path,
                               tmp_path):
    slides = {"cmu": svs_path, "unopenable": unopenable_path, "unreadable": unreadable_path,
              "blank": blank_path}
    pipe = Pipeline(tmp_path / "job", slides, progress=False)
    res = pipe.run(sorted(slides), ["segment", "patch"])
    seg = _rows(res, "segment")
    assert seg["cmu"][0] == "done"
    assert seg["unopenable"] == ("failed", f"{unopenable_path}: cannot open slide: "
                                           "Unsupported TIFF compression: 52479")
    assert seg["unreadable"][0] == "failed" and "cannot read slide pixels" in seg["unreadable"][1]
    assert seg["blank"][0] == "failed" and "no tissue found" in seg["blank"][1]
    patch = _rows(res, "patch")
    assert patch["cmu"][0] == "done"
    assert {patch[s] for s in ("unopenable", "unreadable", "blank")} == {
        ("failed", "not run: segment failed")}
    table = StatusTable(tmp_path / "job" / "status_segment.csv").read()
    assert {s: r.status for s, r in table.items()} == {
        "blank": "failed", "cmu": "done", "unopenable": "failed", "unreadable": "failed"}
    assert all("\n" not in r.reason for r in table.values())
    assert (tmp_path / "job" / "thumbnails" / "blank.jpg").is_file()  # QC of what was seen


def test_target_above_scan_is_a_failed_row(svs_path, tmp_path):
    pipe = Pipeline(tmp_path / "job", {"cmu": svs_path}, patch=PatchConfig(magnification=40),
                    progress=False)
    res = pipe.run(["cmu"], ["segment", "patch"])
    status, reason = _rows(res, "patch")["cmu"]
    assert status == "failed" and "above the scan's 20×" in reason
    assert Path(tmp_path / "job" / "40x_224px_0px_overlap" / "status_patch.csv").is_file()


def test_two_workers_on_one_job_never_duplicate(region_path, tmp_path):
    slides = {}
    for i in range(4):
        (tmp_path / "slides").mkdir(exist_ok=True)
        link = tmp_path / "slides" / f"s{i}.tiff"
        link.symlink_to(region_path)
        slides[f"s{i}"] = link
    job = tmp_path / "job"
    results = []

    def work():
        pipe = Pipeline(job, slides, progress=False)
        results.append(pipe.run(sorted(slides), ["segment", "patch"]))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2  # neither worker raised
    for stage in ("segment", "patch"):
        for sid in slides:
            statuses = [_rows(r, stage)[sid][0] for r in results]
            assert statuses.count("done") == 1, (stage, sid, statuses)
            assert "failed" not in statuses
    table = StatusTable(job / "status_segment.csv").read()
    assert {r.status for r in table.values()} == {"done"}
    pipe = Pipeline(job, slides, progress=False)
    for sid in slides:
        assert check_patches(pipe.layout.patches(sid), PatchConfig()) is None
    assert not list(job.rglob("*.lock")) and not list(job.rglob("*.tmp"))


def test_an_mpp_override_that_changes_the_magnification_redoes_the_patches(region_path,
                                                                            tmp_path):
    """Patches made when the scan read as 20× are stale once an override says it is 40×: the
    level-0 patch size doubles (224 → 448); the features of the old patches are redone too."""
    from srmil.slides.pipeline import FeaturesStage

    def fake(slide, patches, out, overwrite):  # features = the coordinates, as float32
        from srmil.bags.writer import write_trident_bag

        coords, attrs = read_patches(patches)
        write_trident_bag(out, coords.astype(np.float32), coords, patch_size=224,
                          level0_magnification=attrs["level0_magnification"],
                          target_magnification=20, encoder="fake", overwrite=overwrite)
        return len(coords)

    stage = FeaturesStage("fake", fake)
    job = tmp_path / "job"
    pipe = Pipeline(job, {"cmu": region_path}, progress=False)
    pipe.run(["cmu"], ["segment", "patch", "features"], stage)
    patches = pipe.layout.patches("cmu")
    assert read_patches(patches)[1]["patch_size_level0"] == 224
    again = Pipeline(job, {"cmu": region_path}, mpp={"cmu": 0.25}, progress=False)
    res = again.run(["cmu"], ["segment", "patch", "features"], stage)
    status, reason = _rows(res, "patch")["cmu"]
    assert status == "done" and "level0_magnification=20, the slide now gives 40" in reason
    coords, attrs = read_patches(patches)
    assert attrs["patch_size_level0"] == 448 and attrs["level0_magnification"] == 40
    assert _rows(res, "features")["cmu"][0] == "done"
    with h5py.File(pipe.layout.features("cmu", "fake")) as h5:
        np.testing.assert_array_equal(h5["coords"][()], coords)
    # and the same override again is a resume: nothing redone
    res = again.run(["cmu"], ["segment", "patch", "features"], stage)
    assert [_rows(res, s)["cmu"][0] for s in ("patch", "features")] == ["skipped", "skipped"]


@pytest.fixture
def stain_job(region_path, tmp_path):
    """A job with stain_stats features of the region slide (float32, no weights)."""
    from srmil.features.encoders import create_encoder
    from srmil.features.extract import extract_slide

    enc = create_encoder("stain_stats")

    def encode(precision="fp32"):
        def fn(slide, patches, out, overwrite):
            return extract_slide(slide, patches, enc, out, num_workers=0, progress=False,
                                 precision=precision, overwrite=overwrite)
        return fn

    pipe = Pipeline(tmp_path / "job", {"cmu": region_path}, progress=False)
    from srmil.slides.pipeline import FeaturesStage

    res = pipe.run(["cmu"], ["segment", "patch", "features"],
                   FeaturesStage("stain_stats", encode(), "fp32", "none"))
    assert _rows(res, "features")["cmu"][0] == "done"
    return pipe, encode


def test_features_of_another_precision_or_weights_are_redone(stain_job):
    from srmil.slides.pipeline import FeaturesStage, check_features

    pipe, encode = stain_job
    out, patches = pipe.layout.features("cmu", "stain_stats"), pipe.layout.patches("cmu")
    same = FeaturesStage("stain_stats", encode(), "fp32", "none")
    assert _rows(pipe.run(["cmu"], ["features"], same), "features")["cmu"][0] == "skipped"
    # the same architecture with another weights file (its sha256) is not the same features
    other = FeaturesStage("stain_stats", encode(), "fp32", "0" * 64)
    status, reason = _rows(pipe.run(["cmu"], ["features"], other), "features")["cmu"]
    assert status == "done" and "made with another weights file" in reason
    half = FeaturesStage("stain_stats", encode("fp16"), "fp16", "none")
    status, reason = _rows(pipe.run(["cmu"], ["features"], half), "features")["cmu"]
    assert status == "done" and "stored as float32, not fp16" in reason
    with h5py.File(out) as h5:
        assert h5["features"].dtype == np.float16
    assert check_features(out, patches, "stain_stats", "fp16", "none") is None
    assert "made with encoder 'stain_stats', not 'uni'" in check_features(out, patches, "uni")
    # a TRIDENT-made file (no srmil weights_sha256 attr) is trusted as it is
    with h5py.File(out, "a") as h5:
        del h5["features"].attrs["weights_sha256"]
    assert check_features(out, patches, "stain_stats", "fp32", "0" * 64) is None


def test_a_failed_overwrite_keeps_the_good_features(stain_job):
    """--overwrite replaces a valid feature file only once the new one is written."""
    from srmil.slides.pipeline import FeaturesStage

    pipe, encode = stain_job
    out = pipe.layout.features("cmu", "stain_stats")
    before = out.read_bytes()

    def boom(slide, patches, out, overwrite):
        raise RuntimeError("CUDA out of memory")

    over = Pipeline(pipe.layout.root, pipe.slides, overwrite=True, progress=False)
    status, reason = _rows(over.run(["cmu"], ["features"], FeaturesStage("stain_stats", boom)),
                           "features")["cmu"]
    assert status == "failed" and "CUDA out of memory" in reason
    assert out.read_bytes() == before
    # a successful --overwrite replaces it
    mtime = out.stat().st_mtime_ns
    res = over.run(["cmu"], ["features"], FeaturesStage("stain_stats", encode()))
    assert _rows(res, "features")["cmu"][0] == "done" and out.stat().st_mtime_ns != mtime
    # a truncated file is removed even when the redo fails (never left for a reader)
    out.write_bytes(out.read_bytes()[:200])
    res = pipe.run(["cmu"], ["features"], FeaturesStage("stain_stats", boom))
    assert _rows(res, "features")["cmu"][0] == "failed" and not out.exists()
