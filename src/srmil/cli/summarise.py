"""``srmil summarise``: the summary of a run, or the tables of a comparison, once every fold is
done (what the last ``--fold`` job writes; this lists the missing folds otherwise)."""

from __future__ import annotations

import argparse
import sys

from srmil.cli.common import add_command, add_lock_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "summarise", help="write a run's summary or a comparison's table once every fold "
        "is done", description="Writes summary.csv/.json of a run directory (srmil cv), or "
        "comparison.csv/.md and comparison_roc.png of a comparison directory (srmil compare), "
        "when every fold is DONE; otherwise lists the folds not done (exit code 2). The job of "
        "an array that finishes the last fold does this already.")
    p.add_argument("path", metavar="RUN", help="run or comparison directory")
    add_lock_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srmil import api
    from srmil.api.results import CompareResult
    from srmil.training.crossval import format_summary

    result = api.summarise(args.path, lock=args.lock)
    if isinstance(result, CompareResult):
        print(result.markdown)
    else:
        print(format_summary(result.summary))
    print(f"summarised: {args.path}", file=sys.stderr)
    return 0
