"""Calibration of class probabilities: ECE (equal-width and equal-mass bins), Brier score,
reliability curves, and temperature scaling (Guo et al. 2017, https://arxiv.org/abs/1706.04599).

Temperature scaling divides the logits by one scalar ``T`` fitted on a fold's validation split
by minimising the negative log-likelihood; ``T > 1`` softens an over-confident model. It never
changes the predicted class. It works on the saved probabilities: ``log p`` is a valid logit
vector (``softmax(log p) = p``), so ``softmax(log p / T)`` is exactly ``softmax(z / T)`` up to
the float64 floor on ``p`` (a logit gap above ~690). Every model (DSMIL's averaged streams
included) is calibrated the same way.

The fit is a 1-D bounded search (Brent's method, ``scipy.optimize.minimize_scalar``) on
``log T`` within ``[log 0.01, log 100]`` rather than LBFGS: the NLL is smooth and unimodal in
``log T`` (convex in ``1/T``), one parameter needs no gradients, and the bound keeps a
perfectly separated validation split (whose NLL keeps falling as ``T → 0``) from driving ``T``
to 0; such a fit lands on the bound and is logged as a warning.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from srmil.config import TrainConfig
from srmil.errors import SrmilError, exc_line
from srmil.storage import write_json
from srmil.training.rundir import RunDir

log = logging.getLogger(__name__)

ECE_BINS = 15
LOG_T_BOUNDS = (math.log(0.01), math.log(100.0))
_FLOOR = 1e-300  # float64 floor on probabilities before the log


def _confidence(y: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S,) confidence (the predicted class's probability) and (S,) correctness (0/1)."""
    pred = prob.argmax(axis=1)
    return prob.max(axis=1), (pred == y).astype(np.float64)


def _bin_edges(conf: np.ndarray, bins: int, adaptive: bool) -> np.ndarray:
    if not adaptive:
        return np.linspace(0.0, 1.0, bins + 1)
    # equal mass: each bin holds ~S/bins slides (Nixon et al. 2019's adaptive ECE)
    return np.quantile(conf, np.linspace(0.0, 1.0, bins + 1))


def reliability(y: np.ndarray, prob: np.ndarray, bins: int = ECE_BINS, adaptive: bool = False
                ) -> dict[str, np.ndarray]:
    """Per-bin mean confidence, accuracy and count (empty bins dropped).

    Args:
        y: (S,) class indices.
        prob: (S, C) probabilities.
        bins: number of bins.
        adaptive: equal-mass bins (quantiles of the confidence) instead of equal-width.

    Returns:
        ``confidence``, ``accuracy``, ``count``: (B,) arrays, B <= ``bins``.
    """
    y = np.asarray(y, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    conf, correct = _confidence(y, prob)
    edges = _bin_edges(conf, bins, adaptive)
    # right-closed bins, the first one closed on both sides: confidence 1.0 is in the last bin
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    keep = count > 0
    sum_conf = np.bincount(idx, conf, minlength=bins)
    sum_acc = np.bincount(idx, correct, minlength=bins)
    return {"confidence": sum_conf[keep] / count[keep], "accuracy": sum_acc[keep] / count[keep],
            "count": count[keep]}


def ece(y: np.ndarray, prob: np.ndarray, bins: int = ECE_BINS, adaptive: bool = False) -> float:
    """Expected calibration error: the count-weighted mean |accuracy − confidence| over bins
    (NaN for an empty split)."""
    if len(y) == 0:
        return float("nan")
    r = reliability(y, prob, bins, adaptive)
    return float(np.sum(r["count"] * np.abs(r["accuracy"] - r["confidence"])) / len(y))


def brier(y: np.ndarray, prob: np.ndarray) -> float:
    """Multi-class Brier score ``mean_s Σ_c (p_sc − [y_s = c])²`` (0 best, 2 worst; twice the
    binary ``mean (p_1 − y)²``)."""
    if len(y) == 0:
        return float("nan")
    prob = np.asarray(prob, dtype=np.float64)
    onehot = np.eye(prob.shape[1])[np.asarray(y, dtype=np.int64)]
    return float(np.mean(np.sum((prob - onehot) ** 2, axis=1)))


def calibration_metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """``ece`` (15 equal-width bins), ``ece_adaptive`` (15 equal-mass bins), ``brier``."""
    return {"ece": ece(y, prob), "ece_adaptive": ece(y, prob, adaptive=True),
            "brier": brier(y, prob)}


def nll(y: np.ndarray, prob: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``y`` under the temperature-scaled probabilities."""
    logp = log_softmax(np.log(np.maximum(prob, _FLOOR)) / temperature, axis=1)
    return float(-np.mean(logp[np.arange(len(y)), np.asarray(y, dtype=np.int64)]))


def apply_temperature(prob: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``, (S, C) float64; ``T = 1`` returns the probabilities as they are."""
    prob = np.asarray(prob, dtype=np.float64)
    if temperature == 1.0 or prob.size == 0:
        return prob
    return np.exp(log_softmax(np.log(np.maximum(prob, _FLOOR)) / temperature, axis=1))


def fit_temperature(y: np.ndarray, prob: np.ndarray, where: str = "") -> dict[str, Any]:
    """Temperature minimising the validation NLL (see the module docstring).

    Args:
        y: (S,) validation class indices.
        prob: (S, C) validation probabilities of the selected model.
        where: what the fit is of (the fold), for messages.

    Returns:
        ``method``, ``temperature``, ``nll_before``, ``nll_after``, ``at_bound``.

    Raises:
        SrmilError: no validation slide, or non-finite probabilities or temperature.
    """
    y = np.asarray(y, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    prefix = f"{where}: " if where else ""
    if len(y) == 0:
        raise SrmilError(f"{prefix}temperature scaling needs a validation split")
    if not np.isfinite(prob).all():
        raise SrmilError(f"{prefix}temperature scaling: the validation probabilities are not "
                         "finite")
    res = minimize_scalar(lambda t: nll(y, prob, math.exp(t)), bounds=LOG_T_BOUNDS,
                          method="bounded", options={"xatol": 1e-4})
    t = math.exp(float(res.x))
    after = nll(y, prob, t)
    if not (math.isfinite(t) and math.isfinite(after)):
        raise SrmilError(f"{prefix}temperature scaling diverged (T = {t}, validation NLL = "
                         f"{after}): keep train.calibrate none for this run")
    # no interior optimum: the NLL is as low at the nearer bound (flat or still falling there)
    nearer = min(LOG_T_BOUNDS, key=lambda b: abs(res.x - b))
    at_bound = nll(y, prob, math.exp(nearer)) <= after + 1e-9
    if at_bound:
        log.warning("%stemperature %.3g is at the search bound (a perfectly separated or "
                    "degenerate validation split): the calibration is unreliable", prefix, t)
    return {"method": "temperature", "temperature": t, "nll_before": nll(y, prob),
            "nll_after": after, "at_bound": bool(at_bound)}


def fit_fold_temperature(cfg: TrainConfig, fold_dir: Path, y: np.ndarray, prob: np.ndarray
                         ) -> float | None:
    """The fold's temperature when ``cfg.calibrate`` asks for one, saved beside its model
    (``fold_K/calibration.json``); ``None`` for ``calibrate: none``.

    Args:
        cfg: the training settings.
        fold_dir: the fold's directory.
        y: (S,) validation class indices.
        prob: (S, C) validation probabilities of the selected model.
    """
    if cfg.calibrate == "none":
        return None
    fit = fit_temperature(y, prob, fold_dir.name)
    write_json(fold_dir / RunDir.CALIBRATION, fit, overwrite=True)
    return float(fit["temperature"])


def scored(y: np.ndarray, prob: np.ndarray, raw: np.ndarray | None = None) -> dict[str, Any]:
    """Calibration metrics of ``prob``; with ``raw`` (the probabilities before temperature
    scaling) also theirs, under ``uncalibrated``."""
    out: dict[str, Any] = calibration_metrics(y, prob)
    if raw is not None:
        out["uncalibrated"] = calibration_metrics(y, raw)
    return out


def read_temperature(fold_dir: Path, cfg: TrainConfig) -> float:
    """The temperature saved with a fold's model (1.0 for a run without calibration).

    Raises:
        SrmilError: the run calibrates but the fold has no readable, finite temperature.
    """
    path = fold_dir / RunDir.CALIBRATION
    if cfg.calibrate == "none":
        return 1.0
    if not path.is_file():
        raise SrmilError("the run calibrates (train.calibrate temperature) but the fold has no "
                         f"{RunDir.CALIBRATION}", fold_dir)
    try:
        t = float(json.loads(path.read_text(encoding="utf-8"))["temperature"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SrmilError(f"unreadable ({exc_line(exc)})", path) from None
    if not (math.isfinite(t) and t > 0):
        raise SrmilError(f"temperature {t} is not a finite positive number", path)
    return t
