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
    fns = [((lambda idx, y=y, p=p: fast_metric(metric, y[idx], p[idx], n_classes)), len(y))
           for y, p in folds]
    return bootstrap_ci_fn(fns, n_boot, seed)


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
    pairs = [((lambda idx, y=y, pa=pa: fast_metric(metric, y[idx], pa[idx], n_classes)),
              (lambda idx, y=y, pb=pb: fast_metric(metric, y[idx], pb[idx], n_classes)),
              len(y)) for (y, pa), pb in zip(folds_a, folds_b, strict=True)]
    return paired_bootstrap_fn(pairs, n_boot, seed)


# ---- survival and regression (srmil.tasks) -------------------------------------------------


def harrell_c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's c-index by counting pairs: (i, j) is comparable when ``time_i < time_j`` and
    i had the event; concordant when ``risk_i > risk_j``, ties in risk count one half.
    Same value as scikit-survival's ``concordance_index_censored`` (without tied times);
    NaN when no pair is comparable (e.g. no event).

    Args:
        time: (S,) follow-up times.
        event: (S,) bool, event observed.
        risk: (S,) predicted risk, higher = shorter survival.
    """
    time, event, risk = (np.asarray(a) for a in (time, event, risk))
    comp = (time[:, None] < time[None, :]) & event.astype(bool)[:, None]  # (S, S)
    n = comp.sum()
    if n == 0:
        return np.nan
    diff = risk[:, None] - risk[None, :]
    score = (diff > 0).astype(float) + 0.5 * (diff == 0)
    return float((score * comp).sum() / n)


def _surv(event: np.ndarray, time: np.ndarray) -> np.ndarray:
    from sksurv.util import Surv

    return Surv.from_arrays(event.astype(bool), time.astype(float))


def survival_metrics(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, surv_fn: Any,
    train_time: np.ndarray, train_event: np.ndarray, horizons: list[float],
    only: str | None = None,
) -> dict[str, Any]:
    """Survival metrics of one split (scikit-survival for the IPCW ones).

    - ``c_index``: Harrell's (:func:`harrell_c_index`).
    - ``c_index_uno``: Uno's IPCW c-index (censoring distribution from the training split;
      this split's follow-up is cut just below the training split's longest time, where that
      distribution can reach zero, for this and the next two).
    - ``td_auc``: mean cumulative/dynamic AUC at the horizons inside this split's follow-up
      (``td_auc_at``: per horizon, NaN outside it).
    - ``ibs``: integrated Brier score of ``surv_fn`` over up to 10 times between the 10th and
      80th percentiles of this split's times.

    Each is NaN where undefined (no event, no comparable pair, follow-up too short).

    Args:
        time, event, risk: (S,) the split's times, events (bool) and predicted risks.
        surv_fn: ``times (T,) → (S, T)`` predicted survival probabilities.
        train_time, train_event: the training split's (for the censoring weights).
        horizons: times of the time-dependent AUC.
        only: compute just this metric (bootstrap resamples).
    """
    from sksurv.metrics import (
        concordance_index_ipcw,
        cumulative_dynamic_auc,
        integrated_brier_score,
    )

    def want(m: str) -> bool:
        return only is None or only == m

    out: dict[str, Any] = {}
    if only is None:
        out.update(n=int(len(time)), events=int(np.sum(event)))
    if want("c_index"):
        out["c_index"] = harrell_c_index(time, event, risk)
    if not (want("c_index_uno") or want("td_auc") or want("ibs")):
        return out
    ok = len(time) > 1 and bool(np.any(event)) and len(train_time) > 0
    # the censoring weights come from the training split, whose Kaplan-Meier can be zero at its
    # longest time: follow-up beyond (just below) it is cut there (administrative censoring)
    tau = float(np.max(train_time)) * (1 - 1e-9) if len(train_time) else np.nan
    beyond = time >= tau
    t_cut, e_cut = np.where(beyond, tau, time), event.astype(bool) & ~beyond
    s_train, s_test = (_surv(train_event, train_time), _surv(e_cut, t_cut)) if ok else (None,
                                                                                          None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if want("c_index_uno"):
            try:
                out["c_index_uno"] = (float(concordance_index_ipcw(s_train, s_test, risk,
                                                                   tau=tau)[0]) if ok else np.nan)
            except (ValueError, ZeroDivisionError):
                out["c_index_uno"] = np.nan
        lo, hi = (float(np.min(t_cut)), float(np.max(t_cut))) if len(time) else (0, 0)
        if want("td_auc"):
            hs = np.asarray(horizons, dtype=float)
            inside = (hs >= lo) & (hs < hi)
            per = np.full(len(hs), np.nan)
            if ok and inside.any():
                try:
                    per[inside] = cumulative_dynamic_auc(s_train, s_test, risk, hs[inside])[0]
                except ValueError:
                    pass
            out["td_auc"] = float(np.nanmean(per)) if np.isfinite(per).any() else np.nan
            if only is None:
                out["td_auc_at"] = per.tolist()
                out["horizons"] = hs.tolist()
        if want("ibs"):
            out["ibs"] = np.nan
            if ok:
                ts = np.unique(np.percentile(t_cut, np.linspace(10, 80, 10)))
                ts = ts[(ts >= lo) & (ts < hi)]
                if len(ts) >= 2:
                    surv = surv_fn(ts)  # (S, T); NaN: no survival curve (Cox before Breslow)
                    try:
                        if np.isfinite(surv).all():
                            out["ibs"] = float(integrated_brier_score(s_train, s_test, surv, ts))
                    except ValueError:
                        pass
    return out


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """MAE, RMSE, R², Pearson's r and Spearman's ρ (NaN where undefined: < 2 slides or a
    constant target or prediction), in the target's units."""
    from scipy.stats import pearsonr, spearmanr

    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    out: dict[str, Any] = {"n": int(len(y))}
    if len(y) == 0:
        return {**out, **dict.fromkeys(("mae", "rmse", "r2", "pearson", "spearman"), np.nan)}
    err = pred - y
    out["mae"] = float(np.abs(err).mean())
    out["rmse"] = float(np.sqrt((err**2).mean()))
    ss = float(((y - y.mean()) ** 2).sum())
    out["r2"] = float(1 - (err**2).sum() / ss) if ss > 0 else np.nan
    varies = len(y) > 1 and np.ptp(y) > 0 and np.ptp(pred) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["pearson"] = float(pearsonr(y, pred)[0]) if varies else np.nan
        out["spearman"] = float(spearmanr(y, pred)[0]) if varies else np.nan
    return out


def bootstrap_ci_fn(folds: list[tuple[Any, int]], n_boot: int = 1000, seed: int = 0
                    ) -> tuple[float, float]:
    """95 % bootstrap CI of a mean-over-folds metric, any task: each fold gives
    ``(metric(idx) → float, n slides)``; slides are resampled within each fold, as
    :func:`bootstrap_ci`."""
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(n_boot):
        vals = [fn(rng.integers(0, n, n)) for fn, n in folds]
        if not np.isnan(vals).any():
            means.append(np.mean(vals))
    if len(means) < max(10, n_boot // 10):
        return (np.nan, np.nan)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def paired_bootstrap_fn(folds: list[tuple[Any, Any, int]], n_boot: int = 1000, seed: int = 0
                        ) -> dict[str, float]:
    """Paired bootstrap of the mean-over-folds ``metric(a) − metric(b)``, any task: each fold
    gives ``(metric_a(idx), metric_b(idx), n)`` on the same slides; one resample serves both.
    Returns ``diff``, ``ci95_lo``, ``ci95_hi``, ``p`` as :func:`paired_bootstrap`."""
    everyone = [np.arange(n) for _, _, n in folds]
    observed = float(np.mean([fa(i) - fb(i) for (fa, fb, _), i in zip(folds, everyone,
                                                                        strict=True)]))
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        d = []
        for fa, fb, n in folds:
            idx = rng.integers(0, n, n)
            d.append(fa(idx) - fb(idx))
        if not np.isnan(d).any():
            diffs.append(np.mean(d))
    if len(diffs) < max(10, n_boot // 10):
        return {"diff": observed, "ci95_lo": np.nan, "ci95_hi": np.nan, "p": np.nan}
    diffs = np.asarray(diffs)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    side = (diffs <= 0).mean() if observed > 0 else (diffs >= 0).mean()
    return {"diff": observed, "ci95_lo": float(lo), "ci95_hi": float(hi),
            "p": float(min(1.0, 2 * side))}
