"""``srmil report``: one self-contained HTML page about a finished run."""

from __future__ import annotations

import argparse
import sys

from srmil.cli.common import add_command, flag


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "report", help="HTML report of a run: metrics, curves, heatmap gallery",
        description="Write RUN/report/index.html (images embedded; the PNGs also lie beside "
        "it): config, class map, per-fold metrics and summary, ROC and PR curves per fold, "
        "confusion matrix, calibration, training curves, and heatmaps of the most and least "
        "confident test slides (drawn from the run's bags when they are still where data.json "
        "says). Survival: Kaplan-Meier curves, log-rank p, calibration at a horizon, gallery "
        "by risk; regression: predicted vs true, gallery by value; patient-level runs: cases, "
        "each with its slides' heatmaps.")
    flag(p, "--run", default=None)
    # the run as a positional argument: the old spelling, still accepted
    p.add_argument("run_positional", nargs="?", default=None, help=argparse.SUPPRESS)
    flag(p, "--out", ": the report directory (default RUN/report)", default=None)
    flag(p, "--bags", " for the gallery (default: the bags the run trained on)", default=None)
    flag(p, "--gallery", " (default 3; 0: none)", type=int, default=3)
    flag(p, "--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srmil import api
    from srmil.errors import SrmilError

    if (args.run is None) == (args.run_positional is None):
        raise SrmilError("give the run directory once: --run RUN")
    result = api.report(args.run or args.run_positional, args.out, bags=args.bags,
                        gallery=args.gallery, overwrite=args.overwrite)
    print(f"report: {result.path}", file=sys.stderr)
    return 0
