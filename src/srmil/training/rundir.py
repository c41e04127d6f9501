"""The on-disk layout of a run and of a comparison: one owner each, paths and readers.

Run directory (written by :func:`srmil.training.crossval.run_folds`)::

    RUN/config.json  classes.json  splits.csv  data.json
    RUN/fold_K/{last.pt, best.safetensors, history.csv, predictions.csv, metrics.json, DONE}
    RUN/summary.csv  summary.json  DONE

Comparison directory (:func:`srmil.training.compare.compare`)::

    CMP/splits.csv  classes.json  compare.json
    CMP/<spec>/                       one run directory per model spec
    CMP/comparison.csv  comparison.md  comparison_roc.png  DONE

Several jobs may share one directory (``srmil cv --fold K``, ``srmil compare --spec S --fold K``
as SLURM array tasks): the owners also hand out the claims (:mod:`srmil.locks`) that keep them
apart: ``setup_claim`` while the shared files are written or checked (lock beside the
directory), ``fold_claim(k)`` while fold ``k`` trains (``RUN/.fold_K.lock``) and
``finish_claim`` while the summary or table is written (``.DONE.lock``).

Nothing else spells these file names: writers ask the owner for the path, readers for the
content. Unreadable files are one-line :class:`~srmil.errors.SrmilError`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srmil.errors import SrmilError, exc_line
from srmil.locks import Claim

if TYPE_CHECKING:
    import pandas as pd

    from srmil.config import GraphConfig, RunConfig
    from srmil.models.base import MILModel

_FOLD = re.compile(r"^fold_(\d+)$")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SrmilError(f"unreadable ({exc_line(exc)})", path) from None


def _read_csv(path: Path) -> pd.DataFrame:
    import pandas as pd  # lazily: reading a run's layout needs no pandas until a table is read

    try:
        return pd.read_csv(path, dtype={"slide_id": str, "case_id": str})
    except (OSError, ValueError) as exc:
        raise SrmilError(f"unreadable ({exc_line(exc)})", path) from None


class _SplitsOwner:
    """What runs and comparisons share: the saved folds and the class map."""

    SPLITS = "splits.csv"
    CLASSES = "classes.json"
    DONE = "DONE"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.path == self.path  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.path))

    @property
    def splits_path(self) -> Path:
        return self.path / self.SPLITS

    @property
    def classes_path(self) -> Path:
        return self.path / self.CLASSES

    @property
    def done_path(self) -> Path:
        return self.path / self.DONE

    def is_done(self) -> bool:
        """Whether the whole job finished (``DONE`` is written last)."""
        return self.done_path.exists()

    def setup_claim(self, lock: str = "auto") -> Claim:
        """The (blocking) claim under which the shared files are written or compared; its lock
        file sits beside the directory, so the directory itself stays empty until set up."""
        return Claim(self.path, blocking=True, mode=lock)

    def finish_claim(self, lock: str = "auto") -> Claim:
        """The (blocking) claim under which the summary / table and ``DONE`` are written."""
        return Claim(self.done_path, blocking=True, mode=lock)

    def splits(self) -> pd.DataFrame:
        """The saved folds: ``fold, slide_id, case_id, split, …`` (one row per fold and slide)."""
        if not self.splits_path.is_file():
            raise SrmilError("no splits.csv", self.path)
        return _read_csv(self.splits_path)

    def classes(self) -> list[str]:
        """Class names in index order."""
        data = _read_json(self.classes_path)
        if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
            raise SrmilError("expected {\"classes\": [...]}", self.classes_path)
        return [str(c) for c in data["classes"]]

    def test_folds(self) -> dict[str, int]:
        """slide_id → the fold whose test split holds it (empty without ``splits.csv``)."""
        if not self.splits_path.exists():
            return {}
        s = self.splits()
        t = s[s["split"] == "test"]
        return dict(zip(t["slide_id"], t["fold"].astype(int), strict=True))

    def check_same_splits(self, splits: pd.DataFrame) -> None:
        """Refuse to resume with other folds than the saved ``splits.csv``."""
        saved = self.splits()
        cols = ["fold", "slide_id", "split"]
        if not saved[cols].equals(splits[cols].reset_index(drop=True)):
            raise SrmilError("--resume with different splits than the saved splits.csv",
                             self.path)


class RunDir(_SplitsOwner):
    """A run directory: the paths of its files and readers for them.

    Args:
        path: the run directory (need not exist yet: writers use the same paths).
    """

    CONFIG = "config.json"
    DATA = "data.json"
    SUMMARY_CSV = "summary.csv"
    SUMMARY_JSON = "summary.json"
    # per fold
    LAST = "last.pt"
    BEST = "best.safetensors"
    HISTORY = "history.csv"
    METRICS = "metrics.json"
    PREDICTIONS = "predictions.csv"
    CALIBRATION = "calibration.json"  # the fitted temperature (train.calibrate temperature)
    LOGS = "logs"  # Lightning CSV / TensorBoard logs, one version per start of the fold

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def data_path(self) -> Path:
        return self.path / self.DATA

    @property
    def summary_csv(self) -> Path:
        return self.path / self.SUMMARY_CSV

    @property
    def summary_json(self) -> Path:
        return self.path / self.SUMMARY_JSON

    def is_run(self) -> bool:
        """Whether ``config.json`` is there (a run was started here)."""
        return self.config_path.is_file()

    def require(self) -> RunDir:
        """This run directory, or a one-line error when it is not one."""
        if not self.is_run():
            raise SrmilError("not a run directory (no config.json)", self.path)
        return self

    def config_dict(self) -> dict[str, Any]:
        """``config.json`` as saved (with its ``version`` key)."""
        self.require()
        return _read_json(self.config_path)

    def config(self) -> RunConfig:
        """The resolved :class:`~srmil.config.RunConfig` of the run."""
        from srmil.config import RunConfig, from_dict

        data = dict(self.config_dict())
        data.pop("version", None)
        return from_dict(RunConfig, data)

    def model_name(self) -> str:
        return str(self.config_dict()["model"])

    def graph_config(self) -> GraphConfig:
        from srmil.config import GraphConfig, from_dict

        return from_dict(GraphConfig, self.config_dict().get("graph", {}))

    def data(self) -> dict[str, str]:
        """``data.json``: the absolute ``labels`` and ``features`` paths the run trained on
        (empty when the run does not record them)."""
        return _read_json(self.data_path) if self.data_path.exists() else {}

    # folds
    def fold_dir(self, k: int) -> Path:
        return self.path / f"fold_{int(k)}"

    def folds(self) -> list[int]:
        """Every fold with a directory, finished or not, ascending."""
        if not self.path.is_dir():
            return []
        ks = [int(m.group(1)) for d in self.path.iterdir()
              if d.is_dir() and (m := _FOLD.match(d.name))]
        return sorted(ks)

    def split_folds(self) -> list[int]:
        """The folds of the saved ``splits.csv``, ascending: the folds the run is made of."""
        return sorted(int(k) for k in self.splits()["fold"].unique())

    def fold_claim(self, k: int, lock: str = "auto") -> Claim:
        """The claim a job holds while it trains fold ``k`` (never two jobs on one fold)."""
        return Claim(self.fold_dir(k), mode=lock)

    def fold_state(self, k: int, lock: str = "auto") -> str:
        """``done`` | ``training (pid@host)`` | ``unfinished (E of N epochs)`` | ``not started``."""
        if self.is_fold_done(k):
            return "done"
        holder = self.fold_claim(k, lock).active_holder()
        if holder:
            return f"training ({holder})"
        hist = self.history(k)
        if hist is not None and len(hist):
            epochs = self.config().train.epochs if self.is_run() else "?"
            return f"unfinished ({len(hist)} of {epochs} epochs)"
        return "not started"

    def missing_folds(self, lock: str = "auto") -> dict[int, str]:
        """Every fold of ``splits.csv`` that is not ``DONE`` → its :meth:`fold_state`."""
        return {k: self.fold_state(k, lock) for k in self.split_folds()
                if not self.is_fold_done(k)}

    def is_fold_done(self, k: int) -> bool:
        """``DONE`` is written after the selected ``best.safetensors``: a fold still training
        has a best-so-far file but no ``DONE``, and is not finished."""
        d = self.fold_dir(k)
        return (d / self.DONE).exists() and (d / self.BEST).exists()

    def finished_folds(self, fold: int | None = None) -> list[int]:
        """Finished folds (``fold``: only that one).

        Raises:
            SrmilError: none is finished.
        """
        ks = [k for k in self.folds() if self.is_fold_done(k)]
        if fold is not None:
            ks = [k for k in ks if k == fold]
        if not ks:
            raise SrmilError("no finished fold (fold_K/DONE with best.safetensors)"
                             + ("" if fold is None else f" for fold {fold}"), self.path)
        return ks

    def predictions(self, split: str | None = None,
                    folds: list[int] | None = None) -> dict[int, pd.DataFrame]:
        """Each fold's ``predictions.csv`` (``split``: only those rows, sorted by slide_id, or
        by case_id in a patient-level run).

        Args:
            split: ``"val"`` | ``"test"`` | ``None`` (every row, as saved).
            folds: these folds (each must have predictions); default: every fold that has them.

        Returns:
            fold → table ``slide_id, split, label, target, pred, prob_<class>…``.
        """
        ks = folds if folds is not None else [
            k for k in self.folds() if (self.fold_dir(k) / self.PREDICTIONS).exists()]
        out = {}
        for k in ks:
            t = _read_csv(self.fold_dir(k) / self.PREDICTIONS)
            if split is not None:  # patient-level runs: one row per case_id
                key = "slide_id" if "slide_id" in t else "case_id"
                t = t[t["split"] == split].sort_values(key).reset_index(drop=True)
            out[k] = t
        return out

    def task_state(self, k: int) -> dict[str, Any] | None:
        """Fold ``k``'s fitted task (``task.json``: survival bins, regression standardisation);
        ``None`` for classification runs, which have none."""
        path = self.fold_dir(k) / "task.json"
        return _read_json(path) if path.is_file() else None

    def history(self, k: int) -> pd.DataFrame | None:
        p = self.fold_dir(k) / self.HISTORY
        return _read_csv(p) if p.exists() else None

    def metrics(self, k: int) -> dict[str, Any] | None:
        p = self.fold_dir(k) / self.METRICS
        return _read_json(p) if p.exists() else None

    def summary(self) -> dict[str, Any] | None:
        """``summary.json`` (mean ± std, CIs) or ``None`` before the run finished."""
        return _read_json(self.summary_json) if self.summary_json.exists() else None

    def summary_table(self) -> pd.DataFrame | None:
        """``summary.csv``: one row per fold, or ``None``."""
        return _read_csv(self.summary_csv) if self.summary_csv.exists() else None

    def temperature(self, k: int) -> float:
        """The temperature saved with fold ``k``'s model (1.0 when the run does not
        calibrate)."""
        from srmil.training.calibration import read_temperature

        return read_temperature(self.fold_dir(k), self.config().train)

    def calibration(self, k: int) -> dict[str, Any] | None:
        """Fold ``k``'s ``calibration.json`` (the temperature fit) or ``None``."""
        p = self.fold_dir(k) / self.CALIBRATION
        return _read_json(p) if p.exists() else None

    def models(self, fold: int | None = None) -> list[tuple[int, MILModel]]:
        """The finished folds' selected models in eval mode, ordered by fold.

        Raises:
            SrmilError: no finished fold, or a checkpoint that is unreadable or does not fit
                the run (model name, classes).
        """
        from srmil.training.inference import load_fold_model

        name, classes = self.model_name(), self.classes()
        return [(k, load_fold_model(self.fold_dir(k), name, classes))
                for k in self.finished_folds(fold)]


class ComparisonDir(_SplitsOwner):
    """A comparison directory: shared folds, one :class:`RunDir` per model spec, the table."""

    SETUP = "compare.json"
    TABLE_CSV = "comparison.csv"
    TABLE_MD = "comparison.md"
    ROC = "comparison_roc.png"

    @property
    def setup_path(self) -> Path:
        return self.path / self.SETUP

    @property
    def table_csv(self) -> Path:
        return self.path / self.TABLE_CSV

    @property
    def table_md(self) -> Path:
        return self.path / self.TABLE_MD

    @property
    def roc_path(self) -> Path:
        return self.path / self.ROC

    def setup(self) -> dict[str, Any] | None:
        """``compare.json`` (specs, reference, shared settings) or ``None``."""
        return _read_json(self.setup_path) if self.setup_path.exists() else None

    def run(self, spec: str) -> RunDir:
        """The run directory of one model spec."""
        from srmil.training.compare import spec_dir

        return RunDir(self.path / spec_dir(spec))

    def table(self) -> pd.DataFrame:
        return _read_csv(self.table_csv)
