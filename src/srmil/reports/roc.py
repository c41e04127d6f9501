"""ROC curves of several runs on their pooled test predictions (matplotlib)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from srmil.reports.figures import save_figure, subplots


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike,
               title: str = "Test ROC (pooled over folds)") -> Path:
    """Write one ROC curve per model.

    Args:
        curves: model → (y (S,), prob (S, C)) pooled over folds. Binary: the curve of class 1;
            C > 2: the micro-average of the one-vs-rest curves.
        path: PNG to write (atomically; replaced if present).
    """
    from sklearn.metrics import auc, roc_curve
    from sklearn.preprocessing import label_binarize

    fig, ax = subplots(figsize=(5.5, 5), dpi=120)
    for name, (y, p) in curves.items():
        c = p.shape[1]
        if c == 2:
            fpr, tpr, _ = roc_curve(y, p[:, 1])
        else:
            fpr, tpr, _ = roc_curve(label_binarize(y, classes=range(c)).ravel(), p.ravel())
        ax.plot(fpr, tpr, lw=1.6, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title,
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, overwrite=True)


def pooled(tables: dict[int, pd.DataFrame]) -> tuple[np.ndarray, np.ndarray]:
    """(y, prob) of the test rows of every fold, concatenated."""
    t = pd.concat(tables.values(), ignore_index=True)
    probs = t[[c for c in t.columns if c.startswith("prob_")]].to_numpy(dtype=float)
    return t["target"].to_numpy(), probs
