"""Arguments and config resolution shared by the training commands (one vocabulary)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from srmil.config import RunConfig, apply_sets, from_dict, load_config_file

if TYPE_CHECKING:
    from srmil.bags.cohort import Cohort


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", required=True, help="labels CSV: slide_id,case_id,label")
    p.add_argument("--features", required=True, help="directory of feature bags (*.h5, *.pt)")


def add_run_args(p: argparse.ArgumentParser) -> None:
    add_data_args(p)
    p.add_argument("--out", required=True, help="run directory (must be new unless --resume)")
    p.add_argument("--model", default=None, help="MIL model (default srmil; see `srmil models`)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 100)")
    p.add_argument("--seed", type=int, default=None, help="training seed (default 0)")
    p.add_argument("--accelerator", default=None,
                   help="auto (GPU when present, else CPU) | cpu | gpu (default auto)")
    p.add_argument("--config", default=None, help="YAML/JSON run config (a run's config.json)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. model.mask_rate=0.5, train.lr=1e-4, "
                        "graph.window=3 (repeatable)")
    p.add_argument("--splits", default=None,
                   help="reuse splits: srmil splits.csv, or CLAM splits_<k>.csv (file or dir)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")


def run_config(args: argparse.Namespace, folds: int | None = None) -> RunConfig:
    """Config file < command-line flags < ``--set``; unknown keys are errors."""
    data: dict[str, Any] = load_config_file(args.config) if args.config else {}
    if args.model:
        data["model"] = args.model
    train = dict(data.get("train", {}))
    for key in ("epochs", "seed", "accelerator"):
        if getattr(args, key) is not None:
            train[key] = getattr(args, key)
    data["train"] = train
    if folds is not None:
        data["split"] = {**data.get("split", {}), "folds": folds}
    model = data.get("model", RunConfig().model)
    for item in args.set:
        if item.split("=", 1)[0].strip() == "model":
            model = item.split("=", 1)[1].strip()
    from srmil.models import MODELS  # torch_geometric: imported only when training

    fields = set(MODELS.get(model).Config.__dataclass_fields__)
    return from_dict(RunConfig, apply_sets(data, args.set, fields))


def cohort_and_splits(args: argparse.Namespace, cfg: RunConfig) -> tuple[Cohort, Any]:
    from srmil.bags.cohort import load_cohort
    from srmil.bags.splits import make_splits, read_splits

    cohort = load_cohort(args.labels, args.features)
    errors = [p for p in cohort.problems() if p.is_error]
    if errors:
        from srmil.errors import CohortError

        raise CohortError(errors[0].message, errors[0].path)
    if args.splits:
        splits = read_splits(args.splits, cohort.slides)
    else:
        splits = make_splits(cohort.slides, cfg.split)
    return cohort, splits
