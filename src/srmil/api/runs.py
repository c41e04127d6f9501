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
from srmil.config import (
    DEMO_EPOCHS,
    ExecutorConfig,
    GraphConfig,
    RunConfig,
    SplitConfig,
    SynthConfig,
    TrainConfig,
)
from srmil.errors import CohortError, ConfigError, SrmilError

if TYPE_CHECKING:
    import pandas as pd

    from srmil.bags.cohort import Cohort
    from srmil.reports.check import CheckReport

log = logging.getLogger(__name__)

PathLike = str | os.PathLike



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
         folds: list[int] | None, splits: PathLike | None, resume: bool,
         shared: bool = False, lock: str = "auto") -> RunResult:
    from srmil.training.crossval import run_folds  # Lightning: lazily
    from srmil.training.distributed import check_launch

    check_launch(cfg.train.devices, cfg.train.num_nodes)  # before any file is written
    cohort, table = load_training_cohort(labels, bags, cfg.split, splits, cfg.task,
                                         cfg.regression.strata)
    run_folds(out, cohort, table, cfg, folds=folds, resume=resume, shared=shared, lock=lock)
    return _run_result(out, lock)


def _run_result(out: PathLike, lock: str = "auto") -> RunResult:
    from srmil.training.rundir import RunDir

    run = RunDir(Path(out).absolute())  # still the run if the caller changes directory
    if run.is_done():
        return RunResult(run, run.summary() or {}, run.summary_table())
    return RunResult(run, {}, None, run.missing_folds(lock))


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
       splits: PathLike | None = None, resume: bool = False, fold: int | None = None,
       executor: ExecutorConfig | None = None, lock: str = "auto") -> RunResult:
    """Patient-level k-fold cross-validation: every fold of :func:`train`, then the summary
    (mean ± std and 95 % bootstrap CI of the test metrics). Arguments as :func:`train`, and:

    Args:
        fold: train only this fold into the shared run directory ``out`` (one job of a SLURM
            array, ``--array=0-4``): the first job writes the run's shared files, the others
            check theirs are identical (a difference is one line, nothing written); a fold
            another job is training is refused (:class:`~srmil.training.crossval.FoldBusyError`);
            the job that finishes the last fold writes the summary.
        executor: run the folds as jobs (``local`` processes or a ``slurm`` array, see
            :mod:`srmil.api.jobs`); ``None`` or kind ``none``: here, one after another.
        lock: how jobs claim files: ``auto`` | ``flock`` | ``file`` (:mod:`srmil.locks`).

    Returns:
        The run; with ``fold``, ``missing`` lists the folds not yet done (and ``summary`` is
        empty) until the last one finishes.
    """
    cfg = cfg or RunConfig()
    if executor is not None and executor.kind != "none":
        if fold is not None:
            raise ConfigError("--fold is one job; --executor submits the jobs (use one)")
        return _cv_jobs(labels, bags, out, cfg, splits, resume, executor, lock)
    if fold is not None:
        return _run(labels, bags, out, cfg, [fold], splits, resume, shared=True, lock=lock)
    return _run(labels, bags, out, cfg, None, splits, resume, lock=lock)


def _absolute(p: PathLike | None) -> str | None:
    return None if p is None else str(Path(p).absolute())


def _jobs_folder(out: PathLike, executor: ExecutorConfig) -> Path:
    return Path(executor.folder) if executor.folder else Path(out).absolute() / "logs"


def _finish_jobs(sub, what: str) -> None:
    from srmil.api.jobs import failure_line

    if sub.failed:
        raise SrmilError(failure_line(sub))
    if not sub.outcomes and sub.job_ids:
        log.info("%d job(s) submitted for %s; the last to finish writes the summary "
                 "(srmil summarise %s shows what is missing)", len(sub.job_ids), what, what)


def _cv_jobs(labels: PathLike, bags: PathLike, out: PathLike, cfg: RunConfig,
             splits: PathLike | None, resume: bool, executor: ExecutorConfig,
             lock: str) -> RunResult:
    from srmil.api.jobs import FoldTask, submit_tasks
    from srmil.training.crossval import run_folds
    from srmil.training.rundir import RunDir

    cohort, table = load_training_cohort(labels, bags, cfg.split, splits)
    # set up (or check, to resume) here: bad input is one line before anything is submitted
    run_folds(out, cohort, table, cfg, folds=[], resume=resume, shared=True, join=False,
              lock=lock)
    run = RunDir(Path(out).absolute())
    todo = [k for k in run.split_folds() if not run.is_fold_done(k)]
    if todo:
        tasks = [FoldTask(str(Path(labels).absolute()), str(Path(bags).absolute()),
                          str(run.path), cfg, k, _absolute(splits), resume, lock,
                          executor.threads, log_level=_level())
                 for k in todo]
        _finish_jobs(submit_tasks(tasks, executor, _jobs_folder(out, executor)), str(out))
    from srmil.training.crossval import finish_run

    if executor.wait:
        finish_run(run.path, lock)  # normally done by the last job already
    return _run_result(run.path, lock)


def _level() -> int:
    return logging.getLogger("srmil").getEffectiveLevel()


def compare(labels: PathLike, bags: PathLike, out: PathLike, specs: list[str],
            base: RunConfig | None = None, reference: str | None = None,
            splits: PathLike | None = None, resume: bool = False, spec: str | None = None,
            fold: int | None = None, executor: ExecutorConfig | None = None,
            lock: str = "auto") -> CompareResult:
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
        spec, fold: one job of several on ``out`` (either or both): only this spec (itself or
            its 0-based index in ``specs``) / fold; as :func:`cv`'s ``fold``.
        executor: run every (spec, fold) as a job (:func:`cv`).
        lock: how jobs claim files (:mod:`srmil.locks`).

    Returns:
        The table, its markdown, the comparison directory and the pooled ROC figure; for a
        job whose fold is not the last, an empty table and ``missing``.
    """
    from srmil.training.compare import compare as compare_specs
    from srmil.training.compare import parse_spec
    from srmil.training.distributed import check_launch

    base = base or RunConfig()
    check_launch(base.train.devices, base.train.num_nodes)  # before any file is written
    specs = [s.strip() for s in specs if s.strip()]
    if not specs:
        raise ConfigError("no model spec to compare")
    for s in specs:
        parse_spec(s)  # unknown names and keys fail before any training
    if base.model_config:
        raise ConfigError("model settings go into the specs (e.g. srmil:mask_rate=0.5), "
                          "not --set model.*")
    jobs = executor is not None and executor.kind != "none"
    if jobs and (spec is not None or fold is not None):
        raise ConfigError("--spec/--fold is one job; --executor submits the jobs (use one)")
    cohort, table = load_training_cohort(labels, bags, base.split, splits, base.task,
                                         base.regression.strata)
    base = dataclasses.replace(base, task=cohort.task)
    result = compare_specs(out, specs, cohort, table, base, reference, resume, spec=spec,
                           fold=fold, lock=lock, train=not jobs)
    if jobs and result is None:
        from srmil.api.jobs import FoldTask, submit_tasks
        from srmil.training.compare import resolve_spec
        from srmil.training.rundir import ComparisonDir

        cmp = ComparisonDir(Path(out).absolute())
        folds = sorted(int(k) for k in table["fold"].unique())
        tasks = [FoldTask(str(Path(labels).absolute()), str(Path(bags).absolute()),
                          str(cmp.path), base, k, _absolute(splits), resume, lock,
                          executor.threads, tuple(specs), resolve_spec(s, specs), reference,
                          _level())
                 for s in specs for k in folds if not cmp.run(s).is_fold_done(k)]
        _finish_jobs(submit_tasks(tasks, executor, _jobs_folder(out, executor)), str(out))
        if executor.wait:
            from srmil.training.compare import finish_comparison

            finish_comparison(cmp.path, lock)
    return _compare_result(out, lock)


def _compare_result(out: PathLike, lock: str = "auto") -> CompareResult:
    import pandas as pd

    from srmil.reports.roc import pooled, roc_figure
    from srmil.training.compare import comparison_missing, format_markdown
    from srmil.training.rundir import ComparisonDir

    cmp = ComparisonDir(Path(out).absolute())
    setup = cmp.setup() or {}
    if not cmp.is_done():
        return CompareResult(pd.DataFrame(), "", cmp, None, comparison_missing(cmp.path, lock))
    specs = list(setup.get("specs", []))
    folds = sorted(int(k) for k in cmp.splits()["fold"].unique())
    task = (setup.get("base") or {}).get("task", "classification")
    roc = None
    if task in ("auto", "classification"):  # ROC curves need classes
        roc = cmp.roc_path
        if not roc.exists() or roc.stat().st_mtime < cmp.table_csv.stat().st_mtime:
            curves = {s: pooled(cmp.run(s).predictions("test", folds)) for s in specs}
            roc = roc_figure(curves, cmp.roc_path)
    result = cmp.table()
    ref = setup.get("reference", specs[0] if specs else "")
    return CompareResult(result, format_markdown(result, ref, task), cmp, roc)


def summarise(path: PathLike, lock: str = "auto") -> RunResult | CompareResult:
    """Write the summary of a run (``summary.csv/.json``) or the tables of a comparison
    (``comparison.csv/.md``, the ROC figure) once every fold is done; what ``--fold`` jobs
    leave to the last of them, for when that one did not get to it (or to see what is missing).

    Args:
        path: a run directory (``srmil cv``) or a comparison directory (``srmil compare``).
        lock: how files are claimed (:mod:`srmil.locks`).

    Returns:
        The run's or the comparison's result.

    Raises:
        SrmilError: not a run or comparison, or folds not done (one line listing them).
    """
    from srmil.training.compare import comparison_missing, finish_comparison
    from srmil.training.crossval import finish_run
    from srmil.training.rundir import ComparisonDir, RunDir

    cmp = ComparisonDir(Path(path).absolute())
    if cmp.setup_path.exists():
        if finish_comparison(cmp.path, lock) is None:
            missing = comparison_missing(cmp.path, lock)
            n = sum(len(v) for v in missing.values())
            what = "; ".join(f"{s} " + ", ".join(f"fold {k} ({st})" for k, st in m.items())
                             for s, m in missing.items())
            raise SrmilError(f"{n} fold(s) not done: {what}", path)
        return _compare_result(cmp.path, lock)
    run = RunDir(Path(path).absolute())
    if not run.is_run():
        raise SrmilError("not a run or comparison directory (no config.json or compare.json)",
                         path)
    if finish_run(run.path, lock) is None:
        missing = run.missing_folds(lock)
        what = ", ".join(f"fold {k} ({st})" for k, st in missing.items())
        raise SrmilError(f"{len(missing)} of {len(run.split_folds())} fold(s) not done: "
                         f"{what}", path)
    return _run_result(run.path, lock)


def resolve_executor_config(config: PathLike | None = None, kind: str | None = None,
                            jobs: int | None = None) -> ExecutorConfig:
    """The ``executor:`` section of a config file < ``--executor`` / ``--jobs``.

    Raises:
        ConfigError: unknown or ill-typed keys.
    """
    from srmil.config import from_dict, load_config_file

    data = load_config_file(os.fspath(config)) if config else {}
    section = dict(data.get("executor") or {})
    if kind is not None:
        section["kind"] = kind
    if jobs is not None:
        section["jobs"] = jobs
    return from_dict(ExecutorConfig, section)


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


def init_config(model: str = "srmil", task: str = "auto") -> str:
    """A commented YAML run config: every section and field with its default and its
    description (the comments of :mod:`srmil.config`). ``--config`` reads it back as
    :class:`RunConfig` with ``model_config`` = the model's defaults.

    Args:
        model: the MIL model whose own settings fill ``model_config``.
        task: ``auto`` (from the labels' columns) or a task the run is fixed to.

    Raises:
        ConfigError: unknown model or task (listing the choices).
    """
    from srmil import __version__
    from srmil.config import commented_yaml
    from srmil.models import MODELS

    cls = MODELS.get(model)
    cfg = RunConfig(model=model.lower(), task=task)
    how = f"--model {model.lower()}" + ("" if task == "auto" else f" --task {task}")
    head = [f"# srmil {__version__} run config, written by `srmil init {how}`",
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
    data.pop("executor", None)  # where the folds run: resolve_executor_config
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
           "load_training_cohort", "models", "resolve_executor_config", "resolve_run_config",
           "summarise", "synth", "train",
           "SrmilError"]
