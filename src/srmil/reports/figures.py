"""Figures of a run's report: PR curves, confusion matrix, training curves, reliability
diagrams (matplotlib).

ROC curves come from :func:`srmil.reports.roc.roc_figure`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from srmil.storage import atomic_path


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None,
             dpi: float | None = None, layout: str | None = None, **kw: Any) -> tuple[Any, Any]:
    """``pyplot.subplots`` on a bare :class:`matplotlib.figure.Figure`: no pyplot, so neither
    the user's backend (a notebook's) nor pyplot's figure registry is touched.

    Returns:
        (figure, axes) as ``pyplot.subplots`` returns them.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)  # its own raster canvas (PNG, pixel access); the global backend stays
    return fig, fig.subplots(nrows, ncols, **kw)


def save_figure(fig, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a matplotlib figure as PNG (white background, atomically).

    Figures of :func:`subplots` belong to no pyplot registry: nothing to close, nothing leaks
    when the write fails.
    """
    dest = Path(path)
    with atomic_path(dest, overwrite) as tmp:
        fig.savefig(tmp, format="png", facecolor="white")
    return dest


def pr_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike,
              title: str = "Test precision-recall per fold") -> Path:
    """Precision-recall curve per entry (same input as :func:`srmil.reports.roc.roc_figure`).

    Args:
        curves: name → (y (S,), prob (S, C)). Binary: class 1 is positive; C > 2: the
            micro-average over one-vs-rest.
        path: PNG to write (atomically; replaced if present).
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve
    from sklearn.preprocessing import label_binarize

    fig, ax = subplots(figsize=(5.5, 5), dpi=110)
    prevalence = []
    for name, (y, p) in curves.items():
        c = p.shape[1]
        if c == 2:
            t, s = (np.asarray(y) == 1).astype(int), p[:, 1]
        else:
            t, s = label_binarize(y, classes=range(c)).ravel(), p.ravel()
        if t.min() == t.max():  # one class only: no curve is defined
            continue
        prec, rec, _ = precision_recall_curve(t, s)
        ax.step(rec, prec, where="post", lw=1.6,
                label=f"{name} (AP {average_precision_score(t, s):.3f})")
        prevalence.append(t.mean())
    if prevalence:
        ax.axhline(float(np.mean(prevalence)), ls="--", lw=0.8, color="grey",
                   label="chance (prevalence)")
    ax.set(xlabel="recall", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, overwrite=True)


def confusion_figure(y: np.ndarray, pred: np.ndarray, classes: list[str],
                     path: str | os.PathLike,
                     title: str = "Test confusion matrix (pooled over folds)") -> Path:
    """Counts of true (rows) against predicted (columns) classes, with row percentages."""
    from sklearn.metrics import confusion_matrix

    m = confusion_matrix(y, pred, labels=range(len(classes)))  # (C, C)
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros(m.shape, dtype=float), where=rows > 0)
    side = 2.2 + 0.9 * len(classes)
    fig, ax = subplots(figsize=(side + 1, side), dpi=110)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]}\n{100 * frac[i, j]:.0f}%", ha="center", va="center",
                    fontsize=9, color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    return save_figure(fig, path, overwrite=True)


def history_figure(histories: dict[int, pd.DataFrame], path: str | os.PathLike,
                   best: dict[int, int] | None = None) -> Path:
    """Training curves: one panel per loss part (``train_*``), validation loss and AUC (or
    c-index, MAE); one
    line per fold, a dot on each fold's selected epoch.

    Args:
        histories: fold → its ``history.csv``.
        best: fold → selected epoch.
    """
    from matplotlib.ticker import MaxNLocator

    parts: list[str] = []
    for h in histories.values():
        parts += [c for c in h.columns if c.startswith("train_") and c not in parts]
    panels = parts + [c for c in ("val_loss", "val_auc", "val_accuracy", "val_c_index",
                                  "val_mae")
                      if any(c in h for h in histories.values())]
    cols = min(3, max(len(panels), 1))
    rows = int(np.ceil(len(panels) / cols)) or 1
    fig, axes = subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), dpi=100,
                             squeeze=False)
    for ax, col in zip(axes.ravel(), panels, strict=False):
        for k, h in sorted(histories.items()):
            if col not in h:
                continue
            line, = ax.plot(h["epoch"], h[col], lw=1.3, label=f"fold {k}")
            if best and k in best and best[k] in set(h["epoch"]):
                v = h.loc[h["epoch"] == best[k], col].iloc[0]
                ax.plot([best[k]], [v], "o", color=line.get_color(), ms=5)
        ax.set_title(col.replace("train_", "train: ").replace("val_", "val: "), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels):]:
        ax.set_axis_off()
    axes.ravel()[0].legend(fontsize=7)
    fig.suptitle("Training curves (dot: selected epoch)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, overwrite=True)


def reliability_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]],
                       path: str | os.PathLike, bins: int = 15) -> Path:
    """Reliability diagrams, one panel per entry (each fold, then the pooled test slides):
    accuracy against mean confidence in ``bins`` equal-width bins, the diagonal = calibrated.

    Args:
        curves: name → (y (S,), prob (S, C), prob before temperature scaling or ``None``).
        path: PNG to write (atomically; replaced if present).
        bins: confidence bins (15, as the ECE).
    """
    from srmil.training.calibration import ece, reliability

    n = max(len(curves), 1)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = subplots(rows, cols, figsize=(3.6 * cols, 3.5 * rows), dpi=100, squeeze=False)
    for ax, (name, (y, p, before)) in zip(axes.ravel(), curves.items(), strict=False):
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
        for prob, label, style in ((before, "before", "s--"), (p, "after" if before is not None
                                                               else "", "o-")):
            if prob is None:
                continue
            r = reliability(y, prob, bins)
            e = ece(y, prob, bins)
            ax.plot(r["confidence"], r["accuracy"], style, ms=4, lw=1.2,
                    label=f"{label + ' ' if label else ''}ECE {e:.3f}")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (predicted class)",
               ylabel="accuracy", title=f"{name} (n = {len(y)})")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(curves):]:
        ax.set_axis_off()
    fig.suptitle(f"Reliability (test, {bins} equal-width bins)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, overwrite=True)
