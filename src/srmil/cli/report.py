"""``srmil report``: one self-contained HTML page about a finished run."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="HTML report of a run: metrics, curves, heatmap gallery",
        description="Write RUN/report/index.html (images embedded; the PNGs also lie beside "
        "it): config, class map, per-fold metrics and summary, ROC and PR curves per fold, "
        "confusion matrix, training curves, and heatmaps of the most and least confident test "
        "slides (drawn from the run's bags when they are still where data.json says).")
    p.add_argument("run", help="run directory (srmil train / cv)")
    p.add_argument("--out", default=None, help="report directory (default RUN/report)")
    p.add_argument("--bags", default=None,
                   help="bags for the gallery (default: the features directory in data.json)")
    p.add_argument("--gallery", type=int, default=3,
                   help="slides at each end of the confidence ranking (default 3; 0: none)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srmil.reports.report import write_report

    path = write_report(args.run, args.out, bags=args.bags, gallery=args.gallery,
                        overwrite=args.overwrite)
    print(f"report: {path}", file=sys.stderr)
    return 0
