"""``srmil demo``: the main job on the built-in synthetic cohort.

Built-in ``spatial`` cohort → ``srmil check`` → 5-fold patient-level cross-validation of SRMIL
→ summary table. Interrupted demos continue where they stopped; a finished one reprints its
summary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from srmil.cli.common import add_command, flag
from srmil.config import DEMO_EPOCHS  # the one default (srmil.config is light to import)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "demo", help="run the main job on the built-in synthetic cohort")
    flag(p, "--out", ": the demo directory (resumed when present)", default="demo_out")
    flag(p, "--seed", " (default 0)", type=int, default=0)
    flag(p, "--epochs", f" (default {DEMO_EPOCHS})", type=int, default=DEMO_EPOCHS)
    flag(p, "--device", " (default auto)", default="auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srmil import api
    from srmil.cli.synth import format_summary as format_cohort
    from srmil.reports.check import format_report
    from srmil.training.crossval import format_summary

    result = api.demo(args.out, seed=args.seed, epochs=args.epochs, device=args.device)
    print(format_cohort(result.cohort.summary))
    print()
    print(format_report(result.check, max_rows=0))
    if result.run is None:
        return 1
    print()
    print(format_summary(result.run.summary))
    run_dir = Path(args.out) / "run_srmil"  # as given, not made absolute
    print(f"\nrun directory: {run_dir}  ({result.seconds:.0f} s)")
    print(f"next: srmil predict --run {run_dir} --bags {result.cohort.bags} "
          "--out predictions.csv", file=sys.stderr)
    return 0
