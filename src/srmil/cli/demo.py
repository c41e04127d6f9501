"""``srmil demo``: the main job on the built-in synthetic cohort.

Built-in ``spatial`` cohort → ``srmil check`` → 5-fold patient-level cross-validation of SRMIL
→ summary table. Interrupted demos continue where they stopped; a finished one reprints its
summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from srmil.config import RunConfig, SplitConfig, SynthConfig, TrainConfig

DEMO_EPOCHS = 12  # the paper trains 100; 12 keeps the demo within minutes on 2 CPU cores


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on the built-in synthetic cohort")
    p.add_argument("--out", default="demo_out", help="demo directory (resumed when present)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    p.add_argument("--accelerator", default="auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srmil.bags.splits import make_splits
    from srmil.bags.synth import write_cohort
    from srmil.cli.synth import format_summary as format_cohort
    from srmil.reports.check import check, format_report
    from srmil.training.crossval import format_summary, run_folds  # Lightning: lazily

    t0 = time.time()
    out = Path(args.out)
    cohort_dir = out / "cohort"
    cfg = SynthConfig(variant="spatial", seed=args.seed)
    if (cohort_dir / "labels.csv").exists():
        summary = json.loads((cohort_dir / "synth.json").read_text())
        # the recorded paths are as given when it was written (maybe relative to another cwd)
        summary["labels_csv"] = str(cohort_dir / "labels.csv")
        summary["features_dir"] = str(next(cohort_dir.glob("*_overlap/features_synth")))
        print(f"[1/3] reusing the cohort in {cohort_dir}")
    else:
        print(f"[1/3] writing the synthetic '{cfg.variant}' cohort to {cohort_dir}")
        summary = write_cohort(cfg, cohort_dir)
    print(format_cohort(summary))
    print("\n[2/3] srmil check")
    rep = check(summary["features_dir"], summary["labels_csv"], folds=5)
    print(format_report(rep, max_rows=0))
    if not rep.ok:
        return 1
    run_dir = out / "run_srmil"
    run_cfg = RunConfig(
        model="srmil",
        train=TrainConfig(epochs=args.epochs, seed=args.seed, accelerator=args.accelerator),
        split=SplitConfig(folds=5, seed=args.seed),
    )
    print(f"\n[3/3] SRMIL, 5-fold patient-level cross-validation, {args.epochs} epochs per fold "
          f"(the paper trains 100) → {run_dir}", flush=True)
    splits = make_splits(rep.cohort.slides, run_cfg.split)
    result = run_folds(run_dir, rep.cohort, splits, run_cfg, resume=True)
    print(format_summary(result))
    print(f"\nrun directory: {run_dir}  ({time.time() - t0:.0f} s)")
    print(f"next: srmil predict --run {run_dir} --bags {summary['features_dir']} "
          "--out predictions.csv", file=sys.stderr)
    return 0
