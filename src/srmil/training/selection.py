"""Model selection (METHOD.md): best validation accuracy, ties by validation AUC, a later epoch
wins an exact tie, only among epochs whose 0-based index is > ``select_after · epochs``."""

from __future__ import annotations

import math


def eligible(epoch: int, epochs: int, select_after: float) -> bool:
    """Whether 0-based ``epoch`` may be selected; the last epoch always may (short runs)."""
    return epoch > select_after * epochs or epoch == epochs - 1


def selection_key(accuracy: float, auc: float) -> tuple[float, float]:
    """Sort key: accuracy first, AUC second; NaN counts as the worst value."""
    return (
        -math.inf if math.isnan(accuracy) else accuracy,
        -math.inf if math.isnan(auc) else auc,
    )


def is_better(new: tuple[float, float], best: tuple[float, float] | None) -> bool:
    """``>=``: an exact tie goes to the later epoch, as in the reference."""
    return best is None or new >= best
