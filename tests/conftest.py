import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py

from srmil.bags.synth import write_cohort  # noqa: E402
from srmil.config import SynthConfig  # noqa: E402


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory) -> dict:
    """A small built-in spatial cohort, written once per test session (read-only for tests)."""
    out = tmp_path_factory.mktemp("synth")
    return write_cohort(SynthConfig(slides=24, dim=16, min_patches=60, max_patches=200), out)
