"""``srmil bench extract`` runs end to end on a few patches (figures are not asserted)."""

from srmil.bench import bench_extract


def test_bench_extract_reports_every_stage():
    source, rows = bench_extract(n_patches=6, workers=(0,), batch_size=3,
                                 encoders=("stain_stats",))
    assert "6 patches of 224 px" in source
    stages = [(r["stage"], r["encoder"], r["workers"]) for r in rows]
    assert stages == [("read", None, 0), ("encode", "stain_stats", None),
                      ("read+encode", "stain_stats", 0)]
    assert all(r["patches"] == 6 and r["patches_per_s"] > 0 for r in rows)


def test_bench_looks_for_the_fixture_where_make_fixtures_puts_it():
    from fetch_fixtures import CACHE
    from srmil.bench import FIXTURES_DIR

    assert FIXTURES_DIR == CACHE
