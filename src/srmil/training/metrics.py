"""Slide-level metrics from scikit-learn, and bootstrap confidence intervals.

AUC is undefined when a split lacks a class: it is reported as NaN instead of crashing (the
reference crashes); the trainer warns once per fold when a split lacks a class.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)


def auc(y: np.ndarray, prob: np.ndarray, n_classes: int) -> tuple[float, list[float]]:
    """Binary AUC (positive = class 1), or macro one-vs-rest AUC with per-class values.

    Args:
        y: (S,) class indices.
        prob: (S, C) probabilities.

    Returns:
        (auc, per-class one-vs-rest AUCs); NaN where a class is missing from ``y``.
    """
    y = np.asarray(y)
    per = []
    for c in range(n_classes):
        pos = y == c
        per.append(float(roc_auc_score(pos, prob[:, c])) if 0 < pos.sum() < len(y) else np.nan)
    if n_classes == 2:
        return per[1], per
    return (float(np.mean(per)) if not np.isnan(per).any() else np.nan), per


def classification_metrics(y: np.ndarray, prob: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Accuracy, balanced accuracy, AUC (binary; macro and per-class OvR for C > 2), F1
    (binary: of class 1; else macro), confusion matrix, per-class recall and precision, from
    true labels and probabilities."""
    y = np.asarray(y, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    pred = prob.argmax(axis=1)
    labels = list(range(n_classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns for classes absent from y
        a, per = auc(y, prob, n_classes)
        out = {
            "n": int(len(y)),
            "accuracy": float(accuracy_score(y, pred)) if len(y) else np.nan,
            "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if len(y) else np.nan,
            "auc": a,
            "f1": float(f1_score(y, pred, labels=labels,
                                 average="binary" if n_classes == 2 else "macro",
                                 zero_division=0)) if len(y) else np.nan,
            "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
            # per class, in class order; 0 where a class has no slide (recall) or no
            # prediction (precision)
            "recall_per_class": recall_score(y, pred, labels=labels, average=None,
                                             zero_division=0).tolist() if len(y) else [],
            "precision_per_class": precision_score(y, pred, labels=labels, average=None,
                                                   zero_division=0).tolist() if len(y) else [],
        }
    if n_classes > 2:
        out["auc_per_class"] = per
    return out


def _rank_auc(pos: np.ndarray, score: np.ndarray) -> float:
    """Mann–Whitney AUC (ties count one half); NaN when one side is empty."""
    n1 = int(pos.sum())
    n0 = len(pos) - n1
    if n1 == 0 or n0 == 0:
        return np.nan
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def fast_metric(metric: str, y: np.ndarray, p: np.ndarray, n_classes: int) -> float:
    """The value :func:`classification_metrics` gives for ``metric``, computed with numpy only
    (thousands of bootstrap resamples; sklearn's per-call overhead dominates there)."""
    if metric in ("ece", "brier"):  # calibration (training/calibration.py): numpy already
        from srmil.training.calibration import brier, ece

        return ece(y, p) if metric == "ece" else brier(y, p)
    if metric == "auc":
        per = [_rank_auc(y == c, p[:, c]) for c in range(n_classes)]
        return per[1] if n_classes == 2 else float(np.mean(per))
    pred = p.argmax(axis=1)
    if metric == "accuracy":
        return float((pred == y).mean())
    cm = np.bincount(y * n_classes + pred, minlength=n_classes**2).reshape(n_classes, n_classes)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    if metric == "balanced_accuracy":
        present = support > 0
        return float(np.mean(tp[present] / support[present]))
    if metric == "f1":
        denom = support + predicted
        f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
        return float(f1[1]) if n_classes == 2 else float(f1.mean())
    raise ValueError(f"unknown metric {metric!r}")


def bootstrap_ci(
    folds: list[tuple[np.ndarray, np.ndarray]], n_classes: int, metric: str,
    n_boot: int = 1000, seed: int = 0,
) -> tuple[float, float]:
    """95 % bootstrap CI of the mean-over-folds ``metric``: slides are resampled within each
    fold's test set, the metric is computed per fold and averaged.

    Args:
        folds: (y (S,), prob (S, C)) per fold.
        metric: a key of :func:`classification_metrics` (``auc``, ``accuracy``…).
    """
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(n_boot):
        vals = []
        for y, p in folds:
            idx = rng.integers(0, len(y), len(y))
            vals.append(fast_metric(metric, y[idx], p[idx], n_classes))
        if not np.isnan(vals).any():
            means.append(np.mean(vals))
    if len(means) < max(10, n_boot // 10):
        return (np.nan, np.nan)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def paired_bootstrap(
    folds_a: list[tuple[np.ndarray, np.ndarray]], folds_b: list[np.ndarray], n_classes: int,
    metric: str = "auc", n_boot: int = 1000, seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap of the mean-over-folds difference ``metric(a) − metric(b)``.

    Both models were tested on the same slides of each fold; one resample of a fold's test
    slides is applied to both.

    Args:
        folds_a: (y, prob_a) per fold.
        folds_b: prob_b per fold, rows in the same order as ``folds_a``.

    Returns:
        ``diff`` (observed), ``ci95_lo``, ``ci95_hi`` and a two-sided ``p`` (twice the share of
        resamples on the other side of 0, at most 1).
    """
    rng = np.random.default_rng(seed)
    observed = np.mean([fast_metric(metric, y, pa, n_classes) - fast_metric(metric, y, pb,
                                                                               n_classes)
                        for (y, pa), pb in zip(folds_a, folds_b, strict=True)])
    diffs = []
    for _ in range(n_boot):
        d = []
        for (y, pa), pb in zip(folds_a, folds_b, strict=True):
            idx = rng.integers(0, len(y), len(y))
            d.append(fast_metric(metric, y[idx], pa[idx], n_classes)
                     - fast_metric(metric, y[idx], pb[idx], n_classes))
        if not np.isnan(d).any():
            diffs.append(np.mean(d))
    if len(diffs) < max(10, n_boot // 10):
        return {"diff": float(observed), "ci95_lo": np.nan, "ci95_hi": np.nan, "p": np.nan}
    diffs = np.asarray(diffs)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    side = (diffs <= 0).mean() if observed > 0 else (diffs >= 0).mean()
    return {"diff": float(observed), "ci95_lo": float(lo), "ci95_hi": float(hi),
            "p": float(min(1.0, 2 * side))}
