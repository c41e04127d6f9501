"""``srmil compare``: several MIL models and ablations on identical folds, one table."""

from __future__ import annotations

import argparse
import sys

from srmil.cli.common import (
    add_command,
    add_data_args,
    add_jobs_args,
    add_train_args,
    executor_config,
    flag,
    run_config,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "compare", help="compare models and ablations on the same patient-level folds",
        description="Train every model spec on the same saved folds (one run directory each, "
        "resumable) and write comparison.csv/.md (mean ± std and 95 %% CI of AUC, accuracy, "
        "balanced accuracy, F1; paired tests against the reference) and comparison_roc.png. "
        "A spec is NAME or NAME:key=value[:key=value], e.g. srmil:w_gen=0.")
    add_data_args(p)
    flag(p, "--out", ": the comparison directory", required=True)
    flag(p, "--models", ", e.g. srmil,srmil:w_gen=0,abmil,mean", required=True)
    flag(p, "--reference", " (default: the first srmil spec)", default=None)
    flag(p, "--folds", " (default 5)", type=int, default=None)
    add_train_args(p, model=False)  # train/graph/split settings shared by every model
    flag(p, "--spec", ": train only this spec (with --fold: only that fold) into the shared "
         "comparison --out; the last job to finish writes the table", default=None)
    flag(p, "--fold", ": train only this fold (of every spec, or of --spec)", type=int,
         default=None)
    add_jobs_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srmil import api

    specs = args.models.split(",")
    result = api.compare(args.labels, args.bags, args.out, specs,
                         run_config(args, folds=args.folds), args.reference, args.splits,
                         args.resume, spec=args.spec, fold=args.fold,
                         executor=executor_config(args), lock=args.lock)
    if result.missing:  # a --spec/--fold job whose fold was not the last
        n = sum(len(m) for m in result.missing.values())
        print(f"comparison directory: {args.out}; {n} fold(s) not done yet; the job that "
              f"finishes the last one writes the table (or: srmil summarise {args.out})",
              file=sys.stderr)
        return 0
    print(result.markdown)
    roc = ", comparison_roc.png" if result.roc is not None else ""
    print(f"comparison directory: {args.out} (comparison.csv, comparison.md{roc})",
          file=sys.stderr)
    return 0 if len(result.table) else 1
