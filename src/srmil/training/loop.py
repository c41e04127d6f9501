"""Training of one fold with Lightning Fabric: ``train.bags_per_step`` bags per step
(:mod:`srmil.training.batch`; 1 as the reference), AdamW, cosine annealing per
epoch, selection on validation, the test split evaluated once on the selected model.

Fabric (Lightning's loop-level API) runs the devices and precision; the loop itself is ours so
that checkpoints hold only tensors and plain types (``weights_only=True``) and a resumed run
repeats an uninterrupted one exactly (RNG states are saved with every epoch).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.fabric import Fabric
from tqdm import tqdm

from srmil import __version__
from srmil.config import TrainConfig, to_dict
from srmil.errors import SrmilError, exc_line
from srmil.models.base import MILModel, create_model
from srmil.storage import write_csv, write_json, write_text
from srmil.tasks import ClassificationTask, Task
from srmil.training.batch import train_step
from srmil.training.calibration import apply_temperature, fit_fold_temperature, scored
from srmil.training.checkpoint import load_state, load_weights, save_state, save_weights
from srmil.training.data import BagDataset, prefetched
from srmil.training.distributed import (
    check_launch,
    gather_objects,
    gathered_predictions,
    launch_distributed,
    launched_by_torchrun,
    rank_steps,
    reduce_sums,
)
from srmil.training.logs import close_loggers, epoch_end, make_loggers
from srmil.training.optim import build_optimizer
from srmil.training.sampling import check_classification_only, class_weights, epoch_order
from srmil.training.selection import eligible, is_better

log = logging.getLogger(__name__)


def make_fabric(cfg: TrainConfig, loggers: list | None = None) -> Fabric:
    """Fabric on one device, or DDP (:mod:`srmil.training.distributed`): over ``cfg.devices``
    spawned processes, or over the ``cfg.devices`` × ``cfg.num_nodes`` processes torchrun
    started; ``auto`` picks GPUs when present, else the CPU.

    Raises:
        SrmilError: the accelerator is unknown or unavailable, or the processes torchrun
            started are not ``devices`` × ``num_nodes``.
    """
    from lightning.fabric.plugins.environments import (
        LightningEnvironment,
        TorchElasticEnvironment,
    )
    from lightning.fabric.strategies import DDPStrategy

    accelerator, devices, strategy, plugins = cfg.accelerator, cfg.devices, "auto", None
    if accelerator.startswith("cuda:") and accelerator[5:].isdigit():  # one named GPU
        if cfg.devices > 1 or cfg.num_nodes > 1:
            raise SrmilError(f"accelerator {cfg.accelerator!r} names one GPU; train.devices "
                             f"{cfg.devices} × train.num_nodes {cfg.num_nodes} needs "
                             "accelerator cuda (or auto)")
        accelerator, devices = "cuda", [int(accelerator[5:])]
    check_launch(cfg.devices, cfg.num_nodes)
    if launched_by_torchrun():
        # explicit: inside a SLURM allocation Lightning would otherwise read SLURM's ranks
        strategy = DDPStrategy(find_unused_parameters=True)
        plugins = [TorchElasticEnvironment()]
    elif cfg.devices > 1:
        strategy = DDPStrategy(start_method="spawn", find_unused_parameters=True)
        plugins = [LightningEnvironment()]  # this node's processes, whatever SLURM says
    try:
        return Fabric(accelerator=accelerator, devices=devices, num_nodes=cfg.num_nodes,
                      precision=cfg.precision, loggers=loggers, strategy=strategy,
                      plugins=plugins)
    except (ValueError, RuntimeError, TypeError) as exc:  # unknown or unavailable accelerator
        raise SrmilError(f"accelerator {cfg.accelerator!r}: {exc_line(exc)}") from None


@torch.inference_mode()
def predict_proba(
    net: MILModel, data: BagDataset, device: torch.device | str = "cpu", task: Task | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode predictions: class probabilities, or the task's outputs
    (:meth:`srmil.tasks.Task.transform`: survival risk and per-bin survival, regression value).

    Args:
        task: the fold's fitted task (default: the model's, classification when it has none).

    Returns:
        outputs (S, M) float64 (classification: probabilities (S, C)) and the task loss per
        slide (S,) (NaN when unlabelled).
    """
    task = task or net.task
    net.eval()
    probs, losses, outs, targets = [], [], [], []
    batch_level = getattr(task, "batch_level", False)
    for i in range(len(data)):
        bag = data[i].to(device)
        logits = net(bag).float()  # (K,)
        if task is None:
            probs.append(logits.softmax(-1).cpu().numpy())
        else:
            probs.append(task.transform(logits))
        if batch_level:  # one loss over the whole split (Cox: every slide in the risk sets)
            if bag.y is not None:
                outs.append(logits)
                targets.append(torch.tensor(bag.y, device=logits.device, dtype=torch.float64))
            losses.append(np.nan)
        elif bag.y is not None:
            t = torch.tensor([bag.y] if task is None else bag.y, device=logits.device)
            losses.append(float(torch.nn.functional.cross_entropy(logits[None], t)
                                if task is None else task.loss(logits, t)))
        else:
            losses.append(np.nan)
    if batch_level and outs and len(outs) == len(data):
        losses = [float(task.batch_loss(torch.stack(outs), torch.stack(targets)))] * len(data)
    m = net.n_classes if task is None else (probs[0].shape[0] if probs else net.n_classes)
    return np.asarray(probs, dtype=np.float64).reshape(-1, m), np.asarray(losses)


def prediction_table(data: BagDataset, probs: np.ndarray, classes: list[str],
                     split: str | None = None, task: Task | None = None) -> pd.DataFrame:
    """``slide_id, [split], label, target, pred, prob_<class>…`` (classification), or the
    task's columns (:meth:`srmil.tasks.Task.table`); for patient bags ``case_id, slides``
    (the case's slides, ``;``-separated) instead of ``slide_id``."""
    task = task or ClassificationTask(classes)
    df = pd.DataFrame({getattr(data, "id_column", "slide_id"): data.slide_ids})
    if hasattr(data, "members"):
        df["slides"] = [";".join(data.members[c]) for c in data.slide_ids]
    if split is not None:
        df["split"] = split
    for col, values in task.table(probs, data.targets).items():
        df[col] = values
    return df


def _rng_state() -> dict[str, Any]:
    st: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["cpu"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _meta(model_name: str, in_dim: int, classes: list[str], net: MILModel) -> dict[str, Any]:
    """Metadata stored beside the weights: enough to rebuild the model without the run (the
    fitted task too, for survival and regression)."""
    meta = {"model": model_name, "in_dim": in_dim, "n_classes": net.n_classes,
            "classes": classes, "model_config": to_dict(net.cfg), "srmil_version": __version__}
    if net.task is not None:
        meta["task"] = net.task.state()
    return meta


def stop_early(cfg: TrainConfig, history: list[dict[str, Any]], best: dict[str, Any] | None
               ) -> bool:
    """``train.early_stopping`` (CLAM's rule): stop once the val loss has not gone below its
    minimum for that many epochs, and only when an eligible epoch has been selected."""
    if not cfg.early_stopping or best is None or not history:
        return False
    losses = np.array([r["val_loss"] for r in history], dtype=float)
    if not np.isfinite(losses).any():
        return False
    return len(losses) - 1 - int(np.nanargmin(losses)) >= cfg.early_stopping


def fit_fold(
    fold_dir: Path,
    model_name: str,
    model_overrides: dict[str, Any],
    in_dim: int,
    classes: list[str],
    train: BagDataset,
    val: BagDataset,
    test: BagDataset,
    cfg: TrainConfig,
    resume: bool = False,
    desc: str = "",
    task: Task | None = None,
) -> dict[str, Any]:
    """Train, select and test one fold; everything lands in ``fold_dir``.

    ``task`` (default classification over ``classes``) is fitted here on the training split's
    targets (survival time bins, regression standardisation) and saved as ``task.json``.

    Files: ``last.pt`` (every epoch), ``best.safetensors`` (on improvement), ``history.csv``,
    ``logs/`` (Lightning loggers), then ``calibration.json`` (``train.calibrate``),
    ``predictions.csv`` (val and test), ``metrics.json`` and ``DONE`` (written last).
    A fold with ``DONE`` is returned as it is.

    ``train.class_weights`` scale each bag's whole objective, ``parts["total"] · w[y]`` (mean
    weight over the training bags 1): with one bag per step, a weighted cross-entropy with mean
    reduction would divide the weight out again. For SRMIL the label-independent
    reconstruction term is weighted with its bag, as the balanced sampler weights it in
    expectation (:mod:`srmil.training.sampling`).

    Returns:
        The fold's metrics (``best_epoch``, ``val``, ``test``).
    """
    done = fold_dir / "DONE"
    if done.exists():
        return json.loads((fold_dir / "metrics.json").read_text())
    if len(train) == 0 or len(val) == 0:
        raise SrmilError(f"{fold_dir.name}: the {'train' if len(train) == 0 else 'val'} split "
                         "is empty")
    task = task or ClassificationTask(classes)
    if task.name != "classification":
        check_classification_only(cfg, task.name)
        try:
            task.fit(train.targets)
        except SrmilError as exc:
            raise SrmilError(str(exc), fold_dir) from None
    weights = class_weights(cfg, train.targets, classes)  # (C,) or None; before any write
    epoch_order(cfg, train.targets, classes, 0)  # a class the sampler cannot draw: fail now
    fold_dir.mkdir(parents=True, exist_ok=True)
    if not resume and ((fold_dir / "last.pt").exists()
                       or (fold_dir / "best.safetensors").exists()):
        raise SrmilError("holds an unfinished fold; pass --resume to continue it", fold_dir)
    fabric = make_fabric(cfg, make_loggers(cfg, fold_dir))
    args = (fold_dir, model_name, model_overrides, in_dim, classes, train, val, test, cfg,
            resume, desc, task, weights)
    if fabric.world_size > 1:  # DDP: devices × num_nodes processes train the fold
        return launch_distributed(fabric, _train_fold, *args,
                                  remote=functools.partial(make_fabric, cfg))
    return _train_fold(fabric, *args)


def _train_fold(fabric: Fabric, fold_dir: Path, model_name: str, model_overrides: dict[str, Any],
                in_dim: int, classes: list[str], train: BagDataset, val: BagDataset,
                test: BagDataset, cfg: TrainConfig, resume: bool, desc: str, task: Task,
                weights: np.ndarray | None) -> dict[str, Any] | None:
    """:func:`fit_fold` after its checks, in every DDP process (one when ``devices`` is 1);
    only rank 0 writes, and only rank 0 returns the metrics (the other ranks ``None``)."""
    done = fold_dir / "DONE"
    n_classes = len(classes)
    rank, world, zero = fabric.global_rank, fabric.world_size, fabric.is_global_zero
    torch.manual_seed(cfg.seed)
    net = create_model(model_name, in_dim, task.out_dim, model_overrides, task)
    opt, sched = build_optimizer(cfg, net)  # METHOD.md default: AdamW + cosine per epoch
    model, opt = fabric.setup(net, opt)
    model.mark_forward_method("loss")  # through Fabric's wrapper: its precision plugin applies
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    start = 0
    last = fold_dir / "last.pt"
    if resume and last.exists():
        st = load_state(last)
        net.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        rngs = st.get("rng_ranks", [st["rng"]])
        if len(rngs) != world:
            raise SrmilError(f"last.pt was written by {len(rngs)} process(es), this run has "
                             f"{world}", fold_dir)
        _set_rng_state(rngs[rank])
        history, best, start = st["history"], st["best"], int(st["epoch"]) + 1
        best_state = st["best_state"] if zero else None
        if zero and best is not None:  # the best weights travel in last.pt: rewrite them
            save_weights(fold_dir / "best.safetensors", best_state,
                         {**_meta(model_name, in_dim, classes, net), "epoch": best["epoch"]})
    elif rank > 0:  # each process its own masks and dropout (rank 0 keeps the reference's)
        torch.manual_seed(cfg.seed + rank)
    if stop_early(cfg, history, best):  # resumed after it had stopped early: no more epochs
        start = cfg.epochs
    if zero and task.name != "classification":  # the same on resume: fitted on the same split
        write_json(fold_dir / "task.json", task.state(), overwrite=True)
    meta = _meta(model_name, in_dim, classes, net)
    for name, data in (("val", val), ("test", test)):
        if not zero:
            break
        if task.name == "classification":
            absent = sorted(set(range(n_classes)) - set(data.targets or []))
            if len(data) and absent:
                log.warning("%s: the %s split has no slide of class(es) %s; its AUC is "
                            "undefined (NaN)", fold_dir.name, name,
                            ", ".join(classes[c] for c in absent))
        elif task.name == "survival" and len(data) and not any(e for _, e in data.targets):
            log.warning("%s: the %s split has no observed event; its c-index is undefined "
                        "(NaN)", fold_dir.name, name)
    tty = zero and sys.stderr.isatty() and log.isEnabledFor(logging.INFO)  # bars: terminals
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        order = epoch_order(cfg, train.targets, classes, epoch)
        steps = rank_steps(order, cfg.bags_per_step, world, rank)
        sums: dict[str, float] = {}
        bar = tqdm(total=len(order), desc=f"{desc}epoch {epoch + 1}/{cfg.epochs}", unit="bag",
                   disable=not tty, leave=False, file=sys.stderr)
        bags = prefetched(train, [i for own, _, _ in steps for i in own],  # read ahead unless
                          cfg.loader_workers)                              # cached
        for step, (own, n_global, scale) in enumerate(steps, 1):
            opt.zero_grad(set_to_none=True)
            values = train_step(fabric, model, net, islice(bags, len(own)), len(own), weights,
                                task, scale)
            opt.step()
            n = len(own) if scale else 0  # a stand-in bag (scale 0) is not counted
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v * n  # bag-weighted: the epoch mean per bag
            fabric.log_dict({f"step/{k}": v for k, v in values.items()},
                            step=epoch * len(steps) + step)
            bar.update(n_global)
            seen = min(step * cfg.bags_per_step, len(order))
            bar.set_postfix({k: f"{v / seen:.3f}" for k, v in sums.items()}, refresh=False)
        bar.close()
        sums = reduce_sums(fabric, sums)  # over the processes: every bag's parts
        lr = opt.param_groups[0]["lr"]
        sched.step()
        probs, losses = gathered_predictions(fabric, predict_proba, net, val, net.task)
        vm = task.metrics(val.targets, probs)
        row = {"epoch": epoch, "lr": lr,
               **{f"train_{k}": v / max(len(order), 1) for k, v in sums.items()},
               "val_loss": float(np.nanmean(losses)), **task.history(vm),
               "seconds": time.perf_counter() - t0}
        history.append(row)
        epoch_end(fabric, row, step=(epoch + 1) * len(steps))
        key = task.selection_key(vm)  # the same on every process: the same gathered outputs
        if eligible(epoch, cfg.epochs, cfg.select_after) and is_better(
            key, None if best is None else tuple(best["key"])
        ):
            best = {"epoch": epoch, "key": list(key)}
            best_state = ({k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
                          if zero else None)
        rngs = gather_objects(fabric, _rng_state())  # every process's, for an exact resume
        stop = stop_early(cfg, history, best)  # the same on every process
        if not zero:
            if stop:
                break
            continue
        # last.pt first, holding the best weights too; best.safetensors is derived from it, so a
        # kill between the two writes cannot leave a best file that disagrees with last.pt
        save_state(last, {
            "model": net.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "rng": rngs[0], "epoch": epoch,
            "history": history, "best": best, "best_state": best_state,
            **({"rng_ranks": rngs} if world > 1 else {}),
        })
        if best is not None and best["epoch"] == epoch:
            save_weights(fold_dir / "best.safetensors", best_state, {**meta, "epoch": epoch})
        write_csv(fold_dir / "history.csv", pd.DataFrame(history), overwrite=True)
        if not tty and log.isEnabledFor(logging.INFO):
            parts_txt = " ".join(f"{k}={v / max(len(order), 1):.3f}" for k, v in sums.items())
            if task.name == "classification":
                log.info("%sepoch %d/%d %s val_acc=%.3f val_auc=%.3f", desc, epoch + 1,
                         cfg.epochs, parts_txt, vm["accuracy"], vm["auc"])
            else:
                log.info("%sepoch %d/%d %s val_%s=%.3f", desc, epoch + 1, cfg.epochs,
                         parts_txt, task.select_metric, vm[task.select_metric])
        if stop:
            log.info("%searly stopping after epoch %d: no lower val loss for %d epochs", desc,
                     epoch + 1, cfg.early_stopping)
            break
    if not zero:
        return None  # rank 0 alone tests the selected model and writes the fold's results
    close_loggers(fabric)
    if best is None:
        raise SrmilError("no epoch was eligible for selection", fold_dir)
    if load_weights(fold_dir / "best.safetensors", net).get("epoch") != best["epoch"]:
        raise SrmilError("best.safetensors does not hold the selected epoch", fold_dir)
    out: dict[str, Any] = {"best_epoch": best["epoch"]}
    if weights is not None:
        out["class_weights"] = weights.tolist()
    train_risk: np.ndarray | None = None
    if task.name == "survival":  # the report's risk groups split at the training median
        train_out, _ = predict_proba(net, train, fabric.device, net.task)
        train_risk = train_out[:, 0]
        if task.batch_level:  # Cox: Breslow's baseline hazard, saved with the fold's model
            task.fit_outputs(train_out)
            write_json(fold_dir / "task.json", task.state(), overwrite=True)
            save_weights(fold_dir / "best.safetensors", best_state,
                         {**_meta(model_name, in_dim, classes, net), "epoch": best["epoch"]})
    raw = {name: predict_proba(net, data, fabric.device, net.task)[0]
           for name, data in (("val", val), ("test", test)) if len(data)}
    temperature = fit_fold_temperature(cfg, fold_dir, np.asarray(val.targets), raw["val"])
    if temperature is not None:
        out["temperature"] = temperature
    tables = []
    for name, data in (("val", val), ("test", test)):
        if len(data) == 0:
            continue
        probs = raw[name] if temperature is None else apply_temperature(raw[name], temperature)
        out[name] = task.metrics(data.targets, probs)
        if task.name == "classification":
            y = np.asarray(data.targets)
            out[name].update(scored(y, probs, None if temperature is None else raw[name]))
        tables.append(prediction_table(data, probs, classes, name, task))
    if train_risk is not None:
        out["train_risk_median"] = float(np.median(train_risk))
    write_csv(fold_dir / "predictions.csv", pd.concat(tables, ignore_index=True), overwrite=True)
    write_json(fold_dir / "metrics.json", out, overwrite=True)
    write_text(done, f"best epoch {best['epoch']}\n", overwrite=True)
    return out
