import math

import numpy as np
import pytest

from srmil.training.metrics import bootstrap_ci, classification_metrics
from srmil.training.selection import eligible, is_better, selection_key


def test_binary_metrics_match_hand_values():
    y = np.array([0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.8, 0.9])  # predictions: 0 1 0 1 1
    m = classification_metrics(y, np.stack([1 - p1, p1], 1), 2)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["auc"] == pytest.approx(5 / 6)  # 5 of the 6 (pos, neg) pairs ordered right
    assert m["f1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]


def test_multiclass_auc_macro_and_per_class_and_missing_class():
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]])
    m = classification_metrics(y, p, 3)
    assert m["auc_per_class"] == [1.0, 1.0, 1.0] and m["auc"] == 1.0
    m2 = classification_metrics(np.array([0, 0, 1]), p[:3], 3)  # class 2 absent: undefined
    assert math.isnan(m2["auc_per_class"][2]) and math.isnan(m2["auc"])
    m3 = classification_metrics(np.array([1, 1]), np.array([[0.4, 0.6], [0.3, 0.7]]), 2)
    assert math.isnan(m3["auc"]) and m3["accuracy"] == 1.0


def test_selection_rules():
    assert not eligible(60, 100, 0.6) and eligible(61, 100, 0.6)
    assert eligible(2, 3, 0.6) and not eligible(1, 3, 0.6)
    assert eligible(0, 1, 0.6)  # a one-epoch run still selects its only epoch
    best = selection_key(0.8, 0.7)
    assert is_better(selection_key(0.8, 0.7), best)  # exact tie: the later epoch wins
    assert is_better(selection_key(0.8, 0.75), best)  # accuracy tie: AUC decides
    assert not is_better(selection_key(0.75, 0.99), best)  # accuracy first
    assert not is_better(selection_key(0.8, float("nan")), best)


def test_bootstrap_ci_brackets_the_mean():
    rng = np.random.default_rng(0)
    folds = []
    for _ in range(3):
        y = rng.integers(0, 2, 40)
        s = np.clip(y * 0.3 + rng.uniform(0, 0.7, 40), 0, 1)
        folds.append((y, np.stack([1 - s, s], 1)))
    lo, hi = bootstrap_ci(folds, 2, "auc", n_boot=100, seed=1)
    mean = np.mean([classification_metrics(y, p, 2)["auc"] for y, p in folds])
    assert lo < mean < hi and hi - lo < 0.3
    assert bootstrap_ci(folds, 2, "auc", n_boot=100, seed=1) == (lo, hi)


@pytest.mark.parametrize("c", [2, 3])
def test_fast_metrics_equal_sklearn(c):
    from srmil.training.metrics import fast_metric

    rng = np.random.default_rng(c)
    for _ in range(20):
        y = rng.integers(0, c, 30)
        p = rng.dirichlet(np.ones(c), 30).round(2)  # rounding makes ties
        ref = classification_metrics(y, p, c)
        for m in ("auc", "accuracy", "balanced_accuracy", "f1"):
            assert fast_metric(m, y, p, c) == pytest.approx(ref[m], nan_ok=True), m
