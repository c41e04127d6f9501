import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from helpers import run_cli
from srmil.bags.cohort import load_cohort
from srmil.bags.readers import read_bag
from srmil.bags.synth import generate, neighbour_fraction, oracle, write_cohort
from srmil.config import SynthConfig
from srmil.errors import ConfigError, SrmilError
from srmil.graphs.grid import build_graph


def test_written_cohort_is_trident_layout_with_mixed_magnifications(synth_cohort):
    feat_dir = Path(synth_cohort["features_dir"])
    assert feat_dir.parent.name == "20x_224px_0px_overlap" and feat_dir.name == "features_synth"
    cohort = load_cohort(synth_cohort["labels_csv"], feat_dir)
    assert len(cohort.slides) == 24 and cohort.classes == ["clustered", "scattered"]
    assert not cohort.missing and not cohort.unlabelled
    steps = set()
    for path in cohort.slides.path:
        bag = read_bag(path)
        assert bag.reader == "trident" and bag.features.dtype == np.float16 and bag.dim == 16
        g = build_graph(bag)
        assert g.step_source == "attrs+coords" and g.off_grid == 0
        steps.add(g.step)
    assert steps == {224, 448}
    saved = json.loads((Path(synth_cohort["labels_csv"]).parent / "synth.json").read_text())
    assert saved["oracle_true_mask_accuracy"] == 1.0


def test_spatial_classes_differ_only_in_arrangement():
    cfg = SynthConfig(slides=40, dim=8, seed=1, min_patches=150, max_patches=300)
    slides, direction = generate(cfg)
    by = {c: [s for s in slides if s.label == c] for c in ("clustered", "scattered")}
    share = {c: np.mean([s.tumour.mean() for s in v]) for c, v in by.items()}
    assert abs(share["clustered"] - share["scattered"]) < 0.02  # same tumour load
    nf = {c: np.mean([neighbour_fraction(s.cells, s.tumour) for s in v]) for c, v in by.items()}
    assert nf["clustered"] > 0.6 and nf["scattered"] < 0.25
    proj = {c: np.mean([(s.features @ direction).mean() for s in v]) for c, v in by.items()}
    assert abs(proj["clustered"] - proj["scattered"]) < 0.1  # mean pooling sees no difference


def test_instance_variant_tumour_only_in_positive_slides():
    slides, _ = generate(SynthConfig(variant="instance", slides=10, dim=8))
    for s in slides:
        assert (s.tumour.sum() > 0) == (s.label == "tumour")


def test_same_seed_same_cohort_and_cases_group_slides():
    a, _ = generate(SynthConfig(slides=12, dim=4, seed=5))
    b, _ = generate(SynthConfig(slides=12, dim=4, seed=5))
    assert all(np.array_equal(x.features, y.features) for x, y in zip(a, b, strict=True))
    cases = {}
    for s in a:
        cases.setdefault(s.case_id, set()).add(s.label)
    assert all(len(v) == 1 for v in cases.values())
    assert len(cases) < len(a)


def test_refuses_to_overwrite_and_rejects_bad_config(tmp_path):
    cfg = SynthConfig(slides=4, dim=4, min_patches=20, max_patches=30)
    write_cohort(cfg, tmp_path)
    before = (tmp_path / "labels.csv").read_text()
    with pytest.raises(SrmilError, match="refusing to overwrite"):
        write_cohort(SynthConfig(slides=6, dim=4, min_patches=20, max_patches=30), tmp_path)
    assert (tmp_path / "labels.csv").read_text() == before
    with pytest.raises(ConfigError, match="unknown synth variant"):
        generate(SynthConfig(variant="nope"))


def _adjacent_pairs(cells: np.ndarray) -> int:
    """Number of 8-adjacent pairs among ``cells`` (brute force, the reference)."""
    d = np.abs(cells[:, None, :] - cells[None, :, :]).max(axis=2)
    return int(((d == 1).sum()) // 2)


def test_sparse_positives_hold_the_stated_share_of_isolated_tumour_patches():
    cfg = SynthConfig(variant="sparse", slides=30, dim=8, seed=2)
    slides, _ = generate(cfg)
    lo, hi = cfg.resolved().tumour_fraction
    assert (lo, hi) == (0.01, 0.06)
    pos = [s for s in slides if s.label == "tumour"]
    assert pos and len(pos) < len(slides)
    for s in slides:
        if s.label == "normal":
            assert s.tumour.sum() == 0
            continue
        n, m = len(s.cells), int(s.tumour.sum())
        assert max(1, round(lo * n)) <= m <= round(hi * n) + 1
        assert _adjacent_pairs(s.cells[s.tumour]) == 0  # isolated: no two 8-adjacent
        assert neighbour_fraction(s.cells, s.tumour) == 0.0


def test_mixed_lookalikes_in_both_classes_and_a_lesion_only_in_positives():
    cfg = SynthConfig(variant="mixed", slides=40, dim=8, seed=3)
    slides, _ = generate(cfg)
    for s in slides:
        mask = np.zeros(tuple((s.cells.max(axis=0) + 2).tolist()), dtype=bool)
        mask[s.cells[s.tumour, 0], s.cells[s.tumour, 1]] = True
        sizes = np.bincount(ndimage.label(mask, structure=np.ones((3, 3)))[0].ravel())[1:]
        share = s.tumour.mean()
        assert share > 0.01  # look-alikes everywhere, also in normal slides
        if s.label == "tumour":
            # one compact lesion (3-8 %) and isolated look-alikes (components of one patch)
            assert sizes.max() >= 0.03 * len(s.cells) - 1
            assert (sizes > 1).sum() == 1
        else:
            assert sizes.max() == 1  # only isolated look-alikes
    by = {c: [s.tumour.mean() for s in slides if s.label == c] for c in ("normal", "tumour")}
    # counting overlaps between the classes: some normal slide has more look-alikes than
    # some tumour slide has tumour-like patches
    assert max(by["normal"]) > min(by["tumour"])


@pytest.mark.parametrize(("variant", "count", "arrangement", "look"), [
    ("spatial", "chance", "high", "chance"),
    ("sparse", "high", "chance", "high"),
    ("mixed", "partial", "high", "partial"),
    ("instance", "high", "high", "high"),
])
def test_oracle_aucs_are_high_where_the_signal_is_and_chance_where_it_is_not(
        variant, count, arrangement, look):
    cfg = SynthConfig(variant=variant, slides=120, dim=16, seed=0, min_patches=100,
                      max_patches=300)
    slides, direction = generate(cfg)
    o = oracle(cfg, slides, direction)
    ranges = {"chance": (0.35, 0.65), "partial": (0.6, 0.97), "high": (0.85, 1.0)}
    for key, want in (("oracle_count_auc", count), ("oracle_arrangement_auc", arrangement),
                      ("oracle_look_auc", look)):
        lo, hi = ranges[want]
        assert lo <= o[key] <= hi, (key, o[key])


def test_old_variants_keep_their_defaults_and_the_json_holds_the_resolved_config(tmp_path):
    assert SynthConfig().resolved().tumour_fraction == (0.08, 0.15)
    assert SynthConfig(variant="regression").resolved().tumour_shift == 3.0
    assert SynthConfig(variant="sparse", tumour_shift=1.5).resolved().tumour_shift == 1.5
    s = write_cohort(SynthConfig(variant="sparse", slides=6, dim=4, min_patches=40,
                                 max_patches=60), tmp_path)
    saved = json.loads((tmp_path / "synth.json").read_text())
    assert saved["config"]["tumour_fraction"] == [0.01, 0.06]
    assert saved["config"]["tumour_shift"] == 2.0
    assert s["oracle_arrangement_auc"] == 0.5  # no isolated patch has a tumour neighbour
    with pytest.raises(ConfigError, match="tumour_fraction must be a range"):
        generate(SynthConfig(tumour_fraction=(0.3, 0.1)))


def test_cli_knobs_reach_the_cohort_and_a_bad_range_is_one_line(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "synth", tmp_path / "c", "--variant", "sparse", "--n-slides",
                           8, "--dim", 4, "--min-patches", 40, "--max-patches", 60,
                           "--tumour-fraction", "0.05,0.1", "--tumour-shift", 1.5,
                           "--tissue-spread", 2)
    assert code == 0 and "oracle AUC" in out and "shift 1.5" in out
    cfg = json.loads((tmp_path / "c" / "synth.json").read_text())["config"]
    assert cfg["tumour_fraction"] == [0.05, 0.1] and cfg["tissue_spread"] == 2.0
    code, _, err = run_cli(capsys, "synth", tmp_path / "d", "--tumour-fraction", "0.5,0.1")
    assert code == 2 and "tumour_fraction must be a range" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "d" / "labels.csv").exists()
