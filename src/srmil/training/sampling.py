"""Imbalanced classes: per-bag loss weights and the epoch's bag order.

Two remedies, either or both (``train.class_weights``, ``train.sampler``):

- **Class weights** scale each bag's whole objective, ``parts["total"] · w[y]``, in the training
  loop. With one bag per step, PyTorch's ``cross_entropy(weight=…, reduction="mean")`` would
  divide by that same weight again and cancel it, so the weight is applied outside the models'
  losses. For SRMIL the label-independent reconstruction term is weighted with its bag too,
  which is what the balanced sampler does in expectation (a bag drawn twice as often
  contributes its reconstruction twice as often).
- The **balanced sampler** draws, each epoch, ``len(train)`` bags with every class equally
  often (within a class, bags are drawn without replacement as far as the class allows), in an
  order fixed by ``(seed, epoch)``, so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from srmil.config import TrainConfig
from srmil.errors import ConfigError, SrmilError


def class_counts(targets: Sequence[int], n_classes: int) -> np.ndarray:
    """(C,) number of bags per class."""
    return np.bincount(np.asarray(targets, dtype=np.int64), minlength=n_classes)


def class_weights(cfg: TrainConfig, targets: Sequence[int], classes: list[str]
                  ) -> np.ndarray | None:
    """Per-class loss weights for the training split, or ``None`` (``class_weights: none``).

    ``balanced`` is the inverse class frequency ``n / (C · n_c)``; given weights are used in
    class order. Either way they are scaled so that their mean over the training bags is 1, so
    the learning rate keeps its meaning.

    Args:
        cfg: the training settings.
        targets: (S,) class index of each training bag.
        classes: class names (their count is C).

    Returns:
        (C,) float64 weights, or ``None``.

    Raises:
        ConfigError: weights of the wrong length, negative or non-finite weights, or
            ``balanced`` with a class absent from the training split.
    """
    spec = cfg.class_weights
    if spec == "none":
        return None
    n_classes = len(classes)
    counts = class_counts(targets, n_classes)
    if spec == "balanced":
        absent = [classes[c] for c in range(n_classes) if counts[c] == 0]
        if absent:
            raise SrmilError(f"train.class_weights balanced: class(es) {', '.join(absent)} "
                             "absent from the training split")
        w = len(targets) / (n_classes * counts.astype(np.float64))
    else:
        w = np.asarray(spec, dtype=np.float64)
        if w.shape != (n_classes,):
            raise ConfigError(f"train.class_weights has {len(w)} weight(s), but there are "
                              f"{n_classes} classes ({', '.join(classes)})")
        if not (np.isfinite(w).all() and (w >= 0).all()):
            raise ConfigError(f"train.class_weights must be finite and >= 0, got {list(spec)}")
    mean = float(w[np.asarray(targets, dtype=np.int64)].mean()) if len(targets) else 0.0
    if not mean > 0:
        raise ConfigError("train.class_weights give every training bag weight 0")
    return w / mean


def epoch_order(cfg: TrainConfig, targets: Sequence[int], classes: list[str], epoch: int
                ) -> np.ndarray:
    """The training bags' indices for one epoch (``len(targets)`` of them).

    ``shuffle``: each bag once, reshuffled per epoch (``cfg.shuffle``; else the saved order).
    ``balanced``: ``len(targets) // C`` draws per class (the remainder to classes picked at
    random), each class's bags drawn without replacement until it runs out, then again; the
    result is shuffled. Both depend only on ``(cfg.seed, epoch)``.

    Raises:
        SrmilError: ``balanced`` with a class absent from the training split.
    """
    n = len(targets)
    rng = np.random.default_rng([cfg.seed, epoch])
    if cfg.sampler == "shuffle":
        return rng.permutation(n) if cfg.shuffle else np.arange(n)
    n_classes = len(classes)
    y = np.asarray(targets, dtype=np.int64)
    members = [np.flatnonzero(y == c) for c in range(n_classes)]
    absent = [classes[c] for c, m in enumerate(members) if len(m) == 0]
    if absent:
        raise SrmilError(f"train.sampler balanced: class(es) {', '.join(absent)} absent from "
                         "the training split")
    quota = np.full(n_classes, n // n_classes)
    quota[rng.choice(n_classes, n % n_classes, replace=False)] += 1
    picks = []
    for m, q in zip(members, quota, strict=True):
        reps = -(-int(q) // len(m))  # ceil: enough passes over the class's bags
        picks.append(np.concatenate([rng.permutation(m) for _ in range(reps)])[:q])
    return rng.permutation(np.concatenate(picks))


def check_sampling(cfg: TrainConfig, targets: Sequence[int], classes: list[str],
                   where: str = "") -> None:
    """Refuse class weights or a sampler that cannot work on this training split.

    Raises:
        SrmilError: as :func:`class_weights` and :func:`epoch_order`, prefixed with ``where``.
    """
    try:
        class_weights(cfg, targets, classes)
        epoch_order(cfg, targets, classes, 0)
    except SrmilError as exc:
        if not where:
            raise
        raise type(exc)(f"{where}: {exc}") from None


def check_classification_only(cfg: TrainConfig, task: str) -> None:
    """Refuse the classification-only settings on another task's run.

    Raises:
        ConfigError: naming the settings that were set (class weights, a balanced sampler and
            temperature scaling act on class probabilities).
    """
    bad = [f"train.{k}={v}" for k, v, default in (
        ("class_weights", cfg.class_weights, "none"), ("sampler", cfg.sampler, "shuffle"),
        ("calibrate", cfg.calibrate, "none")) if v != default]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: for classification only; this is a {task} run")

