"""``srmil predict``: apply a run's selected model(s) to a directory of bags or one bag."""

from __future__ import annotations

import argparse

from srmil.cli.common import add_command, flag
from srmil.cli.evaluate import _fmt


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "predict", help="predict slide labels with a trained run",
                    description="Class probabilities per slide (survival: risk and "
                    "survival per time bin; regression: the value). With several folds the "
                    "predictions are averaged over the folds' selected models "
                    "(an ensemble) unless --fold picks one. With --labels only its slides are "
                    "predicted, a patient-level run predicts its cases (slide_id,case_id "
                    "suffice), and labels there are scored (metrics beside the CSV).")
    flag(p, "--run", required=True)
    flag(p, "--bags", required=True)
    flag(p, "--labels", ": optional; slide_id[,case_id] without labels is enough to predict "
         "a patient-level run per case; with the run's label columns the predictions are "
         "scored")
    flag(p, "--out", ": the predictions CSV", required=True)
    flag(p, "--fold", ": use this fold's model only", type=int, default=None)
    flag(p, "--overwrite", action="store_true")
    p.set_defaults(func=run)


def summary_lines(table, folds: list[int]) -> list[str]:
    """A few lines about a prediction table: what was predicted, and the spread of the
    prediction (class counts; risk or value quartiles)."""
    import numpy as np

    ids = "case_id" if "case_id" in table else "slide_id"
    what = f"{len(table)} case(s)" if ids == "case_id" else f"{len(table)} slide(s)"
    if "slides" in table:
        n = sum(len(s.split(";")) for s in table["slides"])
        what += f" ({n} slides)"
    used = (f"fold {folds[0]}'s model" if len(folds) == 1
            else f"folds {','.join(map(str, folds))} averaged")
    lines = [f"predicted  {what}, {used}"]
    if "risk" in table:
        q = np.percentile(table["risk"].to_numpy(float), [0, 50, 100])
        lines.append(f"risk       min {q[0]:.3g}  median {q[1]:.3g}  max {q[2]:.3g}")
    elif any(c.startswith("prob_") for c in table.columns):
        counts = table["pred"].value_counts()
        lines.append("classes    " + "   ".join(f"{c} {n}" for c, n in counts.items()))
    elif "pred" in table:
        q = np.percentile(table["pred"].to_numpy(float), [0, 50, 100])
        lines.append(f"value      min {q[0]:.3g}  median {q[1]:.3g}  max {q[2]:.3g}")
    return lines


def run(args: argparse.Namespace) -> int:
    from srmil import api

    result = api.predict(args.run, args.bags, args.out, fold=args.fold,
                         overwrite=args.overwrite, labels=args.labels)
    for line in summary_lines(result.table, result.folds):
        print(line)
    if result.metrics is not None:
        print(_fmt(f"per {result.metrics['unit']}", result.metrics))
        print(f"metrics    {result.metrics_path}")
    print(f"written    {result.path}")
    return 0
