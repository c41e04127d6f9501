"""``srmil predict``: apply a run's selected model(s) to a directory of bags or one bag."""

from __future__ import annotations

import argparse

from srmil.cli.common import add_command, flag


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "predict", help="predict slide labels with a trained run",
                    description="Class probabilities per slide (survival: risk and "
                    "survival per time bin; regression: the value). With several folds the "
                    "predictions are averaged over the folds' selected models "
                    "(an ensemble) unless --fold picks one.")
    flag(p, "--run", required=True)
    flag(p, "--bags", required=True)
    flag(p, "--out", ": the predictions CSV", required=True)
    flag(p, "--fold", ": use this fold's model only", type=int, default=None)
    flag(p, "--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from srmil import api

    result = api.predict(args.run, args.bags, args.out, fold=args.fold,
                         overwrite=args.overwrite)
    with pd.option_context("display.width", 120):
        print(result.table.head(20).to_string(index=False))
    return 0
