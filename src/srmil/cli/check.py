"""``srmil check``: validate a cohort before training."""

from __future__ import annotations

import argparse

from srmil.config import GraphConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", help="validate labels + feature bags and print a summary",
        description="Read every bag once and report slides matched / missing / unlabelled, "
        "classes, patches, feature dimension, patch step and its source, graph degrees and every "
        "problem found. Exit code 1 when a problem would stop training.",
    )
    p.add_argument("--features", required=True, help="directory of bags (*.h5, *.pt) or one bag")
    p.add_argument("--labels", help="labels CSV: slide_id,case_id,label (extra columns kept)")
    p.add_argument("--folds", type=int, default=5,
                   help="check every class has enough cases for K folds (0: skip)")
    p.add_argument("--window", type=int, default=GraphConfig().window)
    p.add_argument("--step", type=float, default=None,
                   help="force the grid step (coords frame); default: attrs checked against coords")
    p.add_argument("--table", help="write the per-slide table to this CSV")
    p.add_argument("--verbose", "-v", action="store_true", help="print every slide's row")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srmil.reports.check import check, format_report
    from srmil.storage import write_csv

    cfg = GraphConfig(window=args.window, step=args.step)
    rep = check(args.features, args.labels, folds=args.folds or None, cfg=cfg)
    print(format_report(rep, verbose=args.verbose))
    if args.table:
        write_csv(args.table, rep.table)
    return 0 if rep.ok else 1
