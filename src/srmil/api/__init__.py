"""The application layer: one documented function per job the ``srmil`` command runs.

A notebook and the CLI call the same functions::

    from srmil import api
    cohort = api.synth("cohort", SynthConfig(slides=24))
    run = api.cv(cohort.labels, cohort.bags, "runs/abmil", RunConfig(model="abmil"))
    api.predict(run.path, cohort.bags).table
    api.heatmap(run.path, cohort.bags, "heatmaps")

Each takes paths and typed configs (:mod:`srmil.config`), returns a typed result
(:mod:`srmil.api.results`), raises :class:`~srmil.errors.SrmilError` subclasses for bad input
(one line: ``path: problem``), never prints and never exits. Progress and warnings go to the
``srmil`` logger; the CLI attaches the handlers (``--quiet``, ``--verbose``).
"""

from __future__ import annotations

from srmil.api.inference import evaluate, predict
from srmil.api.reports import heatmap, report
from srmil.api.results import (
    CompareResult,
    DemoResult,
    EvaluateResult,
    HeatmapResult,
    JobResult,
    ModelInfo,
    PredictResult,
    ReportResult,
    RunResult,
    SynthResult,
)
from srmil.api.runs import (
    check,
    compare,
    cv,
    demo,
    init_config,
    load_training_cohort,
    models,
    resolve_executor_config,
    resolve_run_config,
    summarise,
    synth,
    train,
)
from srmil.api.slides import extract, patch, segment
from srmil.training.rundir import ComparisonDir, RunDir

__all__ = [
    "CompareResult", "ComparisonDir", "DemoResult", "EvaluateResult", "HeatmapResult",
    "JobResult", "ModelInfo", "PredictResult", "ReportResult", "RunDir", "RunResult",
    "SynthResult", "check", "compare", "cv", "demo", "evaluate", "extract", "heatmap",
    "init_config", "load_training_cohort", "models", "patch", "predict", "report",
    "resolve_executor_config", "resolve_run_config", "segment", "summarise", "synth", "train",
]
