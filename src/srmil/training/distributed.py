"""DDP training of one fold (``train.devices`` > 1) through Lightning Fabric's DDP strategy:
``devices`` processes, started by spawning, gloo on the CPU and NCCL on GPUs; or
``devices`` × ``train.num_nodes`` processes started by ``torchrun`` on every node.

- **Launch.** Spawned (one node): the process running srmil starts ``devices`` training
  processes for each fold and waits for them. ``torchrun`` (one or several nodes): every
  process runs the srmil command; rank 0 does the command's work (checks, splits, writes,
  summaries) and, for each fold, sends the fold's training call to the other ranks, which
  serve such calls (:func:`serve_rank0`) until rank 0 says it is done
  (:func:`release_ranks`). The calls travel as the spawned processes' arguments do
  (pickled by torch.distributed from rank 0: srmil's own objects, never a file).

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

import datetime
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

_external: dict[str, Any] = {"joined": False, "broken": False, "ctrl": None}  # torchrun state
_CTRL_TIMEOUT = datetime.timedelta(days=30)  # the serving ranks wait on rank 0's next call
#   while it reads the cohort, tests, writes reports: longer than a collective's 30 minutes

# What a spawned training process would print on stderr besides srmil's own lines: PyG's
# deprecation warning at import, Lightning's process-group banners, DDP's C++ note that
# find_unused_parameters found none (it is needed: several models leave parameters unused).
_CHILD_ENV = {"PYTHONWARNINGS": "ignore:`torch.jit.script` is deprecated:FutureWarning",
              "TORCH_CPP_LOG_LEVEL": "ERROR", "SRMIL_DDP_SPAWNED": "1"}
if os.environ.get("SRMIL_DDP_SPAWNED") == "1":  # imported in a spawned training process
    for _name in ("lightning.fabric.utilities.distributed", "lightning.fabric.utilities.rank_zero",
                  "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(_name).setLevel(logging.WARNING)


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by ``torchrun`` (torch elastic)."""
    return (torch.distributed.is_available() and torch.distributed.is_torchelastic_launched()
            and int(os.environ.get("WORLD_SIZE", "1")) > 1)


def torchrun_layout() -> tuple[int, int, int]:
    """``(processes per node, nodes, this process's global rank)`` as torchrun set them."""
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return local, world // local, int(os.environ["RANK"])


def check_launch(devices: int, num_nodes: int) -> None:
    """Refuse a DDP layout the processes do not have (before anything is written).

    Raises:
        SrmilError: torchrun started other than ``devices`` × ``num_nodes`` processes, or
            ``num_nodes`` > 1 without torchrun.
    """
    if launched_by_torchrun():
        per_node, nodes, _ = torchrun_layout()
        if (devices, num_nodes) != (per_node, nodes):
            raise SrmilError(f"torchrun started {nodes} node(s) × {per_node} process(es); "
                             f"pass --devices {per_node} --num-nodes {nodes} (train.devices "
                             f"{devices}, train.num_nodes {num_nodes})")
    elif num_nodes > 1:
        raise SrmilError(f"train.num_nodes {num_nodes} needs srmil started on every node by "
                         "torchrun (README: Running on a cluster)")


def join_torchrun() -> int:
    """Join the process group torchrun set up (gloo on the CPU, NCCL for CUDA tensors);
    this process's global rank."""
    if not _external["joined"]:
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
        _external["ctrl"] = torch.distributed.new_group(backend="gloo", timeout=_CTRL_TIMEOUT)
        _external["joined"] = True
    return torch.distributed.get_rank()


def serve_rank0() -> int:
    """A torchrun rank other than 0: train the folds rank 0 sends, until it is done.

    Returns:
        The exit code: 0, or 2 after a fold failed here (its error logged in one line).
    """
    rank = join_torchrun()
    while True:
        msg: list[Any] = [None]
        torch.distributed.broadcast_object_list(msg, src=0, group=_external["ctrl"])
        if msg[0] is None:
            torch.distributed.destroy_process_group()
            return 0
        make, call, level = msg[0]
        try:
            make().launch(_worker, call, level)
        except SrmilError as exc:
            log.error("training process %d: %s", rank, exc)
            return 2


def release_ranks() -> None:
    """Rank 0 of a torchrun launch is done: the serving ranks stop (not after a fold failed
    mid-way: the others are inside its collectives, and torchrun stops them)."""
    if _external["joined"] and not _external["broken"]:
        torch.distributed.broadcast_object_list([None], src=0, group=_external["ctrl"])
        torch.distributed.destroy_process_group()
    _external["joined"] = False


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


def _worker(fabric: Fabric, call: _Call, level: int, spawned: bool = False) -> Any:
    logger = logging.getLogger("srmil")
    if not logger.handlers:  # a spawned process: the parent's handlers are gone
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level if fabric.is_global_zero else logging.WARNING)
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", fabric.world_size))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))
    out = call.fn(fabric, *call.args)
    if spawned and torch.distributed.is_initialized():
        # a spawned process leaves its group here: torn down at interpreter exit instead,
        # gloo's threads may still run and the process aborts (exit code -6)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return out


def launch_distributed(fabric: Fabric, fn: Callable[..., Any], *args: Any,
                       remote: Callable[[], Fabric] | None = None) -> Any:
    """Run ``fn(fabric, *args)`` in every DDP process; rank 0's return value.

    Spawned: in ``fabric``'s new processes. Under torchrun: here (rank 0), and in the other
    ranks, which receive ``fn``, ``args`` and ``remote`` (a picklable factory of their own
    Fabric, without rank 0's loggers) from :func:`serve_rank0`.

    Raises:
        SrmilError: a process failed; its error's last line, with its rank.
    """
    from torch.multiprocessing.spawn import ProcessExitedException, ProcessRaisedException

    level = logging.getLogger("srmil").getEffectiveLevel()
    if launched_by_torchrun():
        if remote is None:
            raise SrmilError("a torchrun launch needs the other ranks' Fabric")
        join_torchrun()
        call = _Call(fn, args)
        torch.distributed.broadcast_object_list([(remote, call, level)], src=0,
                                                group=_external["ctrl"])
        try:
            return fabric.launch(_worker, call, level)
        except BaseException:
            _external["broken"] = True  # the other ranks may be inside a collective
            raise
    saved = {k: os.environ.get(k) for k in _CHILD_ENV}
    os.environ.update({k: v for k, v in _CHILD_ENV.items() if saved[k] is None})
    try:
        return fabric.launch(_worker, _Call(fn, args), level, True)
    except ProcessRaisedException as exc:  # the worker's traceback as text: keep its last line
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else "failed"
        raise SrmilError(f"training process {exc.error_index}: "
                         f"{last.split(': ', 1)[-1] if 'Error' in last.split(': ')[0] else last}"
                         ) from None
    except ProcessExitedException as exc:
        raise SrmilError(f"training process {exc.error_index} died (exit code "
                         f"{exc.exit_code})") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
