"""``srmil check``: validate a cohort before training."""

from __future__ import annotations

import argparse

from srmil.cli.common import add_command, flag
from srmil.config import GraphConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "check", help="validate labels + feature bags and print a summary",
        description="Read every bag once and report slides matched / missing / unlabelled, "
        "classes, patches, feature dimension, patch step and its source, graph degrees and every "
        "problem found. Exit code 1 when a problem would stop training.",
    )
    flag(p, "--bags", required=True)
    flag(p, "--labels", " (extra columns kept); without it only the bags are checked")
    flag(p, "--folds", ": check every class has enough cases for K folds (default 5; 0: skip)",
         type=int, default=5)
    flag(p, "--window", f" (default {GraphConfig().window})", type=int,
         default=GraphConfig().window)
    flag(p, "--step", "; default: attrs checked against coords", type=float, default=None)
    flag(p, "--table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srmil import api
    from srmil.reports.check import format_report

    rep = api.check(args.bags, args.labels, folds=args.folds or None,
                    graph=GraphConfig(window=args.window, step=args.step), table=args.table)
    print(format_report(rep, verbose=args.verbose))
    return 0 if rep.ok else 1
