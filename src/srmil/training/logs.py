"""Run logs through Lightning's loggers, beside ``history.csv`` (which stays as it is).

``train.logger: csv`` writes ``fold_K/logs/csv/version_V/metrics.csv`` (Lightning's
``CSVLogger``); ``tensorboard`` adds ``fold_K/logs/tensorboard/version_V/`` event files, so
``tensorboard --logdir runs/`` shows every fold of every run. Each start of a fold (the first
one, then each ``--resume``) is a new version: Lightning's CSV writer empties an existing
version's file, and a version per start keeps every logged value.

Logged: ``step/<part>`` (each loss part of each training step, at the global step) and
``epoch/<column>`` (each ``history.csv`` column, at the epoch's last step). No network logger
is wired in; none is imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from srmil.config import TrainConfig
from srmil.errors import ConfigError
from srmil.training.rundir import RunDir


def tensorboard_available() -> bool:
    """Whether Lightning's TensorBoardLogger has a writer (``tensorboard`` or ``tensorboardX``)."""
    return any(importlib.util.find_spec(m) is not None for m in ("tensorboard", "tensorboardX"))


def check_logger(cfg: TrainConfig) -> None:
    """Refuse, before anything is written, a logger that cannot run here.

    Raises:
        ConfigError: ``tensorboard`` asked for but not installed.
    """
    if cfg.logger == "tensorboard" and not tensorboard_available():
        raise ConfigError("train.logger tensorboard needs the tensorboard package: pip install "
                          "'srmil[tensorboard]' (or use train.logger csv)")


def make_loggers(cfg: TrainConfig, fold_dir: Path) -> list[Any]:
    """The fold's Lightning loggers (CSV always, TensorBoard when asked for)."""
    from lightning.fabric.loggers import CSVLogger, TensorBoardLogger

    check_logger(cfg)
    root = fold_dir / RunDir.LOGS
    loggers: list[Any] = [CSVLogger(root, name="csv", flush_logs_every_n_steps=10**9)]
    if cfg.logger == "tensorboard":
        loggers.append(TensorBoardLogger(root, name="tensorboard", default_hp_metric=False))
    return loggers


def epoch_end(fabric: Any, row: dict[str, Any], step: int) -> None:
    """Log one ``history.csv`` row and flush every logger (once per epoch, not per step)."""
    fabric.log_dict({f"epoch/{k}": float(v) for k, v in row.items()}, step=step)
    for lg in fabric.loggers:
        lg.save()


def close_loggers(fabric: Any) -> None:
    for lg in fabric.loggers:
        lg.finalize("success")
