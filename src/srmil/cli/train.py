"""``srmil train`` (one fold) and ``srmil cv`` (every fold), on one run-directory layout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from srmil.cli.common import add_run_args, cohort_and_splits, run_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train and test one fold (default fold 0 of 5)",
                       description="Train a MIL model on one patient-level fold, select it on "
                       "validation, test it once. The run directory holds everything.")
    add_run_args(p)
    p.add_argument("--fold", type=int, default=0, help="which fold of the splits (default 0)")
    p.set_defaults(func=run_train)
    p = sub.add_parser("cv", help="k-fold cross-validation with a summary table",
                       description="Train and test every patient-level fold; summary table "
                       "with mean ± std and 95 %% bootstrap CI of test AUC and accuracy.")
    add_run_args(p)
    p.add_argument("--folds", type=int, default=None, help="number of folds (default 5)")
    p.set_defaults(func=run_cv)


def _run(args: argparse.Namespace, cfg, folds: list[int] | None) -> int:
    from srmil.training.crossval import format_summary, run_folds  # Lightning: lazily

    cohort, splits = cohort_and_splits(args, cfg)
    out = Path(args.out)
    summary = run_folds(out, cohort, splits, cfg, folds=folds, resume=args.resume)
    print(format_summary(summary))
    print(f"run directory: {out}", file=sys.stderr)
    return 0


def run_train(args: argparse.Namespace) -> int:
    return _run(args, run_config(args), [args.fold])


def run_cv(args: argparse.Namespace) -> int:
    return _run(args, run_config(args, folds=args.folds), None)
