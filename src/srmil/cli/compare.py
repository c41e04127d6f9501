"""``srmil compare``: several MIL models and ablations on identical folds, one table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from srmil.cli.common import add_data_args, cohort_and_splits, run_config
from srmil.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="compare models and ablations on the same patient-level folds",
        description="Train every model spec on the same saved folds (one run directory each, "
        "resumable) and write comparison.csv/.md (mean ± std and 95 %% CI of AUC, accuracy, "
        "balanced accuracy, F1; paired tests against the reference) and comparison_roc.png. "
        "A spec is NAME or NAME:key=value[:key=value], e.g. srmil:w_gen=0.")
    add_data_args(p)
    p.add_argument("--out", required=True, help="comparison directory")
    p.add_argument("--models", required=True,
                   help="comma-separated specs, e.g. srmil,srmil:w_gen=0,abmil,mean")
    p.add_argument("--reference", default=None, help="spec the paired tests compare against "
                   "(default: the first srmil spec)")
    p.add_argument("--folds", type=int, default=None, help="number of folds (default 5)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--accelerator", default=None)
    p.add_argument("--config", default=None, help="YAML/JSON with train/graph/split sections")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="train/graph/split settings shared by every model")
    p.add_argument("--splits", default=None, help="reuse a splits.csv or CLAM splits_<k>.csv")
    p.add_argument("--resume", action="store_true", help="continue an interrupted comparison")
    p.set_defaults(func=run, model=None)


def run(args: argparse.Namespace) -> int:
    from srmil.reports.roc import pooled, roc_figure
    from srmil.training.compare import compare, parse_spec, spec_dir
    from srmil.training.crossval import test_predictions

    specs = [s.strip() for s in args.models.split(",") if s.strip()]
    if not specs:
        raise ConfigError("--models is empty")
    for s in specs:
        parse_spec(s)  # unknown names and keys fail before any training
    base = run_config(args, folds=args.folds)
    if base.model_config:
        raise ConfigError("model settings go into the specs (e.g. srmil:mask_rate=0.5), "
                          "not --set model.*")
    cohort, splits = cohort_and_splits(args, base)
    table = compare(args.out, specs, cohort, splits, base, args.reference, args.resume)
    out = Path(args.out)
    folds = sorted(splits["fold"].unique().tolist())
    curves = {s: pooled(test_predictions(out / spec_dir(s), folds)) for s in specs}
    roc_figure(curves, out / "comparison_roc.png")
    print((out / "comparison.md").read_text())
    print(f"comparison directory: {out} (comparison.csv, comparison.md, comparison_roc.png)",
          file=sys.stderr)
    return 0 if len(table) else 1
