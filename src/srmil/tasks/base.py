"""The task seam (ARCHITECTURE.md: "the task is a head and a loss chosen by config").

A :class:`Task` knows:

- its label columns and how to parse and check them (:meth:`Task.parse_labels`: one-line
  ``CohortError`` naming the labels file and the line);
- its output size (``out_dim``: C logits, ``bins`` hazards or 1 risk, 1 value), which every
  model gets as the size of its last layer;
- its loss (:meth:`Task.loss`, from ``TASK_LOSSES``), which models call in place of a
  hard-coded cross-entropy;
- what it learns from the training split of a fold (:meth:`Task.fit`: survival time bins,
  regression mean and std), saved with the fold (:meth:`Task.state`);
- how outputs become predictions (:meth:`Task.transform`, :meth:`Task.table`), its metrics and
  its model-selection key.

Targets are fold-independent (class index; ``(time, event)``; the raw value), so one cached
bag serves every fold; what depends on the fold (bins, standardisation) lives in the task.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from torch import Tensor

from srmil.errors import CohortError
from srmil.registry import Registry

log = logging.getLogger(__name__)

TASKS: Registry[type] = Registry("task")
TASK_LOSSES: Registry[Callable[..., Tensor]] = Registry("task loss")

SURVIVAL_COLUMNS = (("time", "event"), ("survival_months", "censorship"))


def infer_task(columns: Sequence[str], source: str | os.PathLike | None = None) -> str:
    """The task a labels CSV's columns describe, logged in one line (INFO; DEBUG for the
    default, classification).

    ``label`` → classification; ``time`` + ``event`` or ``survival_months`` + ``censorship``
    → survival; ``target`` → regression.

    Raises:
        CohortError: none of these columns.
    """
    cols = set(columns)
    if "label" in cols:
        name, why = "classification", "label"
    elif any(set(pair) <= cols for pair in SURVIVAL_COLUMNS):
        pair = next(p for p in SURVIVAL_COLUMNS if set(p) <= cols)
        name, why = "survival", " + ".join(pair)
    elif "target" in cols:
        name, why = "regression", "target"
    else:
        raise CohortError(
            "no label column: need 'label' (classification), 'time' + 'event' or "
            "'survival_months' + 'censorship' (survival), or 'target' (regression); found: "
            f"{', '.join(columns)}", source)
    # classification is the default: said at debug level, so its output stays as it was
    log.log(logging.DEBUG if name == "classification" else logging.INFO,
            "task: %s (from the column(s) %s of %s)", name, why,
            os.path.basename(str(source)) if source else "the labels")
    return name


def numeric_column(df: pd.DataFrame, col: str, source: str | os.PathLike | None) -> np.ndarray:
    """A column of strings as float64; an empty, non-numeric or non-finite cell is one line
    naming the file and the line (header = line 1)."""
    raw = df[col].astype(str).str.strip()
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        i = int(bad[0])
        what = "is empty" if raw.iloc[i] == "" else f"{raw.iloc[i]!r} is not a finite number"
        raise CohortError(f"line {i + 2}: {col} {what}", source)
    return values


def nan_key(*values: float) -> tuple[float, ...]:
    """Sort key where NaN counts as the worst value."""
    return tuple(-math.inf if math.isnan(v) else v for v in values)


class Task:
    """Base class of the tasks; subclasses are registered in ``TASKS``.

    Attributes:
        name: registry key.
        loss_name: prefix of the logged loss parts (``ce``, ``nll``, ``mse``…).
        summary_metrics: the test metrics of the CV summary and of ``compare``.
        select_metric: the validation metric model selection maximises (or minimises).
    """

    name: ClassVar[str]
    summary_metrics: ClassVar[tuple[str, ...]]
    select_metric: ClassVar[str]
    loss_name: str = "loss"
    batch_level: bool = False  # the loss compares the bags of a step (Cox): no per-bag value

    @classmethod
    def parse_labels(cls, df: pd.DataFrame, source: str | os.PathLike | None,
                     **kwargs: Any) -> pd.DataFrame:
        """Check the task's columns; set ``label`` (the stratum folds are balanced on) and
        ``target`` (what the model is trained on). Raises ``CohortError``."""
        raise NotImplementedError

    @property
    def out_dim(self) -> int:
        raise NotImplementedError

    def fit(self, targets: list[Any]) -> None:
        """Learn what the task needs from the training split's targets (default: nothing)."""

    def state(self) -> dict[str, Any]:
        """JSON-ready description, enough to rebuild the fitted task (:func:`task_of_state`)."""
        return {"task": self.name}

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        """Scalar loss of one bag's outputs (K,) against its target."""
        raise NotImplementedError

    def loss_rows(self, out: Tensor, target: Tensor) -> Tensor:
        """Mean loss of several outputs (B, K) of one bag (e.g. DTFD's pseudo-bags)."""
        return sum(self.loss(o, target) for o in out) / out.shape[0]

    def batch_loss(self, out: Tensor, target: Tensor) -> Tensor:
        """Loss of a batch of outputs (B, K) against their B targets (stacked): the mean
        per-bag loss, or the batch-level loss (``batch_level``)."""
        return sum(self.loss(o, t) for o, t in zip(out, target, strict=True)) / out.shape[0]

    def fit_outputs(self, train_outputs: np.ndarray) -> None:
        """Learn from the trained model's (S, M) outputs on the training split what the
        predictions need (Cox: Breslow's baseline hazard); default: nothing."""

    def transform(self, out: Tensor) -> np.ndarray:
        """Eval outputs (K,) → the prediction row the metrics and tables use (M,)."""
        raise NotImplementedError

    def score(self, out: Tensor) -> Tensor:
        """The differentiable scalar a heatmap explains (survival: the risk; regression: the
        value in standard units)."""
        raise NotImplementedError

    def describe(self, row: np.ndarray) -> str:
        """One prediction row in words, for heatmap titles."""
        return ", ".join(f"{v:.3g}" for v in row)

    def table(self, outputs: np.ndarray, targets: list[Any] | None) -> dict[str, Any]:
        """Prediction-table columns (target columns first) from (S, M) outputs."""
        raise NotImplementedError

    def metrics(self, targets: list[Any], outputs: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def selection_key(self, metrics: dict[str, Any]) -> tuple[float, ...]:
        raise NotImplementedError

    def history(self, metrics: dict[str, Any]) -> dict[str, float]:
        """``val_*`` columns of ``history.csv``."""
        return {f"val_{m}": metrics.get(m, np.nan) for m in self.summary_metrics}

    def outputs_of(self, table: pd.DataFrame) -> np.ndarray:
        """(S, M) outputs back from a predictions table (inverse of :meth:`table`)."""
        raise NotImplementedError

    def targets_of(self, table: pd.DataFrame) -> list[Any]:
        """Targets back from a predictions table."""
        raise NotImplementedError

    def metric_fn(self, metric: str, targets: list[Any], outputs: np.ndarray
                  ) -> Callable[[np.ndarray], float]:
        """``idx → metric`` on a resample of the given slides (bootstrap CIs)."""
        t = np.empty(len(targets), dtype=object)
        t[:] = targets

        def fn(idx: np.ndarray) -> float:
            return float(self.metrics(list(t[idx]), outputs[idx]).get(metric, np.nan))

        return fn


def make_task(name: str, cfg: Any = None, classes: list[str] | None = None) -> Task:
    """A registered task built from the run config (``cfg``: a ``RunConfig``)."""
    cls = TASKS.get(name)
    return cls.from_run_config(cfg, classes or [])


def task_of_state(state: dict[str, Any] | None, classes: list[str]) -> Task:
    """Rebuild a fitted task from :meth:`Task.state` (``None``: classification)."""
    if not state:
        return TASKS.get("classification").from_state({}, classes)
    return TASKS.get(state["task"]).from_state(state, classes)
