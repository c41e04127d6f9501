"""Folds and model specs as parallel jobs: ``--executor local|slurm`` through submitit.

``srmil cv --executor …`` (and ``compare``) first sets up the shared run directory in this
process (every input checked, nothing submitted when one is bad), then submits one task per
unfinished fold (× spec): each is the same job ``srmil cv --fold K`` would run, joining the
directory; the task that finishes the last fold writes the summary. ``local`` runs the tasks as
local processes, ``jobs`` at a time (GPUs handed out per slot); ``slurm`` submits them as one
job array (``jobs``: its parallelism); ``debug`` is submitit's in-process executor.

submitit stores each task and its outcome as pickles in its own folder (``<out>/logs``): that
is submitit's transport between our processes, never a file srmil reads from a user.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srmil.config import ExecutorConfig, RunConfig
from srmil.errors import SrmilError, first_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldTask:
    """One job: a fold of ``cv``, or a (spec, fold) of ``compare``; plain, picklable data."""

    labels: str
    bags: str
    out: str
    cfg: RunConfig
    fold: int
    splits: str | None = None
    resume: bool = False
    lock: str = "auto"
    threads: int | None = None
    specs: tuple[str, ...] = ()  # compare: every spec of the comparison
    spec: str | None = None  # compare: this job's spec
    reference: str | None = None
    log_level: int = logging.INFO

    @property
    def name(self) -> str:
        return f"fold {self.fold}" if self.spec is None else f"{self.spec} fold {self.fold}"


@dataclass(frozen=True)
class TaskOutcome:
    """What a task reports back: ``error`` (one line) when it failed, else ``None``."""

    name: str
    error: str | None = None
    seconds: float = 0.0
    job_id: str = ""
    log: str = ""
    finished: bool = False  # this task wrote the summary / table


@dataclass(frozen=True)
class Submission:
    """The tasks handed to the executor and what came back (``outcomes`` empty when not
    waited for)."""

    job_ids: list[str]
    outcomes: list[TaskOutcome] = field(default_factory=list)
    folder: Path | None = None

    @property
    def failed(self) -> list[TaskOutcome]:
        return [o for o in self.outcomes if o.error is not None]


def run_task(task: FoldTask) -> TaskOutcome:
    """The body of one job (a submitit task, in its own process): train the fold, and write
    the summary when it was the last one. Bad input is returned as one line, not raised."""
    logger = logging.getLogger("srmil")
    if not logger.handlers:  # a fresh job process: progress to its log file (stderr)
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"[{task.name}] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(task.log_level)
        logger.propagate = False
    if task.threads:
        import torch

        torch.set_num_threads(task.threads)
    from srmil import api

    t0 = time.perf_counter()
    try:
        if task.spec is None:
            r = api.cv(task.labels, task.bags, task.out, task.cfg, splits=task.splits,
                       resume=task.resume, fold=task.fold, lock=task.lock)
            finished = not r.missing
        else:
            c = api.compare(task.labels, task.bags, task.out, list(task.specs), task.cfg,
                            task.reference, task.splits, task.resume, spec=task.spec,
                            fold=task.fold, lock=task.lock)
            finished = not c.missing
    except SrmilError as exc:
        return TaskOutcome(task.name, first_line(str(exc)), time.perf_counter() - t0)
    return TaskOutcome(task.name, None, time.perf_counter() - t0, finished=finished)


def _executor(kind: str, folder: Path, cfg: ExecutorConfig, n_tasks: int,
              gpus: Sequence[int] = ()) -> Any:
    try:
        import submitit
    except ImportError:
        raise SrmilError("--executor needs submitit: pip install 'submitit>=1.5,<1.6'") from None
    if kind == "local":  # the local executor itself: AutoExecutor hides visible_gpus
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=cfg.timeout_min, gpus_per_node=len(gpus),
                             visible_gpus=tuple(gpus))
        return ex
    try:
        ex = submitit.AutoExecutor(folder=folder, cluster=kind)
    except RuntimeError as exc:  # slurm: no srun here
        raise SrmilError(f"--executor {kind}: {first_line(str(exc))} (submit from a node of "
                         "the cluster, e.g. its login node)") from None
    params: dict[str, Any] = {"name": "srmil", "timeout_min": cfg.timeout_min}
    if kind == "slurm":
        params.update(gpus_per_node=cfg.gpus_per_node, cpus_per_task=cfg.cpus_per_task,
                      mem_gb=cfg.mem_gb, slurm_setup=list(cfg.setup),
                      slurm_array_parallelism=cfg.jobs or n_tasks)
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(cfg, key):
                params[f"slurm_{key}"] = getattr(cfg, key)
        if cfg.additional:
            params["slurm_additional_parameters"] = dict(cfg.additional)
    ex.update_parameters(**params)
    return ex


def _outcome(task: FoldTask, job: Any) -> TaskOutcome:
    """The task's outcome from its finished job; a crash is one line and the log's path."""
    logpath = str(getattr(getattr(job, "paths", None), "stderr", "") or "")
    try:
        out: TaskOutcome = job.result()
    except Exception as exc:  # noqa: BLE001 - the job's failure, reported per task
        return TaskOutcome(task.name, first_line(str(exc)) or type(exc).__name__,
                           job_id=str(job.job_id), log=logpath)
    return TaskOutcome(out.name, out.error, out.seconds, str(job.job_id), logpath, out.finished)


def _gpu_slots(cfg: ExecutorConfig) -> list[tuple[int, ...]]:
    """Per concurrent local job: its GPUs (``gpus_per_node`` each, distinct while they last)."""
    if cfg.gpus_per_node <= 0:
        return [()] * cfg.jobs
    import torch

    n = torch.cuda.device_count()
    if n < cfg.gpus_per_node:
        raise SrmilError(f"executor.gpus_per_node={cfg.gpus_per_node}, but {n} GPU(s) here")
    g = cfg.gpus_per_node
    return [tuple((i * g + j) % n for j in range(g)) for i in range(cfg.jobs)]


def submit_tasks(tasks: list[FoldTask], cfg: ExecutorConfig, folder: Path) -> Submission:
    """Run ``tasks`` on the executor ``cfg.kind``; with ``cfg.wait`` (always for local/debug),
    until every one has ended.

    Returns:
        The job ids and, when waited for, one outcome per task (in task order).
    """
    folder = Path(folder)
    if cfg.kind == "slurm":
        ex = _executor("slurm", folder, cfg, len(tasks))
        with ex.batch():
            jobs = [ex.submit(run_task, t) for t in tasks]
        ids = [str(j.job_id) for j in jobs]
        log.info("submitted %d SLURM job(s) %s (logs in %s)", len(jobs),
                 ids[0].split("_")[0] if ids else "", folder)
        if not cfg.wait:
            return Submission(ids, [], folder)
        return Submission(ids, [_outcome(t, j) for t, j in zip(tasks, jobs, strict=True)],
                          folder)
    if cfg.kind == "debug":
        ex = _executor("debug", folder, cfg, len(tasks))
        jobs = [ex.submit(run_task, t) for t in tasks]
        outs = [_outcome(t, j) for t, j in zip(tasks, jobs, strict=True)]
        return Submission([str(j.job_id) for j in jobs], outs, folder)
    return _run_local(tasks, cfg, folder)


def _run_local(tasks: list[FoldTask], cfg: ExecutorConfig, folder: Path) -> Submission:
    """Local processes, ``cfg.jobs`` at a time: a freed slot takes the next task."""
    slots = _gpu_slots(cfg)
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // cfg.jobs)
    pending = list(enumerate(tasks))
    running: dict[int, tuple[int, FoldTask, Any]] = {}  # slot → (index, task, job)
    outcomes: dict[int, TaskOutcome] = {}
    ids: list[str] = [""] * len(tasks)
    t0 = time.perf_counter()
    while pending or running:
        for slot in range(cfg.jobs):
            if slot in running or not pending:
                continue
            i, task = pending.pop(0)
            task = FoldTask(**{**task.__dict__, "threads": task.threads or threads})
            job = _executor("local", folder, cfg, len(tasks), slots[slot]).submit(run_task, task)
            ids[i] = str(job.job_id)
            running[slot] = (i, task, job)
            log.info("%s: started (local job %s, %d at a time)", task.name, job.job_id, cfg.jobs)
        time.sleep(cfg.poll_s)
        for slot, (i, task, job) in list(running.items()):
            if job.done():
                outcomes[i] = _outcome(task, job)
                del running[slot]
                o = outcomes[i]
                log.info("%s: %s (%d of %d, %.0f s elapsed)", task.name,
                         "finished" if o.error is None else f"failed: {o.error}",
                         len(outcomes), len(tasks), time.perf_counter() - t0)
    return Submission(ids, [outcomes[i] for i in range(len(tasks))], folder)


def failure_line(sub: Submission) -> str:
    """One line naming every failed task, why, and where its log is."""
    parts = [f"{o.name}: {o.error}" + (f" (log {o.log})" if o.log else "") for o in sub.failed]
    return f"{len(sub.failed)} of {len(sub.outcomes)} job(s) failed: " + "; ".join(parts)


__all__ = ["FoldTask", "Submission", "TaskOutcome", "failure_line", "run_task", "submit_tasks"]
