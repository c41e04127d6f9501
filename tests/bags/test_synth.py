import json
from pathlib import Path

import numpy as np
import pytest

from srmil.bags.cohort import load_cohort
from srmil.bags.readers import read_bag
from srmil.bags.synth import generate, neighbour_fraction, write_cohort
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
