"""Calibration metrics and temperature scaling (training/calibration.py)."""

import numpy as np
import pytest
from scipy.special import softmax

from srmil.errors import SrmilError
from srmil.training.calibration import (
    apply_temperature,
    brier,
    calibration_metrics,
    ece,
    fit_temperature,
    reliability,
)


def test_ece_and_brier_match_hand_values():
    y = np.array([0, 1, 1, 0])
    p1 = np.array([0.1, 0.9, 0.4, 0.8])
    prob = np.stack([1 - p1, p1], axis=1)
    # confidences 0.9, 0.9, 0.6, 0.8; correct 1, 1, 0, 0; 15 equal bins put each of
    # 0.6 / 0.8 / 0.9 in its own bin: (|0-0.6| + |0-0.8| + 2·|1-0.9|) / 4
    assert ece(y, prob) == pytest.approx((0.6 + 0.8 + 0.2) / 4)
    # one bin: |mean correct − mean confidence|
    assert ece(y, prob, bins=1) == pytest.approx(abs(0.5 - 0.8))
    # multi-class Brier: Σ_c (p − onehot)² per slide, mean
    assert brier(y, prob) == pytest.approx(np.mean(2 * (p1 - y) ** 2))


def test_adaptive_bins_hold_equal_numbers_of_slides():
    rng = np.random.default_rng(0)
    p1 = rng.beta(5, 1, 300)  # confidences bunched near 1: equal-width bins are uneven
    prob = np.stack([1 - p1, p1], axis=1)
    y = (rng.random(300) < p1).astype(int)
    r = reliability(y, prob, bins=15, adaptive=True)
    assert len(r["count"]) == 15 and r["count"].min() >= 19 and r["count"].max() <= 21
    assert r["count"].sum() == 300
    assert np.isnan(ece(np.zeros(0, int), np.zeros((0, 2))))


def _overconfident(n: int, seed: int, sharpen: float = 4.0):
    """Labels drawn from softmax(z); the 'model' reports softmax(sharpen · z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, 3))
    true = softmax(z, axis=1)
    y = np.array([rng.choice(3, p=p) for p in true])
    return y, softmax(sharpen * z, axis=1)


def test_temperature_scaling_lowers_val_and_test_ece_of_an_overconfident_model():
    yv, pv = _overconfident(400, 0)
    yt, pt = _overconfident(400, 1)
    fit = fit_temperature(yv, pv)
    t = fit["temperature"]
    assert 3.0 < t < 5.5 and not fit["at_bound"]  # recovers the sharpening (4)
    assert fit["nll_after"] < fit["nll_before"]
    for y, p in ((yv, pv), (yt, pt)):
        before, after = calibration_metrics(y, p), calibration_metrics(y, apply_temperature(p, t))
        assert after["ece"] < 0.5 * before["ece"]
        assert after["ece_adaptive"] < before["ece_adaptive"]
        assert after["brier"] < before["brier"]
        # the predicted class never changes
        np.testing.assert_array_equal(apply_temperature(p, t).argmax(1), p.argmax(1))


def test_apply_temperature_is_softmax_of_scaled_logits():
    z = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    np.testing.assert_allclose(apply_temperature(softmax(z, axis=1), 2.5), softmax(z / 2.5, axis=1))
    np.testing.assert_array_equal(apply_temperature(softmax(z, axis=1), 1.0), softmax(z, axis=1))


def test_non_finite_inputs_and_degenerate_fits_are_one_line(caplog):
    y, p = _overconfident(20, 0)
    p[3, 0] = np.nan
    with pytest.raises(SrmilError, match="fold_1: temperature scaling: the validation "
                                         "probabilities are not finite"):
        fit_temperature(y, p, "fold_1")
    with pytest.raises(SrmilError, match="needs a validation split"):
        fit_temperature(np.zeros(0, int), np.zeros((0, 3)))
    # every validation slide right: the NLL keeps falling as T → 0, the bound stops it
    prob = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    fit = fit_temperature(np.array([0, 1, 0]), prob, "fold_0")
    assert fit["at_bound"] and np.isfinite(fit["temperature"])
    assert "at the search bound" in caplog.text
