"""Fixtures of the feature tests."""

from pathlib import Path

import pytest
from feature_fakes import ArraySlide, tissue_image

from fixture_files import fixture_file


@pytest.fixture
def array_slide() -> ArraySlide:
    return ArraySlide(tissue_image())


@pytest.fixture(scope="session")
def svs_path() -> Path:
    """OpenSlide's CMU-1-Small-Region (``make fixtures``); the test fails when it is missing."""
    return fixture_file("cmu_small_region.svs")
