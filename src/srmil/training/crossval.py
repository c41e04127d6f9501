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
from srmil.training.optim import resolve_recipe
from srmil.training.rundir import RunDir
from srmil.training.sampling import check_classification_only, check_sampling
from srmil.training.standardise import StandardisedDataset, Standardiser

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


def with_defaults(saved: dict[str, Any], source: str | Path, model: bool = True
                  ) -> dict[str, Any]:
    """A saved run config with every field this version knows, defaults where it has none.

    A run written before a field existed ran with that field's default behaviour (new fields
    default to what srmil did before them), so resuming it with the default is the same run.

    Args:
        saved: the saved config (``config.json``, or a comparison's ``base``).
        source: the file it was read from, for the error.
        model: also fill ``model_config`` from the model's ``Config`` (a run's resolved
            config; a comparison's base keeps its overrides as given).

    Raises:
        ConfigError: a saved field this version does not know (one line naming ``source``).
    """
    out = dict(saved)
    out.pop("version", None)
    out.setdefault("task", "classification")  # the only task before there was a choice
    try:
        for name, cls in SECTIONS.items():
            out[name] = to_dict(from_dict(cls, dict(saved.get(name) or {})))
        if model and saved.get("model") in MODELS.names():
            cls = MODELS.get(saved["model"]).Config
            out["model_config"] = to_dict(from_dict(cls, dict(saved.get("model_config") or {})))
    except ConfigError as exc:
        raise ConfigError(f"--resume: the saved config does not fit this version of srmil "
                          f"({exc})", source) from None
    return out


def check_same_splits(directory: Path, splits: pd.DataFrame) -> None:
    """Refuse to resume ``directory`` with other folds than its saved ``splits.csv``."""
    RunDir(directory).check_same_splits(splits)


_SHARED_FILES = frozenset({RunDir.CLASSES, RunDir.SPLITS, RunDir.DATA})


class FoldBusyError(SrmilError):
    """Another job holds the fold (``srmil cv --fold K`` twice): it is never trained twice."""


def only_partial_setup(directory: Path, shared: frozenset[str]) -> bool:
    """Whether ``directory`` is missing, empty, or holds only shared files of a setup that was
    interrupted before its marker (``config.json`` / ``compare.json``, written last)."""
    if not directory.exists():
        return True
    names = {p.name for p in directory.iterdir() if not p.name.startswith(".")}
    return names <= shared


def _data_record(cohort: Cohort) -> dict[str, str]:
    return {"labels": str(cohort.labels_path.resolve()),
            "features": str(cohort.features_path.resolve())}


def prepare_run(run_dir: Path, cfg: RunConfig, cohort: Cohort, splits: pd.DataFrame,
                resume: bool, join: bool = False, lock: str = "auto") -> RunConfig:
    """Create the run directory, or check that a resumed / joined one matches; returns the
    config to use.

    The check and the writes happen under the run's setup claim, so of several jobs started
    together exactly one writes the shared files (``config.json`` last: it marks a complete
    set-up) and every other one compares its own config, splits and data with them.

    Args:
        join: a ``--fold`` job: an existing run of the identical config is expected (no
            ``resume`` needed to join it); any difference is one line and nothing is written.
        lock: lock mode of the claims (:mod:`srmil.locks`).
    """
    run = RunDir(run_dir)
    cfg_dict = {"version": __version__, **to_dict(cfg)}
    with run.setup_claim(lock):
        if run.config_path.exists():
            if join:
                _check_joined(run, cfg, splits, _data_record(cohort))
                return cfg
            if run.is_done() and not resume:
                raise SrmilError("is a finished run; it is never overwritten (choose another "
                                 "--out)", run_dir)
            if not resume:
                raise SrmilError("already holds a run; pass --resume to continue it or choose "
                                 "another --out", run_dir)
            saved = with_defaults(run.config_dict(), run.config_path)
            diff = _first_difference(saved, to_dict(cfg))
            if diff:
                raise ConfigError(f"--resume with a different config ({diff})", run.config_path)
            check_same_splits(run_dir, splits)
            return cfg
        if not only_partial_setup(run_dir, _SHARED_FILES):
            raise SrmilError("is not empty; choose a new --out (nothing is overwritten)",
                             run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        # a set-up killed before config.json left some of these: they are redone
        write_json(run.classes_path, {"classes": cohort.classes,
                                      "index": {c: i for i, c in enumerate(cohort.classes)}},
                   overwrite=True)
        write_csv(run.splits_path, splits, overwrite=True)
        write_json(run.data_path, _data_record(cohort), overwrite=True)
        write_json(run.config_path, cfg_dict)
    return cfg


def _check_joined(run: RunDir, cfg: RunConfig, splits: pd.DataFrame,
                  data: dict[str, str]) -> None:
    """A ``--fold`` job's own config, splits and data must be the run's, exactly."""
    diff = _first_difference(with_defaults(run.config_dict(), run.config_path), to_dict(cfg))
    if diff:
        raise ConfigError(f"holds a run of another config ({diff}); a --fold job joins only "
                          "a run of the identical config (nothing written)", run.path)
    saved_splits = run.splits()
    cols = ["fold", "slide_id", "split"]
    if not saved_splits[cols].equals(splits[cols].reset_index(drop=True)):
        raise SrmilError("holds a run of other splits than this job's (different labels, "
                         "--splits or split.* settings; nothing written)", run.path)
    if run.data() and run.data() != data:
        which = next(k for k in ("labels", "features") if run.data().get(k) != data.get(k))
        raise SrmilError(f"holds a run on other {which} ({run.data().get(which)} in the run, "
                         f"{data.get(which)} now; nothing written)", run.path)


def resolve_model_config(cfg: RunConfig, task: str | None = None) -> RunConfig:
    """Fill ``model_config`` with every field of the model's Config (defaults resolved),
    ``task`` with the cohort's when it is ``auto``, and ``train`` with the model's paper recipe
    under ``train.recipe paper`` (:func:`srmil.training.optim.resolve_recipe`).

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
    train = resolve_recipe(cfg.train, cfg.model)  # train.recipe paper: the model's own
    return dataclasses.replace(cfg, model_config=full, task=name, train=train)


def run_folds(
    run_dir: str | Path, cohort: Cohort, splits: pd.DataFrame, cfg: RunConfig,
    folds: list[int] | None = None, resume: bool = False, shared: bool = False,
    lock: str = "auto", join: bool | None = None,
) -> dict[str, Any]:
    """Train and test the given folds (default: every fold of ``splits``) and summarise.

    Args:
        folds: the folds to train.
        shared: a job of several on one run directory (``srmil cv --fold K``): the run holds
            every fold of ``splits`` (not only ``folds``), an existing run of the identical
            config is joined, and the summary is written by whichever job finishes the last
            fold. Otherwise the run holds ``folds`` only and this call summarises them.
        lock: lock mode of the run's claims (:mod:`srmil.locks`).
        join: whether an existing run of the identical config is joined without ``resume``
            (default: ``shared``); ``shared=True, join=False, folds=[]`` sets up (or checks, to
            resume) the run that jobs then join.

    Returns:
        The summary (per-fold metrics, mean ± std and 95 % bootstrap CIs); ``{}`` while folds
        of a shared run are still missing.

    Raises:
        FoldBusyError: another job is training one of ``folds``.
    """
    run_dir = Path(run_dir)
    cfg = resolve_model_config(cfg, cohort.task)
    validate_splits(splits)
    folds = sorted(splits["fold"].unique().tolist()) if folds is None else folds
    missing = sorted(set(folds) - set(splits["fold"]))
    if missing:
        raise SrmilError(f"fold {missing[0]} is not in the splits (folds: "
                         f"{', '.join(map(str, sorted(splits['fold'].unique())))})")
    if not shared:
        splits = splits[splits["fold"].isin(folds)].reset_index(drop=True)
    info = cohort.slides.set_index("slide_id")
    paths = info["path"].tolist()
    nbytes, dim = bag_headers(paths)  # every h5 bag's header checked before anything is written
    check_logger(cfg.train)
    patient = cfg.data.bag_level == "patient"
    if patient:
        require_one_label_per_case(cohort.slides, cohort.labels_path)
    if cfg.task != "classification":
        check_classification_only(cfg.train, cfg.task)
    for k in folds:  # weights and sampler refused before the run directory is written
        tr = splits.loc[(splits["fold"] == k) & (splits["split"] == "train"), "slide_id"]
        check_sampling(cfg.train, info.loc[tr, "target"].tolist(), cohort.classes, f"fold {k}")
    if MODELS.get(cfg.model).uses_graph:
        require_coords(paths, [cfg.model])
    cfg = prepare_run(run_dir, cfg, cohort, splits, resume,
                      join=shared if join is None else join, lock=lock)
    run = RunDir(run_dir)
    if run.is_done():
        return run.summary() or {}
    todo = [k for k in folds if not run.is_fold_done(k)]
    if todo:
        model_cls = MODELS.get(cfg.model)
        in_dim = dim if dim is not None else first_dim(paths)  # .pt bags only: read the first
        cache = nbytes <= cfg.train.cache_gb * 2**30
        pool = BagDataset(paths, info.index.tolist(), info["target"].tolist(), cfg.graph,
                          model_cls.uses_graph, in_dim, cache)
    for k in todo:
        f = splits[splits["fold"] == k]
        parts = {p: f.loc[f["split"] == p, "slide_id"].tolist() for p in ("train", "val", "test")}
        with run.fold_claim(k, lock) as claim:
            if not claim.held:
                raise FoldBusyError(f"fold {k} is being trained by "
                                    f"{claim.holder() or 'another job'}; a fold is never "
                                    "trained twice (this job stops, nothing written)", run_dir)
            data = {p: pool.subset(ids) for p, ids in parts.items()}
            if patient:  # every slide of a case in one bag (the folds are patient-level)
                data = {p: patient_dataset(pool, f[f["split"] == p]) for p in parts}
            if cfg.train.standardise:  # fitted on this fold's training bags only
                st = Standardiser.fit(data["train"])
                st.save(run.fold_dir(k))
                data = {p: StandardisedDataset(d, st) for p, d in data.items()}
            log.info("fold %s: %d train / %d val / %d test %s", k, len(data["train"]),
                     len(data["val"]), len(data["test"]), "cases" if patient else "slides")
            fit_fold(
                run.fold_dir(k), cfg.model, cfg.model_config, in_dim, cohort.classes,
                data["train"], data["val"], data["test"], cfg.train,
                resume=resume, desc=f"fold {k} ",
                task=make_task(cfg.task, cfg, cohort.classes),
            )
    return finish_run(run_dir, lock) or {}


def finish_run(run_dir: str | Path, lock: str = "auto") -> dict[str, Any] | None:
    """Write the summary and ``DONE`` when every fold of ``splits.csv`` is done.

    Safe to call from every job of a shared run: under the run's finish claim, the first job
    to find every fold done writes them, the others find ``DONE``.

    Returns:
        The summary, or ``None`` while a fold is missing (:meth:`RunDir.missing_folds`).
    """
    run = RunDir(run_dir).require()
    with run.finish_claim(lock):
        if run.is_done():
            return run.summary() or {}
        ks = run.split_folds()
        if not all(run.is_fold_done(k) for k in ks):
            return None
        cfg = run.config()
        results = {k: run.metrics(k) or {} for k in ks}
        summary = summarise(run.path, results, len(run.classes()), cfg)
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
