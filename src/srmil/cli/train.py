"""``srmil train`` (one fold) and ``srmil cv`` (every fold), on one run-directory layout."""

from __future__ import annotations

import argparse
import sys

from srmil.cli.common import (
    add_command,
    add_jobs_args,
    add_run_args,
    executor_config,
    flag,
    run_config,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "train", help="train and test one fold (default fold 0 of 5)",
                    description="Train a MIL model on one patient-level fold, select it on "
                    "validation, test it once. The run directory holds everything.")
    add_run_args(p)
    flag(p, "--fold", ": which fold of the splits to train (default 0)", type=int, default=0)
    p.set_defaults(func=run_train)
    p = add_command(sub, "cv", help="k-fold cross-validation with a summary table",
                    description="Train and test every patient-level fold; summary table "
                    "with mean ± std and 95 %% bootstrap CI of test AUC and accuracy.")
    add_run_args(p)
    flag(p, "--folds", " (default 5)", type=int, default=None)
    flag(p, "--fold", ": train only this fold into the shared run directory --out (one job "
         "of an array: --fold $SLURM_ARRAY_TASK_ID); the last job to finish writes the "
         "summary", type=int, default=None)
    add_jobs_args(p)
    p.set_defaults(func=run_cv)


def _print(result, out: str) -> int:
    from srmil.training.crossval import format_summary

    if result.missing:  # a --fold job whose fold was not the last
        waiting = ", ".join(f"{k} ({s})" for k, s in result.missing.items())
        print(f"run directory: {out}; fold(s) not done yet: {waiting}; the job that finishes "
              f"the last one writes the summary (or: srmil summarise {out})", file=sys.stderr)
        return 0
    print(format_summary(result.summary))
    print(f"run directory: {out}", file=sys.stderr)
    return 0


def run_train(args: argparse.Namespace) -> int:
    from srmil import api

    return _print(api.train(args.labels, args.bags, args.out, run_config(args), fold=args.fold,
                            splits=args.splits, resume=args.resume), args.out)


def run_cv(args: argparse.Namespace) -> int:
    from srmil import api

    return _print(api.cv(args.labels, args.bags, args.out, run_config(args, folds=args.folds),
                         splits=args.splits, resume=args.resume, fold=args.fold,
                         executor=executor_config(args), lock=args.lock), args.out)
