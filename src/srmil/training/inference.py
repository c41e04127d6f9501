"""Load the selected models of a run and apply them to bags (``srmil predict`` / ``evaluate``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from srmil.config import GraphConfig, from_dict
from srmil.errors import SrmilError
from srmil.models.base import MODELS, MILModel, create_model
from srmil.training.checkpoint import load_weights, read_weights_meta


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The run's config, classes and data paths; one-line error when it is not a run."""
    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise SrmilError("not a run directory (no config.json)", run)
    try:
        cfg = json.loads((run / "config.json").read_text())
        classes = json.loads((run / "classes.json").read_text())["classes"]
        data = json.loads((run / "data.json").read_text()) if (run / "data.json").exists() else {}
    except (OSError, ValueError, KeyError) as exc:
        raise SrmilError(f"unreadable run files ({exc})", run) from None
    return {"config": cfg, "classes": classes, "data": data}


def fold_dirs(run_dir: str | Path, fold: int | None = None) -> list[Path]:
    """Finished folds of the run (``DONE`` written after the selected ``best.safetensors``).

    A fold still training has a ``best.safetensors`` of its best epoch so far but no ``DONE``:
    it is not used, so nothing predicts with a model that is not the run's final choice.
    """
    run = Path(run_dir)
    dirs = sorted((d for d in run.glob("fold_*")
                   if (d / "best.safetensors").exists() and (d / "DONE").exists()),
                  key=lambda d: int(d.name.split("_")[1]))
    if fold is not None:
        dirs = [d for d in dirs if d.name == f"fold_{fold}"]
    if not dirs:
        raise SrmilError("no finished fold (fold_K/DONE with best.safetensors)" +
                         ("" if fold is None else f" for fold {fold}"), run)
    return dirs


def load_fold_model(fold_dir: Path, expect_model: str, classes: list[str]) -> MILModel:
    """Build the model described by ``best.safetensors`` and load its weights.

    Raises:
        SrmilError: missing or corrupt checkpoint, another model than the run's, or classes that
            do not match the run's.
    """
    path = fold_dir / "best.safetensors"
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
    net = create_model(name, int(meta["in_dim"]), int(meta["n_classes"]), meta["model_config"])
    load_weights(path, net)
    net.eval()
    return net


def load_run_models(run_dir: str | Path, fold: int | None = None
                    ) -> tuple[dict[str, Any], list[tuple[int, MILModel]]]:
    """The run's description (:func:`read_run`) and its folds' selected models, in eval mode.

    Returns:
        (run, [(fold index, model), …]) ordered by fold.
    """
    run = read_run(run_dir)
    models = [(int(d.name.split("_")[1]), load_fold_model(d, run["config"]["model"],
                                                           run["classes"]))
              for d in fold_dirs(run_dir, fold)]
    return run, models


def graph_config(run: dict[str, Any]) -> GraphConfig:
    return from_dict(GraphConfig, run["config"].get("graph", {}))


def ensemble(probs: list[np.ndarray]) -> np.ndarray:
    """Mean of the folds' probabilities, (S, C)."""
    return np.mean(np.stack(probs), axis=0)
