"""One tiny trained cross-validation run shared by the report tests (trained once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixture_files import fixture_file
from srmil.bags.synth import write_cohort
from srmil.cli.main import main
from srmil.config import SynthConfig


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> dict:
    """A 2-fold SRMIL run (2 epochs) on 12 synthetic slides of dimension 8."""
    root = tmp_path_factory.mktemp("report_run")
    s = write_cohort(SynthConfig(slides=12, dim=8, min_patches=50, max_patches=120, seed=3),
                     root / "cohort")
    run = root / "run"
    with pytest.raises(SystemExit) as e:
        main(["cv", "--labels", s["labels_csv"], "--features", s["features_dir"],
              "--out", str(run), "--model", "srmil", "--epochs", "2", "--accelerator", "cpu",
              "--set", "split.folds=2", "--set", "train.bootstrap=50"])
    assert e.value.code == 0
    return {"run": run, "bags": Path(s["features_dir"]), "labels": Path(s["labels_csv"])}


@pytest.fixture
def cmu_svs() -> Path:
    """OpenSlide's real CMU-1-Small-Region Aperio slide, fetched by ``make fixtures``."""
    return fixture_file("cmu_small_region.svs")


@pytest.fixture
def unreadable_svs() -> Path:
    """OpenSlide's slide that opens, then fails on the first pixel read."""
    return fixture_file("unreadable.svs")
