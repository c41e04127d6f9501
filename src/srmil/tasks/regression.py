"""Regression: one continuous slide-level target (e.g. a biomarker score).

Targets are standardised on the training split of each fold (mean and std saved with the fold);
the model emits one value in standard units, reported back in the target's units. Losses: MSE
(default) or Huber (its ``delta`` in training standard deviations). Selection by validation MAE.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import torch.nn.functional as F
from torch import Tensor

from srmil.errors import CohortError
from srmil.tasks.base import TASK_LOSSES, TASKS, Task, nan_key, numeric_column


@TASK_LOSSES.register("mse")
def mse_loss(pred: Tensor, target: Tensor, delta: float = 1.0) -> Tensor:
    """Mean squared error (standardised units)."""
    return F.mse_loss(pred, target)


@TASK_LOSSES.register("huber")
def huber_loss(pred: Tensor, target: Tensor, delta: float = 1.0) -> Tensor:
    """Huber loss (Huber, *Robust estimation of a location parameter*, Ann. Math. Statist.
    1964): quadratic within ``delta``, linear beyond."""
    return F.huber_loss(pred, target, delta=delta)


@TASKS.register("regression")
class RegressionTask(Task):
    """A numeric ``target`` column; see the module docstring."""

    name = "regression"
    summary_metrics = ("mae", "rmse", "r2", "pearson", "spearman")
    select_metric = "mae"

    def __init__(self, loss: str = "mse", huber_delta: float = 1.0) -> None:
        self._loss = TASK_LOSSES.get(loss)
        if loss not in ("mse", "huber"):
            raise CohortError(f"regression.loss {loss!r}: choose from huber, mse")
        self.loss_name = loss
        self.delta = huber_delta
        self.mean, self.std = 0.0, 1.0

    @classmethod
    def from_run_config(cls, cfg: Any, classes: list[str]) -> RegressionTask:
        return cls(cfg.regression.loss, cfg.regression.huber_delta)

    @classmethod
    def from_state(cls, state: dict[str, Any], classes: list[str]) -> RegressionTask:
        t = cls(state["loss"], state["huber_delta"])
        t.mean, t.std = float(state["mean"]), float(state["std"])
        return t

    def state(self) -> dict[str, Any]:
        return {"task": self.name, "loss": self.loss_name, "huber_delta": self.delta,
                "mean": self.mean, "std": self.std}

    @classmethod
    def parse_labels(cls, df: pd.DataFrame, source: str | os.PathLike | None,
                     strata: int = 4, **kwargs: Any) -> pd.DataFrame:
        """A finite numeric ``target``; ``label`` becomes its quantile stratum ``q1…``."""
        if "target" not in df.columns:
            raise CohortError(f"regression needs a 'target' column; found: "
                              f"{', '.join(df.columns)}", source)
        values = numeric_column(df, "target", source)
        out = df.copy()
        q = pd.qcut(pd.Series(values).rank(method="first"), q=min(strata, len(values)),
                    labels=False) if len(values) else pd.Series([], dtype=int)
        out["label"] = [f"q{int(i) + 1}" for i in q]
        out["target"] = values
        return out

    @property
    def out_dim(self) -> int:
        return 1

    def fit(self, targets: list[Any]) -> None:
        """Mean and std of the training split's targets (std 1 when they are all equal)."""
        y = np.asarray(targets, dtype=np.float64)
        self.mean = float(y.mean())
        sd = float(y.std())
        self.std = sd if sd > 0 else 1.0

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        z = (target.view(1).to(out.dtype) - self.mean) / self.std  # (1,)
        return self._loss(out.view(1), z, self.delta)

    def transform(self, out: Tensor) -> np.ndarray:
        return (out.double().view(1) * self.std + self.mean).cpu().numpy()  # (1,) in units

    def score(self, out: Tensor) -> Tensor:
        return out.view(-1)[0]  # standard units: the gradient's sign is the value's

    def describe(self, row: np.ndarray) -> str:
        return f"predicted {row[0]:.3g}"

    def table(self, outputs: np.ndarray, targets: list[Any] | None) -> dict[str, Any]:
        cols: dict[str, Any] = {}
        if targets is not None:
            cols["target"] = [float(t) for t in targets]
        cols["pred"] = outputs[:, 0] if len(outputs) else []
        return cols

    def outputs_of(self, table: pd.DataFrame) -> np.ndarray:
        return table[["pred"]].to_numpy(dtype=float)

    def targets_of(self, table: pd.DataFrame) -> list[Any]:
        return table["target"].astype(float).tolist()

    def metrics(self, targets: list[Any], outputs: np.ndarray) -> dict[str, Any]:
        from srmil.training.metrics import regression_metrics

        return regression_metrics(np.asarray(targets, dtype=np.float64), outputs[:, 0])

    def metric_fn(self, metric: str, targets: list[Any], outputs: np.ndarray):
        from srmil.training.metrics import regression_metrics

        y = np.asarray(targets, dtype=np.float64)
        return lambda idx: regression_metrics(y[idx], outputs[idx, 0])[metric]

    def selection_key(self, metrics: dict[str, Any]) -> tuple[float, ...]:
        return nan_key(-metrics["mae"])
