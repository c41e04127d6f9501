"""srmil: spatially regularised multiple-instance learning for whole-slide images.

The public API is re-exported here lazily (PEP 562), so that ``import srmil`` and the command
line start without importing torch, scikit-learn or h5py until something needs them. The jobs
of the command line are functions of :mod:`srmil.api` (``srmil.cv``, ``srmil.predict``, …).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

# a library's logger stays silent until the application configures logging (the CLI does)
logging.getLogger("srmil").addHandler(logging.NullHandler())

__version__ = "0.1.0"

_EXPORTS = {
    "FeatureBag": "srmil.bags.bag",
    "Cohort": "srmil.bags.cohort", "load_cohort": "srmil.bags.cohort",
    "read_labels": "srmil.bags.cohort",
    "BAG_READERS": "srmil.bags.readers", "find_bags": "srmil.bags.readers",
    "read_bag": "srmil.bags.readers",
    "make_splits": "srmil.bags.splits", "read_splits": "srmil.bags.splits",
    "GraphConfig": "srmil.config", "SplitConfig": "srmil.config", "SynthConfig": "srmil.config",
    "Problem": "srmil.errors", "SrmilError": "srmil.errors",
    "SpatialGraph": "srmil.graphs.grid", "build_edge_index": "srmil.graphs.grid",
    "build_graph": "srmil.graphs.grid",
    "SLIDE_READERS": "srmil.slides", "open_slide": "srmil.slides",
    "ENCODERS": "srmil.features", "create_encoder": "srmil.features",
    "extract_slide": "srmil.features",
    "MODELS": "srmil.models", "create_model": "srmil.models",  # the package registers them all
    "heatmap_run": "srmil.reports.slide_heatmaps",
    "RunConfig": "srmil.config", "TrainConfig": "srmil.config", "HeatmapConfig": "srmil.config",
    "ExtractConfig": "srmil.config", "PatchConfig": "srmil.config",
    "TissueConfig": "srmil.config",
    "RunDir": "srmil.training.rundir", "ComparisonDir": "srmil.training.rundir",
    **{name: "srmil.api" for name in (
        "synth", "check", "train", "cv", "predict", "evaluate", "compare", "heatmap",
        "report", "segment", "patch", "extract", "demo")},  # not models: the package srmil.models
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name == "api":
        return importlib.import_module("srmil.api")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'srmil' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
