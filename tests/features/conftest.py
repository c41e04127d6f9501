"""Fixtures of the feature tests."""

import pytest
from feature_fakes import ArraySlide, tissue_image


@pytest.fixture
def array_slide() -> ArraySlide:
    return ArraySlide(tissue_image())
