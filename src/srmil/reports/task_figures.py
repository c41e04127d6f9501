"""Report figures of survival and regression runs: Kaplan–Meier curves of risk groups with the
log-rank test (scikit-survival), and predicted-vs-true scatter plots."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from srmil.reports.figures import save_figure, subplots


def risk_groups(tests: dict[int, pd.DataFrame], thresholds: dict[int, float]) -> pd.DataFrame:
    """Test patients of every fold split into ``high`` / ``low`` risk at their fold's
    threshold (the median predicted risk of that fold's training split).

    Returns:
        ``slide_id, fold, time, event, risk, group`` (pooled over folds).
    """
    rows = []
    for k, t in tests.items():
        cut = thresholds.get(k, float(np.median(t["risk"])))
        part = t[["slide_id", "time", "event", "risk"]].copy()
        part.insert(1, "fold", k)
        part["group"] = np.where(part["risk"] > cut, "high", "low")
        rows.append(part)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["slide_id", "fold", "time", "event", "risk", "group"])


def logrank_p(groups: pd.DataFrame) -> float:
    """Two-sided log-rank p of high vs low risk; NaN when a group is empty or has no event."""
    from sksurv.compare import compare_survival
    from sksurv.util import Surv

    if groups["group"].nunique() < 2 or not groups["event"].any():
        return np.nan
    y = Surv.from_arrays(groups["event"].astype(bool), groups["time"].astype(float))
    return float(compare_survival(y, groups["group"].to_numpy())[1])


def km_figure(groups: pd.DataFrame, path: str | os.PathLike, title: str = "") -> tuple[Path,
                                                                                        float]:
    """Kaplan–Meier curves (with 95 % confidence bands) of the risk groups; the log-rank p in
    the legend. Returns the PNG and the p value."""
    from sksurv.nonparametric import kaplan_meier_estimator

    p = logrank_p(groups)
    fig, ax = subplots(figsize=(5.5, 4.2), layout="constrained")
    for name, colour in (("low", "#1f77b4"), ("high", "#d62728")):
        g = groups[groups["group"] == name]
        if g.empty:
            continue
        t, s, (lo, hi) = kaplan_meier_estimator(g["event"].astype(bool),
                                                g["time"].astype(float), conf_type="log-log")
        ax.step(t, s, where="post", color=colour,
                label=f"{name} risk (n={len(g)}, events {int(g['event'].sum())})")
        ax.fill_between(t, lo, hi, step="post", color=colour, alpha=0.15, linewidth=0)
    ax.set_xlabel("time")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    ptxt = "–" if np.isnan(p) else f"{p:.3g}"
    ax.set_title(title or f"Test patients by predicted risk (log-rank p = {ptxt})", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    return save_figure(fig, path, overwrite=True), p


def scatter_figure(tests: dict[int, pd.DataFrame], path: str | os.PathLike) -> Path:
    """Predicted vs true target of the test slides, one colour per fold, identity line."""
    fig, ax = subplots(figsize=(4.8, 4.5), layout="constrained")
    lo, hi = np.inf, -np.inf
    for k, t in sorted(tests.items()):
        ax.scatter(t["target"], t["pred"], s=18, alpha=0.8, label=f"fold {k}")
        lo = min(lo, t["target"].min(), t["pred"].min())
        hi = max(hi, t["target"].max(), t["pred"].max())
    if np.isfinite(lo):
        ax.plot([lo, hi], [lo, hi], color="#888", linewidth=1, linestyle="--")
    ax.set_xlabel("true target")
    ax.set_ylabel("predicted")
    ax.set_title("Test slides: predicted vs true", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path, overwrite=True)


def calibration_table(groups: pd.DataFrame, predicted: np.ndarray, horizon: float
                      ) -> pd.DataFrame:
    """Predicted vs observed survival at ``horizon`` per risk group: the mean predicted
    S(horizon) of the group's patients against its Kaplan–Meier estimate there.

    Args:
        groups: :func:`risk_groups` rows.
        predicted: (S,) each row's predicted S(horizon), same order as ``groups``.
    """
    from sksurv.nonparametric import kaplan_meier_estimator

    rows = []
    for name in ("low", "high"):
        sel = (groups["group"] == name).to_numpy()
        if not sel.any():
            continue
        g = groups[sel]
        t, s = kaplan_meier_estimator(g["event"].astype(bool), g["time"].astype(float))
        seen = s[t <= horizon]
        observed = float(seen[-1]) if len(seen) else 1.0
        rows.append({"risk group": name, "patients": int(sel.sum()),
                     "predicted S(t)": float(np.mean(predicted[sel])),
                     "observed S(t) (Kaplan–Meier)": observed})
    return pd.DataFrame(rows)
