"""Report figures of survival and regression runs: Kaplan–Meier curves of risk groups with the
log-rank test (scikit-survival), calibration of predicted against Kaplan–Meier survival at a
horizon, and predicted-vs-true scatter plots."""

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
        ``slide_id, fold, time, event, risk, group`` (pooled over folds; ``case_id`` instead
        of ``slide_id`` for a patient-level run's cases).
    """
    rows = []
    for k, t in tests.items():
        cut = thresholds.get(k, float(np.median(t["risk"])))
        ids = "case_id" if "case_id" in t and "slide_id" not in t else "slide_id"
        part = t[[ids, "time", "event", "risk"]].copy()
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


def scatter_figure(tests: dict[int, pd.DataFrame], path: str | os.PathLike,
                   unit: str = "slides") -> Path:
    """Predicted vs true target of the test slides (``unit``: or cases), one colour per fold,
    identity line."""
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
    ax.set_title(f"Test {unit}: predicted vs true", fontsize=10)
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


def kaplan_meier_at(time: np.ndarray, event: np.ndarray, horizon: float
                    ) -> tuple[float, float, float]:
    """Kaplan–Meier estimate of S(horizon) with its 95 % CI (Greenwood, log-log).

    S(t) = Π over event times tᵢ ≤ t of (1 − dᵢ / nᵢ), dᵢ events at tᵢ and nᵢ at risk just
    before it. NaN when the horizon lies beyond the last follow-up and that patient was
    censored (the estimate is undefined there). Without an event by t (S = 1) Greenwood's
    variance is 0, so the lower bound is the exact binomial one for no event among the n
    patients still followed at t, 0.025^(1/n).

    Args:
        time: (n,) follow-up times; event: (n,) 1 = event observed, 0 = censored.
        horizon: the time t.

    Returns:
        (S(t), lower, upper).
    """
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event).astype(bool)
    if len(time) == 0:
        return np.nan, np.nan, np.nan
    last = time.max()
    if horizon > last and not event[time == last].any():
        return np.nan, np.nan, np.nan
    s, var = 1.0, 0.0
    for t in np.unique(time[event & (time <= horizon)]):
        n = int((time >= t).sum())
        d = int((event & (time == t)).sum())
        s *= 1.0 - d / n
        var += d / (n * (n - d)) if n > d else 0.0
    if s >= 1.0:  # no event by t: Greenwood has no spread; the exact binomial bound does
        return 1.0, float(0.025 ** (1.0 / max(1, int((time >= horizon).sum())))), 1.0
    if s <= 0.0 or var == 0.0:
        return s, s, s
    # log-log interval: exp(−exp(log(−log S) ± z·σ)), σ² = Greenwood / log(S)²
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.975)
    sigma = np.sqrt(var) / abs(np.log(s))
    lo = s ** np.exp(z * sigma)
    hi = s ** np.exp(-z * sigma)
    return float(s), float(lo), float(hi)


def survival_calibration(frame: pd.DataFrame, horizon: float, groups: int = 4,
                         min_per_group: int = 5) -> pd.DataFrame:
    """Predicted vs observed survival at ``horizon``, per fold and pooled.

    The patients of each fold (and all of them, pooled) are sorted by predicted S(horizon) and
    cut into equal-count groups (quantile groups; fewer than ``groups`` when there are under
    ``min_per_group`` patients per group, at least one); each group's mean predicted
    S(horizon) is set against its Kaplan–Meier estimate (:func:`kaplan_meier_at`).

    Args:
        frame: ``fold, time, event, predicted`` (one row per test slide, or per case for a
            patient-level run).
        horizon: the time t.

    Returns:
        ``fold`` (an index or ``pooled``), ``group`` (1 = lowest predicted survival),
        ``n`` (rows), ``events, predicted S(t), observed S(t), observed low, observed high``.
    """
    rows = []
    parts = [(k, frame[frame["fold"] == k]) for k in sorted(frame["fold"].unique())]
    for k, part in [*parts, ("pooled", frame)]:
        n = len(part)
        q = max(1, min(groups, n // max(1, min_per_group)))
        order = np.argsort(part["predicted"].to_numpy(dtype=float), kind="stable")
        for g, idx in enumerate(np.array_split(order, q), start=1):
            sel = part.iloc[idx]
            s, lo, hi = kaplan_meier_at(sel["time"].to_numpy(), sel["event"].to_numpy(),
                                        horizon)
            rows.append({"fold": str(k), "group": g, "n": len(sel),
                         "events": int(sel["event"].sum()),
                         "predicted S(t)": float(sel["predicted"].mean()),
                         "observed S(t)": s, "observed low": lo, "observed high": hi})
    return pd.DataFrame(rows)


def survival_calibration_figure(table: pd.DataFrame, horizon: float,
                                path: str | os.PathLike) -> Path:
    """Observed (Kaplan–Meier, 95 % CI) against mean predicted S(horizon) of each group
    (:func:`survival_calibration`): one panel per fold and one pooled, four to a row; the
    diagonal is perfect calibration."""
    folds = list(dict.fromkeys(table["fold"]))
    cols = min(4, len(folds))  # rows of four panels: ten folds stay readable
    rows = -(-len(folds) // cols)
    fig, axes = subplots(rows, cols, figsize=(2.6 * cols + 0.6, 3.0 * rows),
                         layout="constrained", squeeze=False)
    for ax in axes.ravel()[len(folds):]:
        ax.set_axis_off()
    for ax, k in zip(axes.ravel(), folds, strict=False):
        t = table[table["fold"] == k]
        ok = t["observed S(t)"].notna()
        err = np.vstack([t["observed S(t)"] - t["observed low"],
                         t["observed high"] - t["observed S(t)"]])[:, ok.to_numpy()]
        ax.plot([0, 1], [0, 1], color="#888", linewidth=1, linestyle="--")
        ax.errorbar(t.loc[ok, "predicted S(t)"], t.loc[ok, "observed S(t)"], yerr=err,
                    fmt="o-", color="#1f77b4" if k != "pooled" else "#d62728", capsize=3,
                    markersize=4)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_title("pooled" if k == "pooled" else f"fold {k}", fontsize=9)
        ax.set_xlabel(f"predicted S({horizon:.3g})", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("observed S(t), Kaplan–Meier", fontsize=8)
    return save_figure(fig, path, overwrite=True)
