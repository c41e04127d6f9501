"""A run: config, classes and splits saved, one ``fold_K/`` per fold, then the summary.

The layout is owned by :class:`srmil.training.rundir.RunDir`.

A finished run is never overwritten; an unfinished one continues only with ``resume``, and
then with the very config it was started with.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from srmil import __version__
from srmil.bags.cohort import Cohort
from srmil.bags.splits import validate_splits
from srmil.config import SECTIONS, RunConfig, from_dict, to_dict
from srmil.errors import ConfigError, SrmilError
from srmil.models.base import MODELS
from srmil.storage import write_csv, write_json, write_text
from srmil.tasks import TASKS, Task, make_task, task_of_state
from srmil.training.data import (
    BagDataset,
    bag_headers,
    first_dim,
    patient_dataset,
    require_coords,
    require_one_label_per_case,
)
from srmil.training.logs import check_logger
from srmil.training.loop import fit_fold
from srmil.training.metrics import bootstrap_ci, bootstrap_ci_fn
from srmil.training.rundir import RunDir
from srmil.training.sampling import check_sampling

log = logging.getLogger(__name__)

SUMMARY_METRICS = ("auc", "accuracy", "balanced_accuracy", "f1", "ece", "brier")


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} in the run, {b!r} now"


def with_defaults(saved: dict[str, Any], model: bool = True) -> dict[str, Any]:
    """A saved run config with every field this version knows, defaults where it has none.

    A run written before a field existed ran with that field's default behaviour (new fields
    default to what srmil did before them), so resuming it with the default is the same run.
    ``model``: also fill ``model_config`` from the model's ``Config`` (a run's resolved
    config; a comparison's base keeps its overrides as given). Raises ``ConfigError`` for a
    field this version does not know.
    """
    out = dict(saved)
    out.setdefault("task", "classification")  # the only task before there was a choice
    for name, cls in SECTIONS.items():
        out[name] = to_dict(from_dict(cls, dict(saved.get(name) or {})))
    if model and saved.get("model") in MODELS.names():
        cls = MODELS.get(saved["model"]).Config
        out["model_config"] = to_dict(from_dict(cls, dict(saved.get("model_config") or {})))
    return out


def check_same_splits(directory: Path, splits: pd.DataFrame) -> None:
    """Refuse to resume ``directory`` with other folds than its saved ``splits.csv``."""
    RunDir(directory).check_same_splits(splits)


def prepare_run(run_dir: Path, cfg: RunConfig, cohort: Cohort, splits: pd.DataFrame,
                resume: bool) -> RunConfig:
    """Create the run directory, or check that a resumed one matches; returns the config to
    use (the saved one when resuming)."""
    run = RunDir(run_dir)
    cfg_dict = {"version": __version__, **to_dict(cfg)}
    cfg_path = run.config_path
    if run.is_done():
        if not resume:
            raise SrmilError("is a finished run; it is never overwritten (choose another --out)",
                             run_dir)
    if cfg_path.exists():
        if not resume:
            raise SrmilError("already holds a run; pass --resume to continue it or choose "
                             "another --out", run_dir)
        saved = dict(run.config_dict())
        saved.pop("version", None)
        try:
            saved = with_defaults(saved)
        except ConfigError as exc:
            raise ConfigError(f"--resume: the saved config does not fit this version of srmil "
                              f"({exc})", cfg_path) from None
        diff = _first_difference(saved, to_dict(cfg))
        if diff:
            raise ConfigError(f"--resume with a different config ({diff})", cfg_path)
        check_same_splits(run_dir, splits)
        return cfg
    if run_dir.exists() and any(run_dir.iterdir()):
        raise SrmilError("is not empty; choose a new --out (nothing is overwritten)", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(cfg_path, cfg_dict)
    write_json(run.classes_path, {"classes": cohort.classes,
                                  "index": {c: i for i, c in enumerate(cohort.classes)}})
    write_csv(run.splits_path, splits)
    write_json(run.data_path, {"labels": str(cohort.labels_path.resolve()),
                               "features": str(cohort.features_path.resolve())})
    return cfg


def resolve_model_config(cfg: RunConfig, task: str | None = None) -> RunConfig:
    """Fill ``model_config`` with every field of the model's Config (defaults resolved), and
    ``task`` with the cohort's when it is ``auto``.

    Raises:
        ConfigError: an explicit task other than the cohort's.
    """
    cls = MODELS.get(cfg.model)
    full = to_dict(from_dict(cls.Config, cfg.model_config))
    name = cfg.task
    if task is not None:
        if name not in ("auto", task):
            raise ConfigError(f"task {name!r}, but the labels were read as {task!r}")
        name = task
    return dataclasses.replace(cfg, model_config=full, task=name)


def run_folds(
    run_dir: str | Path, cohort: Cohort, splits: pd.DataFrame, cfg: RunConfig,
    folds: list[int] | None = None, resume: bool = False,
) -> dict[str, Any]:
    """Train and test the given folds (default: every fold of ``splits``) and summarise.

    Returns:
        The summary (per-fold metrics, mean ± std and 95 % bootstrap CIs).
    """
    run_dir = Path(run_dir)
    cfg = resolve_model_config(cfg, cohort.task)
    validate_splits(splits)
    folds = sorted(splits["fold"].unique().tolist()) if folds is None else folds
    missing = sorted(set(folds) - set(splits["fold"]))
    if missing:
        raise SrmilError(f"fold {missing[0]} is not in the splits (folds: "
                         f"{', '.join(map(str, sorted(splits['fold'].unique())))})")
    splits = splits[splits["fold"].isin(folds)].reset_index(drop=True)
    info = cohort.slides.set_index("slide_id")
    paths = info["path"].tolist()
    nbytes, dim = bag_headers(paths)  # every h5 bag's header checked before anything is written
    check_logger(cfg.train)
    patient = cfg.data.bag_level == "patient"
    if patient:
        require_one_label_per_case(cohort.slides, cohort.labels_path)
    if cfg.task != "classification" and (cfg.train.class_weights != "none" or
                                         cfg.train.sampler != "shuffle" or
                                         cfg.train.calibrate != "none"):
        raise ConfigError(f"train.class_weights, train.sampler and train.calibrate are for "
                          f"classification; this is a {cfg.task} run")
    for k in folds:  # weights and sampler refused before the run directory is written
        tr = splits.loc[(splits["fold"] == k) & (splits["split"] == "train"), "slide_id"]
        check_sampling(cfg.train, info.loc[tr, "target"].tolist(), cohort.classes, f"fold {k}")
    if MODELS.get(cfg.model).uses_graph:
        require_coords(paths, [cfg.model])
    cfg = prepare_run(run_dir, cfg, cohort, splits, resume)
    run = RunDir(run_dir)
    if run.is_done():
        return run.summary() or {}
    model_cls = MODELS.get(cfg.model)
    in_dim = dim if dim is not None else first_dim(paths)  # .pt bags only: read the first
    cache = nbytes <= cfg.train.cache_gb * 2**30
    pool = BagDataset(paths, info.index.tolist(), info["target"].tolist(), cfg.graph,
                      model_cls.uses_graph, in_dim, cache)

    results = {}
    for k in folds:
        f = splits[splits["fold"] == k]
        parts = {p: f.loc[f["split"] == p, "slide_id"].tolist() for p in ("train", "val", "test")}
        log.info("fold %s: %d train / %d val / %d test slides", k, len(parts["train"]),
                 len(parts["val"]), len(parts["test"]))
        data = {p: pool.subset(ids) for p, ids in parts.items()}
        if patient:  # every slide of a case in one bag (the folds are patient-level already)
            data = {p: patient_dataset(pool, f[f["split"] == p]) for p in parts}
        results[k] = fit_fold(
            run.fold_dir(k), cfg.model, cfg.model_config, in_dim, cohort.classes,
            data["train"], data["val"], data["test"], cfg.train,
            resume=resume, desc=f"fold {k} ", task=make_task(cfg.task, cfg, cohort.classes),
        )
    summary = summarise(run_dir, results, len(cohort.classes), cfg)
    write_text(run.done_path, "finished\n", overwrite=True)
    return summary


def probs_of(table: pd.DataFrame) -> np.ndarray:
    """(S, C) probabilities from a predictions table's ``prob_<class>`` columns."""
    return table[[c for c in table.columns if c.startswith("prob_")]].to_numpy(dtype=float)


def test_predictions(run_dir: str | Path, folds: list[int]) -> dict[int, pd.DataFrame]:
    """Each fold's test rows of ``predictions.csv``, sorted by slide_id."""
    return RunDir(run_dir).predictions("test", folds)


def summary_metrics(task: str) -> tuple[str, ...]:
    """The summary's test metrics for a task name (classification: ``SUMMARY_METRICS``)."""
    if task in ("auto", "classification"):
        return SUMMARY_METRICS
    return TASKS.get(task).summary_metrics


def fold_tasks(run_dir: str | Path, folds: list[int], task: str, classes: list[str]
               ) -> dict[int, Task]:
    """Each fold's fitted task (``task.json``; classification needs none)."""
    run = RunDir(run_dir)
    if task in ("auto", "classification"):
        return {k: task_of_state(None, classes) for k in folds}
    return {k: task_of_state(run.task_state(k), classes) for k in folds}


def summarise(run_dir: Path, results: dict[int, dict], n_classes: int,
              cfg: RunConfig) -> dict[str, Any]:
    """``summary.csv`` (one row per fold) and ``summary.json`` (mean ± std, 95 % CI)."""
    metrics = summary_metrics(cfg.task)
    rows = []
    for k, r in sorted(results.items()):
        row = {"fold": k, "best_epoch": r["best_epoch"]}
        for part in ("test", "val"):
            for m in metrics:
                row[f"{part}_{m}"] = r.get(part, {}).get(m, np.nan)
        rows.append(row)
    table = pd.DataFrame(rows)
    run = RunDir(run_dir)
    write_csv(run.summary_csv, table, overwrite=True)
    preds = {k: t for k, t in test_predictions(run_dir, sorted(results)).items() if len(t)}
    classify = cfg.task in ("auto", "classification")
    if classify:
        per_fold = [(t["target"].to_numpy(), probs_of(t)) for t in preds.values()]
    else:
        tasks = fold_tasks(run_dir, list(preds), cfg.task, run.classes())
    summary: dict[str, Any] = {"model": cfg.model, "folds": len(results), "metrics": {}}
    if not classify:
        summary["task"] = cfg.task
    for m in metrics:
        v = table[f"test_{m}"].to_numpy(dtype=float)
        entry = {"mean": float(np.nanmean(v)) if np.isfinite(v).any() else np.nan,
                 "std": float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else np.nan}
        if preds and classify:
            entry["ci95"] = list(bootstrap_ci(per_fold, n_classes, m, cfg.train.bootstrap,
                                              cfg.train.seed))
        elif preds:
            fns = [(tasks[k].metric_fn(m, tasks[k].targets_of(t), tasks[k].outputs_of(t)),
                    len(t)) for k, t in preds.items()]
            entry["ci95"] = list(bootstrap_ci_fn(fns, cfg.train.bootstrap, cfg.train.seed))
        summary["metrics"][f"test_{m}"] = entry
    write_json(run.summary_json, summary, overwrite=True)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The CV table: one line per metric, mean ± std and the 95 % bootstrap CI."""
    lines = [f"{summary['model']}: {summary['folds']} fold(s), test split of each fold",
             f"{'metric':<24}{'mean ± std':>18}{'95% CI':>20}"]
    for name, e in summary["metrics"].items():
        ms = f"{e['mean']:.3f} ± {e['std']:.3f}" if not np.isnan(e["std"]) else f"{e['mean']:.3f}"
        ci = e.get("ci95")
        ci_txt = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci and not np.isnan(ci[0]) else "-"
        lines.append(f"{name:<24}{ms:>18}{ci_txt:>20}")
    return "\n".join(lines)
