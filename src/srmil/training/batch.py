"""One optimiser step over ``train.bags_per_step`` bags.

Models are written per bag (:class:`srmil.models.base.MILModel`: ``loss(bag, y)`` → parts), so
a step of B bags is built here, in one of two ways:

- **Per-bag objectives** (every loss but Cox): the step minimises the mean of its bags'
  objectives. Each bag's backward runs as soon as its forward has (``total_i · w_i / B``), so
  gradients accumulate and memory stays that of one bag; under DDP the gradient all-reduce
  waits for the step's last bag (``no_backward_sync``). ``B = 1`` is the reference's one bag
  per step, bit for bit.
- **Batch-level task losses** (``task.batch_level``: Cox's partial likelihood compares the
  bags of a step, so one bag has no loss of its own): while the step's bags run forward, every
  call of :meth:`MILModel.task_loss` records its outputs and returns a zero placeholder
  (:class:`DeferredTaskLoss`). A model's objective is linear in its task terms (SRMIL:
  ``(2 − w_gen)·[(2 − w_ce)·L(masked) + w_ce·L(full)] + w_gen·L_rec``), so the derivative of a
  bag's total with respect to a placeholder is that term's weight; the step's objective is then
  ``mean_i total_i + Σ_s w_s · L_batch(outputs of term s over the B bags)``. The B bags' graphs
  are held together until the one backward: memory grows with B.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from lightning.fabric import Fabric
from torch import Tensor

from srmil.graphs.graph_bag import GraphBag
from srmil.models.base import MILModel


class DeferredTaskLoss:
    """The task terms of a step's bags, recorded while a batch-level loss collects them.

    ``terms[i][s]`` is bag i's s-th call of the task loss: ``(placeholder, outputs (R, K),
    targets (R, T))`` (R = 1, or a bag's R pseudo-bags sharing its target).
    """

    def __init__(self) -> None:
        self.terms: list[list[tuple[Tensor, Tensor, Tensor]]] = []

    def new_bag(self) -> None:
        self.terms.append([])

    def record(self, out: Tensor, target: Tensor) -> Tensor:
        """Record outputs (R, K) of one bag sharing ``target``; returns a zero placeholder
        scalar that stands in for their loss in the model's objective."""
        rows = out.reshape(-1, out.shape[-1])
        targets = target.reshape(1, -1).expand(rows.shape[0], -1)
        p = torch.zeros((), dtype=torch.float32, device=out.device, requires_grad=True)
        self.terms[-1].append((p, rows, targets))
        return p


def _scale(loss: Tensor, scale: float) -> Tensor:
    return loss if scale == 1.0 else loss * scale  # × 1.0 skipped: B = 1 stays bit-identical


def train_step(fabric: Fabric, model: Any, net: MILModel, bags: Iterable[GraphBag], n: int,
               weights: np.ndarray | None = None, task: Any = None,
               scale: float | None = None) -> dict[str, float]:
    """Forward and backward of one optimiser step's ``n`` bags (the caller zeroes the
    gradients before and steps the optimiser after).

    Args:
        model: ``net`` as Fabric set it up (its ``loss`` marked as a forward method).
        bags: the step's bags, consumed one by one (read ahead by the caller's loader).
        n: how many there are.
        weights: (C,) class weights scaling each bag's objective, or ``None``.
        task: the fold's task; a ``batch_level`` one takes the Cox path.
        scale: each bag's loss factor (default 1 / n; under DDP W / bags in the step over
            all W processes, :func:`srmil.training.distributed.rank_steps`).

    Returns:
        The step's loss parts as floats: per-bag parts averaged over the bags, a batch-level
        task term's batch loss, and ``total``.
    """
    if task is not None and getattr(task, "batch_level", False):
        if weights is not None:
            raise ValueError("class weights do not apply to a batch-level loss")
        return _batch_level_step(fabric, model, net, bags, n, task,
                                 1.0 if scale is None else scale * n)
    scale = 1.0 / n if scale is None else scale
    sums: dict[str, float] = {}
    seen = 0
    for bag in bags:
        bag = bag.to(fabric.device)
        target = torch.tensor(bag.y, device=fabric.device)
        w = 1.0 if weights is None else float(weights[bag.y])
        with fabric.no_backward_sync(model, enabled=seen < n - 1):  # all-reduce on the last
            with fabric.autocast():
                parts = model.loss(bag, target)
            # the bag's whole objective is weighted (sampling.py says why not inside the loss)
            fabric.backward(_scale(parts["total"], w * scale))
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        seen += 1
    if seen != n:
        raise RuntimeError(f"the step expected {n} bags, got {seen}")
    return {k: v / n for k, v in sums.items()}


def _batch_level_step(fabric: Fabric, model: Any, net: MILModel, bags: Iterable[GraphBag],
                      n: int, task: Any, scale: float) -> dict[str, float]:
    rec = DeferredTaskLoss()
    all_parts: list[dict[str, Tensor]] = []
    net.deferred = rec
    try:
        for bag in bags:
            bag = bag.to(fabric.device)
            rec.new_bag()
            with fabric.autocast():
                all_parts.append(model.loss(bag, torch.tensor(bag.y, device=fabric.device)))
    finally:
        net.deferred = None
    if len(all_parts) != n:
        raise RuntimeError(f"the step expected {n} bags, got {len(all_parts)}")
    weights: list[float] | None = None  # each task term's weight in the objective
    for parts, terms in zip(all_parts, rec.terms, strict=True):
        grads = torch.autograd.grad(parts["total"], [p for p, _, _ in terms],
                                    retain_graph=True, allow_unused=True)
        w = [0.0 if g is None else float(g) for g in grads]
        if weights is None:
            weights = w
        elif len(w) != len(weights) or not np.allclose(w, weights):
            raise RuntimeError(f"{type(net).__name__}'s objective weights its task terms "
                               "differently from bag to bag")
    total = torch.stack([parts["total"].float() for parts in all_parts]).mean()
    term_loss: list[Tensor] = []
    for s, w in enumerate(weights or []):
        out = torch.cat([terms[s][1] for terms in rec.terms]).float()  # (ΣR, K)
        target = torch.cat([terms[s][2] for terms in rec.terms])  # (ΣR, T)
        term_loss.append(task.batch_loss(out, target))
        total = total + w * term_loss[-1]
    fabric.backward(_scale(total, scale))  # DDP: this process's share of the step
    # logged parts: a task term shows its batch loss, the model's other parts their bag mean
    slot_of = {id(p): s for s, (p, _, _) in enumerate(rec.terms[0])} if rec.terms else {}
    values: dict[str, float] = {}
    for k, v in all_parts[0].items():
        if k == "total":
            continue
        s = slot_of.get(id(v))
        values[k] = (float(term_loss[s].detach()) if s is not None
                     else float(np.mean([float(parts[k].detach()) for parts in all_parts])))
    values["total"] = float(total.detach())
    return values
