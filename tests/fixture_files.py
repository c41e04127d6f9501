"""The real test slides fetched by ``make fixtures``: one place for their folder and for the
failure (never a skip) when one is missing. Used by the slide and feature tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from fetch_fixtures import CACHE as FIXTURES  # .cache/fixtures, where `make fixtures` writes

__all__ = ["FIXTURES", "fixture_file"]


def fixture_file(name: str) -> Path:
    """``FIXTURES / name``; fails the test (``run `make fixtures```) when it is missing."""
    p = FIXTURES / name
    if not p.is_file() or p.stat().st_size == 0:
        pytest.fail(f"{p} is missing: run `make fixtures` (fetches the real test slides)",
                    pytrace=False)
    return p
