"""DDP training of one fold (``train.devices`` > 1) through Lightning Fabric's DDP strategy:
``devices`` processes, started by spawning, gloo on the CPU and NCCL on GPUs.

- **Steps.** Each optimiser step takes ``train.bags_per_step`` (B) bags on each of the W
  processes. The epoch's bag order depends on ``(seed, epoch)`` only, so every process draws the
  same one; it is cut into global steps of W·B bags, bag j of a step going to process j mod W.
  Each bag's objective is scaled by W / (bags in the step), so DDP's gradient average is the
  mean over the step's bags: what one process computes with ``bags_per_step`` = W·B (up to
  the order of the sums, and the masks and dropout draws, which each process draws from its
  own seed). A process left without a bag in a short last step runs a stand-in bag scaled by
  0, so every process joins every all-reduce; each bag is trained on exactly once per epoch.
- **Validation.** Each process predicts every W-th validation bag and the outputs are
  gathered, so every process computes the same metrics and the same model selection.
- **Files.** Rank 0 alone writes: ``last.pt`` holds every process's RNG state (an exact
  resume needs the same number of processes), ``best.safetensors`` the plain module's weights
  (``srmil predict`` loads them in one process). Rank 0 alone tests the selected model.

A batch-level loss (Cox) forms its risk sets within each process's B bags.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from lightning.fabric import Fabric

from srmil.errors import SrmilError

log = logging.getLogger(__name__)


def rank_steps(order: Sequence[int], per_step: int, world: int, rank: int
               ) -> list[tuple[list[int], int, float]]:
    """This process's share of an epoch: per optimiser step, ``(its bags, bags in the step
    over all processes, loss scale)``.

    With one process this is the order cut into steps of ``per_step`` bags, scale 1 / bags.
    A process without a bag in a step gets the step's first bag at scale 0 (a stand-in).
    """
    size = per_step * world
    steps = []
    for g in range(0, len(order), size):
        chunk = [int(i) for i in order[g:g + size]]
        own = chunk[rank::world]
        steps.append((own, len(chunk), world / len(chunk)) if own else
                     ([chunk[0]], len(chunk), 0.0))
    return steps


def gather_objects(fabric: Fabric, obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` with one process)."""
    if fabric.world_size == 1:
        return [obj]
    out: list[Any] = [None] * fabric.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def reduce_sums(fabric: Fabric, sums: dict[str, float]) -> dict[str, float]:
    """Sums over the processes (the same keys on every process)."""
    if fabric.world_size == 1:
        return sums
    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=fabric.device)
    t = fabric.all_reduce(t, reduce_op="sum")
    return dict(zip(keys, t.tolist(), strict=True))


class _Shard:
    """Bags ``idx`` of a dataset, as a dataset (``len`` and ``[i]``)."""

    def __init__(self, data: Any, idx: list[int]) -> None:
        self.data, self.idx = data, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> Any:
        return self.data[self.idx[i]]


def gathered_predictions(fabric: Fabric, predict: Callable[..., tuple[np.ndarray, np.ndarray]],
                         net: Any, data: Any, task: Any) -> tuple[np.ndarray, np.ndarray]:
    """``predict(net, data, device, task)`` with the bags shared out over the processes and
    the outputs gathered back in the dataset's order: (S, M) outputs and (S,) losses."""
    world = fabric.world_size
    if world == 1:
        return predict(net, data, fabric.device, task)
    idx = list(range(fabric.global_rank, len(data), world))
    mine = predict(net, _Shard(data, idx), fabric.device, task) if idx else None
    parts = [p for p in gather_objects(fabric, (idx, mine)) if p[1] is not None]
    m = parts[0][1][0].shape[1]
    outputs, losses = np.zeros((len(data), m)), np.zeros(len(data))
    for where, (out, loss) in parts:
        outputs[where], losses[where] = out, loss
    return outputs, losses


class _Call:
    """``fn(fabric, *args)`` packed in one plain object: Lightning walks a launch's arguments
    as collections and refuses the frozen config dataclasses inside them."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args


def _worker(fabric: Fabric, call: _Call, level: int) -> Any:
    logger = logging.getLogger("srmil")
    if not logger.handlers:  # a spawned process: the parent's handlers are gone
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level if fabric.is_global_zero else logging.WARNING)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // fabric.world_size))
    return call.fn(fabric, *call.args)


def launch_distributed(fabric: Fabric, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(fabric, *args)`` in ``fabric``'s spawned processes; rank 0's return value.

    Raises:
        SrmilError: a process failed; its error's last line, with its rank.
    """
    from torch.multiprocessing.spawn import ProcessExitedException, ProcessRaisedException

    level = logging.getLogger("srmil").getEffectiveLevel()
    try:
        return fabric.launch(_worker, _Call(fn, args), level)
    except ProcessRaisedException as exc:  # the worker's traceback as text: keep its last line
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else "failed"
        raise SrmilError(f"training process {exc.error_index}: "
                         f"{last.split(': ', 1)[-1] if 'Error' in last.split(': ')[0] else last}"
                         ) from None
    except ProcessExitedException as exc:
        raise SrmilError(f"training process {exc.error_index} died (exit code "
                         f"{exc.exit_code})") from None
