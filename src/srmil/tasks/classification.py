"""Classification: C logits, cross-entropy, softmax probabilities; selection by validation
accuracy then AUC (METHOD.md). Exactly the behaviour srmil had before tasks existed."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import torch.nn.functional as F
from torch import Tensor

from srmil.tasks.base import TASK_LOSSES, TASKS, Task


@TASK_LOSSES.register("ce")
def classification_loss(out: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy of one bag's logits (C,) against its class index (scalar tensor).

    The one place the classification loss is computed: a per-class weighting hooks in here.
    """
    return F.cross_entropy(out[None], target.view(1))


@TASKS.register("classification")
class ClassificationTask(Task):
    """Slide labels ``label`` (class names, sorted → indices)."""

    name = "classification"
    summary_metrics = ("auc", "accuracy", "balanced_accuracy", "f1")
    select_metric = "accuracy"
    loss_name = "ce"

    def __init__(self, classes: list[str]) -> None:
        self.classes = list(classes)

    @classmethod
    def from_run_config(cls, cfg: Any, classes: list[str]) -> ClassificationTask:
        return cls(classes)

    @classmethod
    def from_state(cls, state: dict[str, Any], classes: list[str]) -> ClassificationTask:
        return cls(classes)

    @classmethod
    def parse_labels(cls, df: pd.DataFrame, source: str | os.PathLike | None,
                     **kwargs: Any) -> pd.DataFrame:
        return df  # the cohort checks ``label`` and maps it to class indices

    @property
    def out_dim(self) -> int:
        return len(self.classes)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        return classification_loss(out, target)

    def loss_rows(self, out: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(out, target.view(1).expand(out.shape[0]))

    def transform(self, out: Tensor) -> np.ndarray:
        return out.softmax(-1).cpu().numpy()  # (C,)

    def table(self, outputs: np.ndarray, targets: list[Any] | None) -> dict[str, Any]:
        cols: dict[str, Any] = {}
        if targets is not None:
            cols["label"] = [self.classes[t] for t in targets]
            cols["target"] = targets
        idx = outputs.argmax(axis=1) if len(outputs) else np.zeros(0, dtype=int)
        cols["pred"] = [self.classes[i] for i in idx]
        for c, name in enumerate(self.classes):
            cols[f"prob_{name}"] = outputs[:, c] if len(outputs) else []
        return cols

    def outputs_of(self, table: pd.DataFrame) -> np.ndarray:
        return table[[c for c in table.columns if c.startswith("prob_")]].to_numpy(dtype=float)

    def targets_of(self, table: pd.DataFrame) -> list[Any]:
        return table["target"].astype(int).tolist()

    def metrics(self, targets: list[Any], outputs: np.ndarray) -> dict[str, Any]:
        from srmil.training.metrics import classification_metrics

        return classification_metrics(np.asarray(targets), outputs, len(self.classes))

    def selection_key(self, metrics: dict[str, Any]) -> tuple[float, ...]:
        from srmil.training.selection import selection_key

        return selection_key(metrics["accuracy"], metrics["auc"])

    def history(self, metrics: dict[str, Any]) -> dict[str, float]:
        return {"val_accuracy": metrics["accuracy"], "val_auc": metrics["auc"],
                "val_balanced_accuracy": metrics["balanced_accuracy"], "val_f1": metrics["f1"]}

    def metric_fn(self, metric: str, targets: list[Any], outputs: np.ndarray):
        from srmil.training.metrics import fast_metric

        y = np.asarray(targets, dtype=np.int64)
        return lambda idx: fast_metric(metric, y[idx], outputs[idx], len(self.classes))
