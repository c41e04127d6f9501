"""``srmil evaluate``: re-test a run's selected models, on its own test splits or on a new
labelled cohort (external validation)."""

from __future__ import annotations

import argparse

from srmil.cli.common import add_command, add_data_args, flag


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "evaluate",
                    help="evaluate a run's models on its test splits or a cohort")
    flag(p, "--run", required=True)
    add_data_args(p, required=False)  # an external cohort; default: the run's own test splits
    flag(p, "--out", ": a new directory for metrics.json and predictions.csv")
    p.set_defaults(func=run)


def _fmt(name: str, m: dict) -> str:
    if "c_index" in m:  # survival
        return (f"{name:<12} n={m['n']:<5} events {m['events']:<4} c-index {m['c_index']:.3f}  "
                f"Uno {m['c_index_uno']:.3f}  td-AUC {m['td_auc']:.3f}  IBS {m['ibs']:.3f}")
    if "mae" in m:  # regression
        return (f"{name:<12} n={m['n']:<5} MAE {m['mae']:.3f}  RMSE {m['rmse']:.3f}  "
                f"R² {m['r2']:.3f}  Pearson {m['pearson']:.3f}  Spearman {m['spearman']:.3f}")
    return (f"{name:<12} n={m['n']:<5} AUC {m['auc']:.3f}  accuracy {m['accuracy']:.3f}  "
            f"balanced {m['balanced_accuracy']:.3f}  F1 {m['f1']:.3f}")


def run(args: argparse.Namespace) -> int:
    from srmil import api

    result = api.evaluate(args.run, args.labels, args.bags, args.out)
    for name, m in result.metrics.items():
        print(_fmt(name.replace("fold_", "fold "), m))
    return 0
