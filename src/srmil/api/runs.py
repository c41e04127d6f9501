"""Cohorts and runs: ``synth``, ``check``, ``train``, ``cv``, ``compare``, ``demo``, ``models``.

Every function takes paths and typed configs, returns a typed result
(:mod:`srmil.api.results`), raises :class:`~srmil.errors.SrmilError` for bad input, and reports
progress through :mod:`logging` (logger ``srmil``); none prints or exits.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srmil.api.results import CompareResult, DemoResult, ModelInfo, RunResult, SynthResult
from srmil.config import GraphConfig, RunConfig, SplitConfig, SynthConfig, TrainConfig
from srmil.errors import CohortError, ConfigError, SrmilError

if TYPE_CHECKING:
    import pandas as pd

    from srmil.bags.cohort import Cohort
    from srmil.reports.check import CheckReport

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

DEMO_EPOCHS = 20  # the paper trains 100; 20 keeps the demo near two minutes on 2 CPU cores (12
#                   left one fold of seed 0 unconverged with the grid backend's draws)


def synth(out: PathLike, cfg: SynthConfig = SynthConfig(), overwrite: bool = False
          ) -> SynthResult:
    """Write the built-in synthetic cohort in TRIDENT's layout.

    Args:
        out: cohort directory (``labels.csv``, ``synth.json``, ``*_overlap/features_synth/``).
        cfg: the cohort's settings.
        overwrite: replace an existing cohort.

    Returns:
        The labels CSV, the bag directory and the cohort's summary.
    """
    from srmil.bags.synth import write_cohort

    s = write_cohort(cfg, out, overwrite=overwrite)
    return SynthResult(Path(s["labels_csv"]), Path(s["features_dir"]), s)


def check(bags: PathLike, labels: PathLike | None = None, folds: int | None = 5,
          graph: GraphConfig = GraphConfig(), table: PathLike | None = None) -> CheckReport:
    """Read every bag once and report what a run would trip on.

    Args:
        bags: directory of bags (``*.h5``, ``*.pt``) or one bag.
        labels: labels CSV ``slide_id,case_id,label``; without it only the bags are checked.
        folds: check every class has enough cases for this many folds (``None``: skip).
        graph: the graph settings a run would use.
        table: also write the per-slide table to this CSV.

    Returns:
        The per-slide table, every problem found, and the cohort; ``.ok`` when nothing stops
        training.
    """
    from srmil.reports.check import check as check_cohort

    rep = check_cohort(bags, labels, folds=folds or None, cfg=graph,
                       progress=log.isEnabledFor(logging.INFO))
    if table is not None:
        from srmil.storage import write_csv

        write_csv(table, rep.table)
    return rep


def load_training_cohort(labels: PathLike, bags: PathLike, split: SplitConfig = SplitConfig(),
                         splits: PathLike | None = None, task: str = "auto", strata: int = 4,
                         ) -> tuple[Cohort, pd.DataFrame]:
    """The cohort (refused on any error :func:`check` would report) and its folds.

    Args:
        labels: labels CSV.
        bags: directory of bags.
        split: how to make the folds when ``splits`` is not given.
        splits: reuse saved splits (srmil ``splits.csv`` or CLAM ``splits_<k>.csv``).
        task: ``auto`` (from the labels' columns, logged) or a task name.
        strata: regression: folds stratified by this many target quantiles.
    """
    from srmil.bags.cohort import load_cohort
    from srmil.bags.splits import make_splits, read_splits

    cohort = load_cohort(labels, bags, task=task, strata=strata)
    errors = [p for p in cohort.problems() if p.is_error]
    if errors:
        raise CohortError(errors[0].message, errors[0].path)
    if splits:
        return cohort, read_splits(splits, cohort.slides)
    return cohort, make_splits(cohort.slides, split)


def _run(labels: PathLike, bags: PathLike, out: PathLike, cfg: RunConfig,
         folds: list[int] | None, splits: PathLike | None, resume: bool) -> RunResult:
    from srmil.training.crossval import run_folds  # Lightning: lazily
    from srmil.training.rundir import RunDir

    cohort, table = load_training_cohort(labels, bags, cfg.split, splits, cfg.task,
                                         cfg.regression.strata)
    summary = run_folds(out, cohort, table, cfg, folds=folds, resume=resume)
    run = RunDir(Path(out).absolute())  # still the run if the caller changes directory
    return RunResult(run, summary, run.summary_table())


def train(labels: PathLike, bags: PathLike, out: PathLike, cfg: RunConfig | None = None,
          fold: int = 0, splits: PathLike | None = None, resume: bool = False) -> RunResult:
    """Train a model on one patient-level fold, select it on validation, test it once.

    Args:
        labels: labels CSV ``slide_id,case_id,label``.
        bags: directory of feature bags.
        out: run directory (new, or an interrupted one with ``resume``).
        cfg: model, training, graph and split settings (default ``RunConfig()``).
        fold: which fold of the splits.
        splits: reuse saved splits instead of making ``cfg.split.folds`` folds.
        resume: continue an interrupted run (with the very config it was started with).

    Returns:
        The run directory, its summary and per-fold table.
    """
    return _run(labels, bags, out, cfg or RunConfig(), [fold], splits, resume)


def cv(labels: PathLike, bags: PathLike, out: PathLike, cfg: RunConfig | None = None,
       splits: PathLike | None = None, resume: bool = False) -> RunResult:
    """Patient-level k-fold cross-validation: every fold of :func:`train`, then the summary
    (mean ± std and 95 % bootstrap CI of the test metrics). Arguments as :func:`train`."""
    return _run(labels, bags, out, cfg or RunConfig(), None, splits, resume)


def compare(labels: PathLike, bags: PathLike, out: PathLike, specs: list[str],
            base: RunConfig | None = None, reference: str | None = None,
            splits: PathLike | None = None, resume: bool = False) -> CompareResult:
    """Train every model spec on the same folds; one table with paired tests and the ROC.

    Args:
        labels: labels CSV.
        bags: directory of feature bags.
        out: comparison directory.
        specs: ``NAME`` or ``NAME:key=value[:key=value]`` (e.g. ``srmil:w_gen=0``).
        base: train / graph / split settings shared by every spec (no model settings).
        reference: spec the paired tests compare against (default: the first srmil spec).
        splits: reuse saved splits.
        resume: continue an interrupted comparison.

    Returns:
        The table, its markdown, the comparison directory and the pooled ROC figure.
    """
    from srmil.reports.roc import pooled, roc_figure
    from srmil.training.compare import compare as compare_specs
    from srmil.training.compare import format_markdown, parse_spec
    from srmil.training.rundir import ComparisonDir

    base = base or RunConfig()
    specs = [s.strip() for s in specs if s.strip()]
    if not specs:
        raise ConfigError("no model spec to compare")
    for s in specs:
        parse_spec(s)  # unknown names and keys fail before any training
    if base.model_config:
        raise ConfigError("model settings go into the specs (e.g. srmil:mask_rate=0.5), "
                          "not --set model.*")
    cohort, table = load_training_cohort(labels, bags, base.split, splits, base.task,
                                         base.regression.strata)
    base = dataclasses.replace(base, task=cohort.task)
    result = compare_specs(out, specs, cohort, table, base, reference, resume)
    cmp = ComparisonDir(Path(out).absolute())
    folds = sorted(table["fold"].unique().tolist())
    roc = None
    if cohort.task == "classification":  # ROC curves need classes
        curves = {s: pooled(cmp.run(s).predictions("test", folds)) for s in specs}
        roc = roc_figure(curves, cmp.roc_path)
    ref = (cmp.setup() or {}).get("reference", specs[0])
    return CompareResult(result, format_markdown(result, ref, cohort.task), cmp, roc)


def demo(out: PathLike = "demo_out", seed: int = 0, epochs: int = DEMO_EPOCHS,
         device: str = "auto") -> DemoResult:
    """The main job on the built-in ``spatial`` cohort: synth → check → 5-fold CV of SRMIL.

    An interrupted demo continues where it stopped; a finished one returns its summary.

    Args:
        out: demo directory (``cohort/`` and ``run_srmil/``).
        seed: cohort, split and training seed.
        epochs: training epochs per fold.
        device: ``auto`` | ``cpu`` | ``gpu`` | ``cuda``.

    Returns:
        The cohort, the check report and the run (``None`` when the check failed).
    """
    import json

    from srmil.bags.splits import make_splits
    from srmil.training.crossval import run_folds
    from srmil.training.rundir import RunDir

    t0 = time.time()
    out = Path(out)
    cohort_dir = out / "cohort"
    cfg = SynthConfig(variant="spatial", seed=seed)
    if (cohort_dir / "labels.csv").exists():
        s = json.loads((cohort_dir / "synth.json").read_text())
        # the recorded paths are as given when it was written (maybe relative to another cwd)
        s["labels_csv"] = str(cohort_dir / "labels.csv")
        s["features_dir"] = str(next(cohort_dir.glob("*_overlap/features_synth")))
        log.info("[1/3] reusing the cohort in %s", cohort_dir)
        cohort = SynthResult(Path(s["labels_csv"]), Path(s["features_dir"]), s)
    else:
        log.info("[1/3] writing the synthetic '%s' cohort to %s", cfg.variant, cohort_dir)
        cohort = synth(cohort_dir, cfg)
    log.info("[2/3] srmil check")
    rep = check(cohort.bags, cohort.labels, folds=5)
    if not rep.ok:
        return DemoResult(cohort, rep, None, time.time() - t0)
    run_dir = out / "run_srmil"
    run_cfg = RunConfig(
        model="srmil",
        train=TrainConfig(epochs=epochs, seed=seed, accelerator=device),
        split=SplitConfig(folds=5, seed=seed),
    )
    log.info("[3/3] SRMIL, 5-fold patient-level cross-validation, %d epochs per fold (the "
             "paper trains 100) → %s", epochs, run_dir)
    splits = make_splits(rep.cohort.slides, run_cfg.split)
    summary = run_folds(run_dir, rep.cohort, splits, run_cfg, resume=True)
    run = RunDir(run_dir.absolute())
    return DemoResult(cohort, rep, RunResult(run, summary, run.summary_table()),
                      time.time() - t0)


def models() -> list[ModelInfo]:
    """The registered MIL models: name, one-line summary, graph use, score kind, defaults."""
    from srmil.config import to_dict
    from srmil.errors import first_line
    from srmil.models import MODELS

    out = []
    for name in MODELS.names():
        cls = MODELS.get(name)
        out.append(ModelInfo(name, first_line(cls.__doc__ or ""), bool(cls.uses_graph),
                             cls.score_kind, to_dict(cls.Config())))
    return out


def init_config(model: str = "srmil") -> str:
    """A commented YAML run config: every section and field with its default and its
    description (the comments of :mod:`srmil.config`). ``--config`` reads it back as
    :class:`RunConfig` with ``model_config`` = the model's defaults.

    Args:
        model: the MIL model whose own settings fill ``model_config``.

    Raises:
        ConfigError: unknown model (listing the choices).
    """
    from srmil import __version__
    from srmil.config import commented_yaml
    from srmil.models import MODELS

    cls = MODELS.get(model)
    cfg = RunConfig(model=model.lower())
    head = [f"# srmil {__version__} run config, written by `srmil init --model {model.lower()}`",
            "# every field at its default; edit, then: srmil cv --config config.yaml ...",
            "# (--set section.field=value on the command line overrides a field)"]
    return "\n".join(head + commented_yaml(cfg, nested={"model_config": cls.Config()})) + "\n"


def resolve_run_config(model: str | None = None, config: PathLike | None = None,
                       sets: list[str] = (), train: dict[str, Any] | None = None,
                       folds: int | None = None, task: str | None = None) -> RunConfig:
    """A :class:`RunConfig` from a config file < explicit settings < ``key=value`` overrides.

    Args:
        model: MIL model name.
        config: YAML/JSON run config (a run's ``config.json``).
        sets: ``section.key=value`` overrides (``model.mask_rate=0.5``, ``train.lr=1e-4``).
        train: training settings (``epochs``, ``seed``, ``accelerator``…); ``None`` values skipped.
        folds: number of folds.
        task: ``auto`` | ``classification`` | ``survival`` | ``regression``.

    Raises:
        ConfigError: unknown or ill-typed keys.
    """
    from srmil.config import apply_sets, from_dict, load_config_file
    from srmil.models import MODELS  # torch_geometric: imported only when training

    data: dict[str, Any] = load_config_file(os.fspath(config)) if config else {}
    if model:
        data["model"] = model
    tr = dict(data.get("train", {}))
    tr.update({k: v for k, v in (train or {}).items() if v is not None})
    data["train"] = tr
    if folds is not None:
        data["split"] = {**data.get("split", {}), "folds": folds}
    if task is not None:
        data["task"] = task
    name = data.get("model", RunConfig().model)
    for item in sets:
        if item.split("=", 1)[0].strip() == "model":
            name = item.split("=", 1)[1].strip()
    fields = set(MODELS.get(name).Config.__dataclass_fields__)
    return from_dict(RunConfig, apply_sets(data, list(sets), fields))


__all__ = ["DEMO_EPOCHS", "check", "compare", "cv", "demo", "init_config",
           "load_training_cohort", "models", "resolve_run_config", "synth", "train",
           "SrmilError"]
