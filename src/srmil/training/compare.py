"""``srmil compare``: several models (and ablations) on identical saved folds, one table.

Layout::

    CMP/splits.csv  classes.json  compare.json      the folds every model uses
    CMP/<spec>/                                     one run directory per model spec
    CMP/comparison.csv  comparison.md  comparison_roc.png

(owned by :class:`srmil.training.rundir.ComparisonDir`).

A model spec is ``name`` or ``name:key=value[:key=value…]`` with keys of the model's config,
e.g. ``srmil:w_gen=0`` (no reconstruction) or ``srmil:pooling=gated``, or ``train.<key>``
training settings of that spec alone, e.g. ``abmil:train.class_weights=balanced`` or
``srmil:train.sampler=balanced``; ablations are rows of the same table. Each spec resumes model
by model and fold by fold.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from srmil.bags.cohort import Cohort
from srmil.config import RunConfig, TrainConfig, from_dict, parse_value, to_dict
from srmil.errors import ConfigError, SrmilError
from srmil.models.base import MODELS
from srmil.storage import write_csv, write_json, write_text
from srmil.tasks import TASKS
from srmil.training.crossval import (
    finish_run,
    fold_tasks,
    only_partial_setup,
    probs_of,
    run_folds,
    summary_metrics,
    with_defaults,
)
from srmil.training.data import require_coords
from srmil.training.metrics import paired_bootstrap, paired_bootstrap_fn
from srmil.training.rundir import ComparisonDir

log = logging.getLogger(__name__)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"srmil:w_gen=0:mask_rate=0.5"`` → ``("srmil", {"w_gen": 0, "mask_rate": 0.5})``.

    Training keys keep their prefix: ``"abmil:train.sampler=balanced"`` →
    ``("abmil", {"train.sampler": "balanced"})`` (:func:`split_overrides` separates them).

    Raises:
        ConfigError: unknown model (listing the choices) or a key its config lacks.
    """
    name, *items = [p.strip() for p in spec.split(":")]
    cls = MODELS.get(name)
    overrides: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"model spec {spec!r}: expected key=value after ':', got {item!r}")
        k, v = (s.strip() for s in item.split("=", 1))
        overrides[k] = parse_value(v)
    model_keys, train_keys = split_overrides(overrides)
    from_dict(cls.Config, model_keys)  # unknown keys and bad types fail here, before training
    from_dict(TrainConfig, train_keys)
    return name.lower(), overrides


def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A spec's overrides → (model config keys, ``train.`` keys without the prefix)."""
    model = {k: v for k, v in overrides.items() if not k.startswith("train.")}
    train = {k[len("train."):]: v for k, v in overrides.items() if k.startswith("train.")}
    return model, train


def spec_dir(spec: str) -> str:
    """Folder name of a spec: ``srmil:w_gen=0`` → ``srmil__w_gen=0``."""
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", spec.strip().replace(":", "__"))


def resolve_spec(spec: str, specs: list[str]) -> str:
    """``--spec``: one of ``specs``, given as itself or as its 0-based index (so an array task
    computes it: ``--spec $((SLURM_ARRAY_TASK_ID / 5))``).

    Raises:
        ConfigError: not among the specs.
    """
    text = spec.strip()
    if text.isdigit():
        i = int(text)
        if i >= len(specs):
            raise ConfigError(f"--spec {i}: only {len(specs)} model spec(s) (0-based: 0 … "
                              f"{len(specs) - 1})")
        return specs[i]
    if text not in specs:
        raise ConfigError(f"--spec {text!r} is not among the models ({', '.join(specs)})")
    return text


def compare(
    out: str | Path, specs: list[str], cohort: Cohort, splits: pd.DataFrame, base: RunConfig,
    reference: str | None = None, resume: bool = False, spec: str | None = None,
    fold: int | None = None, lock: str = "auto", train: bool = True,
) -> pd.DataFrame | None:
    """Run every spec on ``splits`` and write the comparison table.

    Args:
        out: comparison directory.
        specs: model specs (see module docstring); the first ``srmil`` spec is the reference of
            the paired tests unless ``reference`` names another.
        base: train/graph/split settings shared by every model.
        spec, fold: a job of several on one comparison (``--spec S --fold K``, either or
            both): only that spec / fold is trained; the directory is joined when its specs,
            reference and settings are identical, and the table is written by whichever job
            finishes the last fold.
        lock: lock mode of the claims (:mod:`srmil.locks`).
        train: ``False``: only set up (or check, to resume) the directory that jobs then join.

    Returns:
        The comparison table (one row per spec); ``None`` while a job's fold is not the last.
    """
    out = Path(out)
    cmp = ComparisonDir(out)
    parsed = [parse_spec(s) for s in specs]
    if len(set(map(spec_dir, specs))) != len(specs):
        raise ConfigError("duplicate model specs")
    ref = reference or next((s for s, (n, _) in zip(specs, parsed, strict=True) if n == "srmil"),
                            specs[0])
    if ref not in specs:
        raise ConfigError(f"reference {ref!r} is not among the models")
    shared = spec is not None or fold is not None
    chosen = [resolve_spec(spec, specs)] if spec is not None else list(specs)
    graph_models = sorted({n for n, _ in parsed if MODELS.get(n).uses_graph})
    if graph_models:  # before anything is written
        require_coords(cohort.slides["path"].tolist(), graph_models)
    setup = {"specs": specs, "reference": ref, "base": to_dict(base)}
    with cmp.setup_claim(lock):
        saved = cmp.setup()
        if saved is not None:
            if shared:
                if saved != setup:
                    what = next(k for k in ("specs", "reference", "base")
                                if saved.get(k) != setup[k])
                    raise ConfigError(f"holds a comparison of other {what} than this job's "
                                      "(--spec/--fold jobs join only an identical one; nothing "
                                      "written)", out)
            elif not resume:
                raise SrmilError("already holds a comparison; pass --resume to continue it",
                                 out)
            else:
                saved_base = with_defaults(saved.get("base") or {}, cmp.setup_path, model=False)
                if saved_base != setup["base"]:
                    raise ConfigError("--resume with different training settings",
                                      cmp.setup_path)
            cmp.check_same_splits(splits)
        elif not only_partial_setup(out, frozenset({cmp.SPLITS, cmp.CLASSES})):
            raise SrmilError("is not empty; choose a new --out (nothing is overwritten)", out)
        else:
            write_csv(cmp.splits_path, splits, overwrite=True)
            write_json(cmp.classes_path, {"classes": cohort.classes}, overwrite=True)
        if saved != setup:
            write_json(cmp.setup_path, setup, overwrite=True)  # last: marks a complete set-up

    for s in chosen if train else []:
        name, overrides = parsed[specs.index(s)]
        log.info("== %s", s)
        model_keys, train_keys = split_overrides(overrides)
        train_cfg = from_dict(TrainConfig, {**to_dict(base.train), **train_keys})
        cfg = dataclasses.replace(base, model=name, model_config=model_keys, train=train_cfg)
        run_folds(cmp.run(s).path, cohort, splits, cfg, folds=None if fold is None else [fold],
                  resume=resume or not shared, shared=True, lock=lock)
    return finish_comparison(out, lock)


def comparison_missing(out: str | Path, lock: str = "auto") -> dict[str, dict[int, str]]:
    """Spec → its folds that are not done → their state (empty when every fold is done)."""
    cmp = ComparisonDir(out)
    setup = cmp.setup()
    if setup is None:
        raise SrmilError("not a comparison directory (no compare.json)", out)
    folds = sorted(int(k) for k in cmp.splits()["fold"].unique())
    missing: dict[str, dict[int, str]] = {}
    for s in setup["specs"]:
        run = cmp.run(s)
        if run.is_done():
            continue
        states = (run.missing_folds(lock) if run.is_run()
                  else dict.fromkeys(folds, "not started"))
        if states:
            missing[s] = states
    return missing


def finish_comparison(out: str | Path, lock: str = "auto") -> pd.DataFrame | None:
    """Write the spec summaries, ``comparison.csv``/``.md`` and ``DONE`` once every spec's every
    fold is done (any job may call it: the first to find them done writes, under a claim).

    Returns:
        The table, or ``None`` while a fold is missing (:func:`comparison_missing`).
    """
    cmp = ComparisonDir(out)
    setup = cmp.setup()
    if setup is None:
        raise SrmilError("not a comparison directory (no compare.json)", out)
    specs, ref = list(setup["specs"]), setup["reference"]
    with cmp.finish_claim(lock):
        if cmp.is_done() and cmp.table_csv.exists() and cmp.table()["model"].tolist() == specs:
            return cmp.table()
        for s in specs:
            run = cmp.run(s)
            if not run.is_run() or (not run.is_done() and finish_run(run.path, lock) is None):
                return None
        base = from_dict(RunConfig, with_defaults(setup["base"], cmp.setup_path, model=False))
        table = comparison_table(Path(out), specs, ref, len(cmp.classes()), base.train.bootstrap,
                                 base.train.seed, base.task)
        write_csv(cmp.table_csv, table, overwrite=True)
        write_text(cmp.table_md, format_markdown(table, ref, base.task), overwrite=True)
        write_text(cmp.done_path, "finished\n", overwrite=True)
        return table


def comparison_table(out: Path, specs: list[str], ref: str, n_classes: int, n_boot: int,
                     seed: int, task: str = "classification") -> pd.DataFrame:
    """One row per spec: mean ± std and 95 % CI per metric, and paired tests against ``ref``
    on the task's key test metric (AUC; c-index for survival; MAE for regression): Wilcoxon
    signed-rank over folds and a paired bootstrap of the difference on the same test slides.

    Columns of the paired tests: ``<key>_diff_vs_ref`` (``auc_diff_vs_ref``,
    ``c_index_diff_vs_ref``, ``mae_diff_vs_ref``), ``wilcoxon_p``, ``bootstrap_p``.
    """
    classify = task in ("auto", "classification")
    metrics = summary_metrics(task)
    key = "auc" if classify else TASKS.get(task).select_metric
    preds, keys, rows, tasks = {}, {}, [], {}
    for spec in specs:
        run = ComparisonDir(out).run(spec)
        summary = run.summary() or {}
        per_fold = run.summary_table().set_index("fold").sort_index()
        folds = per_fold.index.tolist()
        preds[spec] = run.predictions("test", folds)
        if not classify:
            tasks[spec] = fold_tasks(run.path, folds, task, run.classes())
        keys[spec] = per_fold[f"test_{key}"]  # full precision, by fold, for the paired test
        row: dict[str, Any] = {"model": spec, "folds": len(folds)}
        for m in metrics:
            # a run from before a metric existed: NaN, not a KeyError
            e = summary["metrics"].get(f"test_{m}", {"mean": np.nan, "std": np.nan})
            ci = e.get("ci95", [np.nan, np.nan])
            row.update({f"{m}_mean": e["mean"], f"{m}_std": e["std"],
                        f"{m}_ci_lo": ci[0], f"{m}_ci_hi": ci[1]})
        row[f"per_fold_{key}"] = ";".join(f"{v:.4f}" for v in keys[spec])
        rows.append(row)
    table = pd.DataFrame(rows)
    ref_folds = preds[ref]
    fa = ([(ref_folds[k]["target"].to_numpy(), probs_of(ref_folds[k])) for k in ref_folds]
          if classify else [])
    cols = [f"{key}_diff_vs_ref", "wilcoxon_p", "bootstrap_p"]
    for i, spec in enumerate(specs):
        if spec == ref:
            table.loc[i, cols] = [0.0, np.nan, np.nan]
            continue
        for k in ref_folds:
            ids = "slide_id" if "slide_id" in ref_folds[k] else "case_id"  # patient bags
            if ids not in preds[spec][k] or not ref_folds[k][ids].equals(preds[spec][k][ids]):
                raise SrmilError(f"fold {k}: {spec} was tested on other slides than {ref}", out)
        if classify:
            fb = [probs_of(preds[spec][k]) for k in ref_folds]
            boot = paired_bootstrap(fa, fb, n_classes, "auc", n_boot, seed)
        else:
            pairs = []
            for k in ref_folds:
                ta, tb = tasks[ref][k], tasks[spec][k]
                a_t, b_t = ref_folds[k], preds[spec][k]
                pairs.append((ta.metric_fn(key, ta.targets_of(a_t), ta.outputs_of(a_t)),
                              tb.metric_fn(key, tb.targets_of(b_t), tb.outputs_of(b_t)),
                              len(a_t)))
            boot = paired_bootstrap_fn(pairs, n_boot, seed)
        a = keys[ref].reindex(list(ref_folds)).to_numpy(float)
        b = keys[spec].reindex(list(ref_folds)).to_numpy(float)
        d = a - b
        p = float(wilcoxon(a, b).pvalue) if np.any(d != 0) and np.isfinite(d).all() else np.nan
        table.loc[i, cols] = [-boot["diff"], p, boot["p"]]
    return table


def format_markdown(table: pd.DataFrame, ref: str, task: str = "classification") -> str:
    """The comparison as a markdown table (mean ± std [95 % CI])."""
    classify = task in ("auto", "classification")
    metrics = summary_metrics(task)
    key = "auc" if classify else TASKS.get(task).select_metric
    names = {"auc": "AUC", "accuracy": "accuracy", "balanced_accuracy": "balanced acc.",
             "f1": "F1", "ece": "ECE", "brier": "Brier", "c_index": "c-index",
             "c_index_uno": "Uno's c", "td_auc": "td-AUC",
             "ibs": "IBS", "mae": "MAE", "rmse": "RMSE", "r2": "R²", "pearson": "Pearson r",
             "spearman": "Spearman ρ"}
    head = ("| model | " + " | ".join(names[m] for m in metrics) + f" | Δ{names[key]} vs "
            + ref + " | Wilcoxon p | bootstrap p |")
    lines = [head, "|" + "---|" * (len(metrics) + 4)]

    def cell(r: pd.Series, m: str) -> str:
        s = f"{r[m + '_mean']:.3f} ± {r[m + '_std']:.3f}"
        if np.isfinite(r[m + "_ci_lo"]):
            s += f" [{r[m + '_ci_lo']:.3f}, {r[m + '_ci_hi']:.3f}]"
        return s

    for _, r in table.iterrows():
        diff = "—" if r["model"] == ref else f"{r[key + '_diff_vs_ref']:+.3f}"
        wp = "—" if not np.isfinite(r["wilcoxon_p"]) else f"{r['wilcoxon_p']:.3f}"
        bp = "—" if not np.isfinite(r["bootstrap_p"]) else f"{r['bootstrap_p']:.3f}"
        lines.append(f"| {r['model']} | " + " | ".join(cell(r, m) for m in metrics)
                     + f" | {diff} | {wp} | {bp} |")
    return "\n".join(lines) + "\n"
