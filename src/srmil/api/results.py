"""What the application layer's jobs return: typed results, plain data and paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from srmil.reports.check import CheckReport
    from srmil.reports.slide_heatmaps import SlideResult
    from srmil.slides.job import StatusRow
    from srmil.slides.pipeline import JobLayout
    from srmil.training.rundir import ComparisonDir, RunDir


@dataclass(frozen=True)
class SynthResult:
    """A synthetic cohort written by :func:`srmil.api.synth`.

    Attributes:
        labels: the labels CSV.
        bags: the directory of feature bags.
        summary: config, class counts and oracle accuracies (``synth.json``).
    """

    labels: Path
    bags: Path
    summary: dict[str, Any]


@dataclass(frozen=True)
class RunResult:
    """A trained run (:func:`srmil.api.train`, :func:`srmil.api.cv`).

    Attributes:
        run: the run directory (paths and readers).
        summary: per-metric mean ± std and 95 % CI of the test split (``summary.json``);
            empty while folds are missing.
        folds: one row per trained fold (``summary.csv``), or ``None`` while folds are missing.
        missing: a ``--fold`` job's view: each fold not yet done → its state (``training
            (pid@host)``, ``not started`` …); empty once the run is summarised.
    """

    run: RunDir
    summary: dict[str, Any]
    folds: pd.DataFrame | None
    missing: dict[int, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.run.path


@dataclass(frozen=True)
class PredictResult:
    """Slide (or case) predictions of a run (:func:`srmil.api.predict`).

    Attributes:
        table: ``slide_id, folds, pred, prob_<class>…`` (one row per bag; a patient-level run
            given the cases: ``case_id, slides, folds, …``, one row per case).
        folds: the folds whose models were averaged.
        path: the CSV written, or ``None``.
        metrics: with a labelled CSV, the ensemble's metrics (``unit``: slide or case), else
            ``None``.
        metrics_path: the metrics JSON written beside the CSV, or ``None``.
    """

    table: pd.DataFrame
    folds: list[int]
    path: Path | None = None
    metrics: dict[str, Any] | None = None
    metrics_path: Path | None = None


@dataclass(frozen=True)
class EvaluateResult:
    """Metrics of a run's models on its test splits or an external cohort.

    Attributes:
        metrics: ``{"fold_K": {...}, ["ensemble": {...}]}``: n, auc, accuracy, balanced_accuracy,
            f1 (and more, from :func:`srmil.training.metrics.classification_metrics`).
        predictions: ``slide_id, fold, label, target, pred, prob_<class>…``.
        external: whether an external cohort was evaluated.
        warnings: what makes the numbers less than they seem (also logged).
        out: the directory with ``metrics.json`` and ``predictions.csv``, or ``None``.
    """

    metrics: dict[str, dict[str, Any]]
    predictions: pd.DataFrame
    external: bool
    warnings: list[str] = field(default_factory=list)
    out: Path | None = None


@dataclass(frozen=True)
class CompareResult:
    """A comparison of model specs on identical folds (:func:`srmil.api.compare`).

    Attributes:
        table: one row per spec (``comparison.csv``).
        markdown: the same as a markdown table (``comparison.md``).
        comparison: the comparison directory (paths, one :class:`RunDir` per spec).
        roc: the pooled test ROC figure (``None`` for survival and regression, and while
            folds are missing).
        missing: a ``--spec``/``--fold`` job's view: spec → its folds not yet done → their
            state; empty once the table is written (then ``table`` is empty until then).
    """

    table: pd.DataFrame
    markdown: str
    comparison: ComparisonDir
    roc: Path | None
    missing: dict[str, dict[int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class HeatmapResult:
    """Heatmaps of a run's per-patch scores (:func:`srmil.api.heatmap`).

    Attributes:
        slides: one result per slide (status ``done`` | ``skipped`` | ``failed``).
        out: the output directory (``index.csv`` and one folder per slide).
    """

    slides: list[SlideResult]
    out: Path

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.slides)

    @property
    def failed(self) -> list[SlideResult]:
        return [r for r in self.slides if r.status == "failed"]


@dataclass(frozen=True)
class ReportResult:
    """The HTML report of a run (:func:`srmil.api.report`)."""

    path: Path


@dataclass(frozen=True)
class JobResult:
    """Slide stages run on one job directory (:func:`srmil.api.segment`, ``patch``, ``extract``).

    Attributes:
        stages: stage → one status row per slide (``done`` | ``skipped`` | ``failed``).
        layout: the job directory layout (status tables, outputs).
        encoder: the features stage's encoder name, or ``None``.
        workers: ``--devices N``: each worker process's own rows (``stages`` merges them:
            the row of the worker that did the work); empty for one process.
    """

    stages: dict[str, list[StatusRow]]
    layout: JobLayout
    encoder: str | None = None
    workers: tuple[dict[str, list[StatusRow]], ...] = ()

    def counts(self) -> dict[str, dict[str, int]]:
        """{stage: {done, skipped, failed}}."""
        from srmil.slides.pipeline import summarize

        return summarize(self.stages)

    @property
    def failed(self) -> bool:
        return any(r.status == "failed" for rows in self.stages.values() for r in rows)


@dataclass(frozen=True)
class DemoResult:
    """The built-in demo (:func:`srmil.api.demo`): cohort, check and 5-fold run."""

    cohort: SynthResult
    check: CheckReport
    run: RunResult | None
    seconds: float


@dataclass(frozen=True)
class ModelInfo:
    """A registered MIL model (:func:`srmil.api.models`)."""

    name: str
    summary: str
    uses_graph: bool
    score_kind: str
    defaults: dict[str, Any]


__all__ = ["CompareResult", "DemoResult", "EvaluateResult", "HeatmapResult", "JobResult",
           "ModelInfo", "PredictResult", "ReportResult", "RunResult", "SynthResult"]
