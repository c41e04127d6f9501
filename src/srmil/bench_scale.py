"""``srmil bench scale``: folds per hour of ``cv --executor local`` at 1 and more jobs at a time,
and the epoch time of one fold trained by 1 and more DDP processes (``train.devices``).

A benchmark: it prints figures, tests never time anything. Every job is a fresh process
(Python, torch and srmil imported again), so the figures include what a SLURM array task pays
on start, and on a machine shared with other work they move with its load (reported).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from srmil.config import (
    ExecutorConfig,
    RunConfig,
    ScaleBenchConfig,
    SplitConfig,
    SynthConfig,
    TrainConfig,
)


def bench_scale(cfg: ScaleBenchConfig | None = None) -> dict[str, Any]:
    """Cross-validate one synthetic cohort once per entry of ``cfg.jobs`` on the local
    executor and time it.

    Returns:
        ``{"config", "cpus", "rows": [{jobs, threads, wall_s, folds_per_hour, speedup,
        epoch_s, load_before, load_after}]}``; ``epoch_s`` is the training time inside the
        jobs (sum of every fold's epochs), the rest of ``wall_s`` is start-up, data and
        evaluation.
    """
    from srmil import api
    from srmil.training.rundir import RunDir

    cfg = cfg or ScaleBenchConfig()
    cpus = os.cpu_count() or 1
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="srmil-bench-scale-") as tmp:
        root = Path(tmp)
        cohort = api.synth(root / "cohort", SynthConfig(slides=cfg.slides, dim=cfg.dim,
                                                        seed=cfg.seed))
        run_cfg = RunConfig(model=cfg.model,
                            train=TrainConfig(epochs=cfg.epochs, seed=cfg.seed, bootstrap=100,
                                              accelerator="cpu"),
                            split=SplitConfig(folds=cfg.folds, seed=cfg.seed))
        for jobs in cfg.jobs:
            ex = ExecutorConfig(kind="local", jobs=jobs, poll_s=0.2, threads=cfg.threads)
            load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            t0 = time.perf_counter()
            res = api.cv(cohort.labels, cohort.bags, root / f"run_jobs{jobs}", run_cfg,
                         executor=ex)
            wall = time.perf_counter() - t0
            run = RunDir(res.path)
            epoch_s = sum(float(run.history(k)["seconds"].sum()) for k in run.split_folds())
            rows.append({"jobs": jobs, "threads": cfg.threads or max(1, cpus // jobs),
                         "wall_s": wall,
                         "folds_per_hour": cfg.folds * 3600.0 / wall, "epoch_s": epoch_s,
                         "load_before": load0,
                         "load_after": os.getloadavg()[0] if hasattr(os, "getloadavg")
                         else float("nan")})
        ddp = [_time_ddp(cohort, root / f"ddp{d}", run_cfg, d, cfg.threads)
               for d in cfg.devices]
    base = rows[0]["wall_s"] if rows else float("nan")
    for r in rows:
        r["speedup"] = base / r["wall_s"]
    one = ddp[0]["epoch_s"] if ddp else float("nan")
    for r in ddp:  # efficiency < 1: communication, waiting for the slowest process, start-up
        r["speedup"] = one / r["epoch_s"]
        r["efficiency"] = r["speedup"] / (r["devices"] / ddp[0]["devices"])
    return {"config": {"slides": cfg.slides, "dim": cfg.dim, "folds": cfg.folds,
                       "epochs": cfg.epochs, "model": cfg.model}, "cpus": cpus, "rows": rows,
            "ddp": ddp}


def _time_ddp(cohort: Any, out: Path, run_cfg: RunConfig, devices: int,
              threads: int | None) -> dict[str, Any]:
    """Fold 0 trained by ``devices`` DDP processes, one bag per process per step: the median
    epoch time (the first epoch, which reads the bags, left out when there are more) and the
    whole fold's wall time (process start-up included). One process runs here with
    ``threads`` torch threads (default: all cores); DDP processes take cores / devices."""
    import dataclasses

    import torch

    from srmil import api
    from srmil.training.rundir import RunDir

    cfg = dataclasses.replace(run_cfg, train=dataclasses.replace(run_cfg.train,
                                                                  devices=devices))
    before = torch.get_num_threads()
    if devices == 1 and threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        res = api.train(cohort.labels, cohort.bags, out, cfg, fold=0)
    finally:
        torch.set_num_threads(before)
    wall = time.perf_counter() - t0
    seconds = RunDir(res.path).history(0)["seconds"].to_numpy()
    seconds = seconds[1:] if len(seconds) > 1 else seconds
    return {"devices": devices, "epoch_s": float(sorted(seconds)[len(seconds) // 2]),
            "wall_s": wall, "threads": (threads or os.cpu_count() or 1) if devices == 1 else
            max(1, (os.cpu_count() or 1) // devices)}


def format_scale_table(result: dict[str, Any]) -> str:
    """The figures as a text table."""
    c = result["config"]
    lines = [f"cv --executor local: {c['folds']} folds × {c['epochs']} epochs of {c['model']} "
             f"on a synthetic cohort of {c['slides']} slides (dim {c['dim']}); "
             f"{result['cpus']} CPU(s)",
             f"{'jobs':>4} {'threads':>7} {'wall s':>8} {'folds/h':>8} {'speed-up':>8} "
             f"{'epochs s':>8} {'load 1-min before/after':>24}"]
    for r in result["rows"]:
        lines.append(f"{r['jobs']:>4} {r['threads']:>7} {r['wall_s']:>8.1f} "
                     f"{r['folds_per_hour']:>8.0f} {r['speedup']:>8.2f} {r['epoch_s']:>8.1f} "
                     f"{r['load_before']:>11.1f} / {r['load_after']:<11.1f}")
    if result.get("ddp"):
        lines += ["", "train --devices N (DDP, gloo on the CPU): fold 0, 1 bag per process per "
                  "step", f"{'devices':>7} {'threads':>7} {'epoch s':>8} {'speed-up':>8} "
                  f"{'efficiency':>10} {'fold wall s':>11}"]
        for r in result["ddp"]:
            lines.append(f"{r['devices']:>7} {r['threads']:>7} {r['epoch_s']:>8.2f} "
                         f"{r['speedup']:>8.2f} "
                         f"{r['efficiency']:>10.2f} {r['wall_s']:>11.1f}")
    return "\n".join(lines)
