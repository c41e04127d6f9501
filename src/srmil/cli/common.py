"""One vocabulary for every subcommand: each concept has one flag, each flag one meaning.

Every flag a subcommand shows is declared in :data:`VOCABULARY` (spelling → meaning) and
added through :func:`flag`, so its help starts with that meaning; old spellings stay accepted
as hidden aliases (:data:`ALIASES`) so existing scripts keep working. ``tests/cli`` walks
``build_parser()`` and fails when one concept has two spellings or one spelling two meanings.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from typing import Any

# spelling → meaning (the first words of its help wherever it appears)
VOCABULARY: dict[str, str] = {
    # data and runs
    "--labels": "labels CSV: slide_id,case_id,label (survival: time,event or "
                "survival_months,censorship; regression: target)",
    "--bags": "feature bags: a directory (*.h5, *.pt) or one bag file",
    "--run": "run directory (srmil train / cv)",
    "--out": "where the results go",
    "--splits": "reuse saved splits: srmil splits.csv, or CLAM splits_<k>.csv (file or dir)",
    "--fold": "one fold index",
    "--folds": "number of patient-level folds",
    # training
    "--model": "MIL model (see `srmil models`)",
    "--models": "comma-separated model specs NAME[:key=value…]",
    "--reference": "the spec the paired tests compare against",
    "--task": "the task: auto (from the labels CSV's columns) | classification | survival | "
              "regression",
    "--epochs": "training epochs",
    "--seed": "random seed",
    "--device": "where to compute: auto (a GPU when present, else the CPU) | cpu | gpu | "
                "cuda[:i]",
    "--config": "YAML/JSON run config (a run's config.json)",
    "--set": "override a config field KEY=VALUE",
    "--resume": "continue the interrupted run in --out (a run directory is never continued "
                "by accident)",
    "--executor": "run the folds (× specs) as jobs: local processes or a SLURM job array, via "
                  "submitit (default: here, one after another); settings in the config's "
                  "executor: section",
    "--jobs": "jobs at a time (local processes; slurm: the array's parallelism)",
    "--lock": "how parallel jobs claim files: auto (lock files on NFS, Lustre, GPFS…; flock "
              "elsewhere) | flock | file (O_EXCL lock files with a heartbeat)",
    "--spec": "one spec of --models, or its 0-based index (one job of an array)",
    "--devices": "worker processes, one per device (GPU i; N CPU processes with --device cpu)",
    "--num-nodes": "nodes training each fold together, srmil started on every node by "
                   "torchrun (train.num_nodes)",
    "--overwrite": "replace outputs that already exist (default: finished outputs are kept: "
                   "skipped, or refused)",
    # logging
    "--quiet": "only warnings and errors; no progress bars",
    "--verbose": "more detail",
    # check
    "--window": "graph window: edge if grid distance <= window·√2",
    "--step": "force the grid step (coords frame)",
    "--table": "write the per-slide table to this CSV",
    # synth
    "--variant": "synthetic cohort variant",
    "--n-slides": "number of slides",
    "--dim": "feature dimension",
    "--min-patches": "fewest patches per slide",
    "--max-patches": "most patches per slide",
    "--positive-fraction": "share of cases in the second class (tumour / scattered)",
    "--tumour-fraction": "LO,HI range of the share of tumour-like patches per slide",
    "--tumour-shift": "norm of the tumour direction added to tumour-like patches (noise SDs)",
    "--lookalike-fraction": "LO,HI range of the share of isolated tumour look-alikes per slide",
    "--tissue-spread": "norm of the offsets between tissue-type prototypes (the nuisance)",
    # slides
    "--slides": "slide files: a directory (.svs .ndpi .mrxs .scn .tif …), or a list: a text "
                "file with one path per line, or a CSV with a 'path' (or 'wsi') column and an "
                "optional 'mpp' column",
    "--mpp-csv": "CSV slide_id,mpp: pixel size (µm/px) for slides that lack it or where the "
                 "file is wrong",
    "--geojson": "user tissue contours <DIR>/<slide_id>.geojson (e.g. edited in QuPath), used "
                 "instead of segmenting",
    "--mag": "target magnification",
    "--patch-size": "patch side in pixels at --mag",
    "--overlap": "overlap in pixels at --mag",
    "--min-tissue": "keep patches with at least this tissue fraction",
    "--shard": "process only shard I of N (0-based: 0/4 … 3/4, e.g. $SLURM_ARRAY_TASK_ID/4); "
               "shards are disjoint and cover the cohort",
    "--encoder": "patch encoder: a preset, stain_stats (no weights), or timm:<architecture> "
                 "with --weights (see the README)",
    "--weights": "local weights file (.safetensors, .pt, .bin)",
    "--batch-size": "patches per forward pass",
    "--workers": "DataLoader worker processes reading patches (0: in this process)",
    "--dtype": "storage type of the features: float32 | float16",
    # heatmaps and reports
    "--slide-ids": "only these slides (default: every bag)",
    "--method": "per-patch score: auto (attention when the model has it, else gradient)",
    "--norm": "colour scale: rank percentile within the slide, or raw min-max",
    "--top-k": "patches at each end",
    "--max-side": "pixels of the heatmap's long side",
    "--cmap": "matplotlib colour map",
    "--no-geojson": "skip the QuPath GeoJSON",
    "--gallery": "slides at each end of the confidence ranking in the heatmap gallery",
}

# old spelling → the flag it now is; accepted, hidden from --help
ALIASES: dict[str, str] = {
    "--features": "--bags",
    "--accelerator": "--device",
    "--precision": "--dtype",
}

# per-command old spellings that mean something else elsewhere: (command, old) → flag
LEGACY_ALIASES: dict[tuple[str, str], str] = {
    ("synth", "--slides"): "--n-slides",  # a count here; --slides names slide files elsewhere
}


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, without the hidden alias spellings."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        hidden = getattr(action, "hidden_aliases", ())
        if hidden:
            action = copy.copy(action)
            action.option_strings = [o for o in action.option_strings if o not in hidden]
        return super()._format_action_invocation(action)


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`HelpFormatter` that keeps the description's line breaks."""


def add_command(sub: argparse._SubParsersAction, name: str, **kw: Any) -> argparse.ArgumentParser:
    """A subcommand parser: no abbreviations (``--fold`` never means ``--folds``), the
    vocabulary's formatter, and ``--quiet`` / ``--verbose``."""
    kw.setdefault("formatter_class", HelpFormatter)
    p = sub.add_parser(name, allow_abbrev=False, **kw)
    p.set_defaults(command_name=name)
    return p


def flag(p: argparse.ArgumentParser, name: str, suffix: str = "", **kw: Any) -> argparse.Action:
    """Add the vocabulary's flag ``name`` (with its hidden aliases) to ``p``.

    Args:
        p: the subcommand's parser.
        name: the spelling, a key of :data:`VOCABULARY`.
        suffix: appended to the meaning in the help (defaults, what it is here).
        kw: ``add_argument`` keywords (type, default, required…).
    """
    command = p.get_default("command_name")
    aliases = [old for old, new in ALIASES.items() if new == name]
    aliases += [old for (cmd, old), new in LEGACY_ALIASES.items()
                if cmd == command and new == name]
    if "help" not in kw:
        kw["help"] = VOCABULARY[name] + suffix
    action = p.add_argument(name, *aliases, **kw)
    action.hidden_aliases = tuple(aliases)  # type: ignore[attr-defined]
    return action


def add_log_args(p: argparse.ArgumentParser) -> None:
    """``--quiet`` / ``--verbose`` (``-v``): what the ``srmil`` logger shows on stderr."""
    g = p.add_argument_group("messages")
    g.add_argument("--quiet", action="store_true", help=VOCABULARY["--quiet"])
    g.add_argument("--verbose", "-v", action="store_true", help=VOCABULARY["--verbose"])


def add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    flag(p, "--labels", required=required)
    flag(p, "--bags", required=required)


def add_train_args(p: argparse.ArgumentParser, model: bool = True) -> None:
    """Training settings shared by train, cv and compare."""
    if model:
        flag(p, "--model", " (default srmil)", default=None)
    flag(p, "--task", " (default auto)", default=None,
         choices=["auto", "classification", "survival", "regression"])
    flag(p, "--epochs", " (default 100)", type=int, default=None)
    flag(p, "--seed", " (default 0)", type=int, default=None)
    flag(p, "--device", " (default auto)", default=None)
    flag(p, "--devices", "; here: DDP, each fold trained by N processes (train.devices, default "
         "1; per node under torchrun)", type=int, default=None)
    flag(p, "--num-nodes", " (default 1)", type=int, default=None)
    flag(p, "--config", default=None)
    flag(p, "--set", ", e.g. model.mask_rate=0.5, train.lr=1e-4, graph.window=3 (repeatable)",
         action="append", default=[], metavar="KEY=VALUE")
    flag(p, "--splits", default=None)
    flag(p, "--resume", action="store_true")


def add_run_args(p: argparse.ArgumentParser) -> None:
    add_data_args(p)
    flag(p, "--out", ": the run directory (must be new unless --resume)", required=True)
    add_train_args(p)


def add_jobs_args(p: argparse.ArgumentParser) -> None:
    """``--executor``, ``--jobs`` and ``--lock`` of ``cv`` and ``compare``."""
    flag(p, "--executor", default=None, choices=["local", "slurm"])
    flag(p, "--jobs", " (default 1)", type=int, default=None)
    add_lock_arg(p)


def add_lock_arg(p: argparse.ArgumentParser) -> None:
    flag(p, "--lock", " (default auto)", default="auto", choices=["auto", "flock", "file"])


def executor_config(args: argparse.Namespace):
    """The config file's ``executor:`` section < ``--executor`` / ``--jobs``; ``None`` when
    neither asks for jobs."""
    from srmil.api import resolve_executor_config

    cfg = resolve_executor_config(args.config, args.executor, args.jobs)
    if args.jobs is not None and cfg.kind == "none":
        from srmil.errors import ConfigError

        raise ConfigError("--jobs needs --executor local|slurm (or executor.kind in --config)")
    return None if cfg.kind == "none" else cfg


def parse_dtype(text: str) -> str:
    """``float32`` / ``float16`` (and the old ``fp32`` / ``fp16``) → ``fp32`` / ``fp16``."""
    names = {"float32": "fp32", "fp32": "fp32", "float16": "fp16", "fp16": "fp16"}
    if text not in names:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from float32, "
                                         "float16)")
    return names[text]


def run_config(args: argparse.Namespace, folds: int | None = None):
    """Config file < command-line flags < ``--set``; unknown keys are errors."""
    from srmil.api import resolve_run_config

    return resolve_run_config(
        model=getattr(args, "model", None), config=args.config, sets=args.set,
        train={"epochs": args.epochs, "seed": args.seed, "accelerator": args.device,
               "devices": getattr(args, "devices", None),
               "num_nodes": getattr(args, "num_nodes", None)},
        folds=folds, task=getattr(args, "task", None))


class _StderrHandler(logging.Handler):
    """Writes to the current ``sys.stderr`` (not the one at creation: tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class _Formatter(logging.Formatter):
    def __init__(self, command: str) -> None:
        super().__init__()
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"srmil {self.command}: error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"srmil {self.command}: warning: {msg}"
        return msg


def configure_logging(command: str, quiet: bool = False, verbose: bool = False
                      ) -> logging.Handler:
    """Send the ``srmil`` logger to stderr: INFO (default), WARNING (``--quiet``) or DEBUG
    (``--verbose``). Returns the handler, for :func:`unconfigure_logging`."""
    logger = logging.getLogger("srmil")
    handler = _StderrHandler()
    handler.setFormatter(_Formatter(command))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    return handler


def unconfigure_logging(handler: logging.Handler) -> None:
    logger = logging.getLogger("srmil")
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
