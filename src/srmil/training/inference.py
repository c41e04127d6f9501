"""Load the selected models of a run and apply them to bags (``srmil predict`` / ``evaluate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from srmil.config import GraphConfig, from_dict
from srmil.errors import SrmilError
from srmil.models.base import MODELS, MILModel, create_model
from srmil.tasks import task_of_state
from srmil.training.checkpoint import load_weights, read_weights_meta
from srmil.training.rundir import RunDir
from srmil.training.standardise import StandardisedModel, Standardiser


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The run's config, classes and data paths; one-line error when it is not a run."""
    run = RunDir(run_dir).require()
    return {"config": run.config_dict(), "classes": run.classes(), "data": run.data()}


def fold_dirs(run_dir: str | Path, fold: int | None = None) -> list[Path]:
    """Finished fold directories of the run (:meth:`RunDir.finished_folds`)."""
    run = RunDir(run_dir)
    return [run.fold_dir(k) for k in run.finished_folds(fold)]


def load_fold_model(fold_dir: Path, expect_model: str, classes: list[str]) -> MILModel:
    """Build the model described by ``best.safetensors`` and load its weights (wrapped in
    :class:`~srmil.training.standardise.StandardisedModel` when the fold standardised).

    Raises:
        SrmilError: missing or corrupt checkpoint, another model than the run's, or classes that
            do not match the run's.
    """
    path = fold_dir / RunDir.BEST
    meta = read_weights_meta(path)
    name = meta.get("model")
    if name != expect_model:
        raise SrmilError(f"checkpoint of model {name!r}, but the run trains {expect_model!r}",
                         path)
    if name not in MODELS:
        raise SrmilError(f"checkpoint of unknown model {name!r}", path)
    if meta.get("classes") != classes:
        raise SrmilError(f"checkpoint classes {meta.get('classes')} differ from the run's "
                         f"{classes}", path)
    task = task_of_state(meta.get("task"), classes)  # survival bins, regression scale
    net = create_model(name, int(meta["in_dim"]), int(meta["n_classes"]), meta["model_config"],
                       task)
    load_weights(path, net)
    st = Standardiser.load(fold_dir)  # train.standardise: the fold's training statistics
    if st is not None:
        net = StandardisedModel(net, st)
    net.eval()
    return net


def load_run_models(run_dir: str | Path, fold: int | None = None
                    ) -> tuple[dict[str, Any], list[tuple[int, MILModel]]]:
    """The run's description (:func:`read_run`) and its folds' selected models, in eval mode.

    Returns:
        (run, [(fold index, model), …]) ordered by fold.
    """
    return read_run(run_dir), RunDir(run_dir).models(fold)


def graph_config(run: dict[str, Any]) -> GraphConfig:
    return from_dict(GraphConfig, run["config"].get("graph", {}))


def ensemble(probs: list[np.ndarray]) -> np.ndarray:
    """Mean of the folds' probabilities (S, C), or of their task outputs (survival: risk and
    per-bin survival, each fold on its own bins; regression: the value)."""
    return np.mean(np.stack(probs), axis=0)
