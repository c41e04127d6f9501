"""``srmil predict``: apply a run's selected model(s) to a directory of bags or one bag."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict slide labels with a trained run",
                       description="Class probabilities per slide. With several folds the "
                       "probabilities are averaged over the folds' selected models "
                       "(an ensemble) unless --fold picks one.")
    p.add_argument("--run", required=True, help="run directory (srmil train / cv)")
    p.add_argument("--bags", required=True, help="directory of bags, or one bag file")
    p.add_argument("--out", required=True, help="output CSV")
    p.add_argument("--fold", type=int, default=None, help="use this fold's model only")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from srmil.bags.readers import find_bags
    from srmil.storage import write_csv
    from srmil.training.data import BagDataset
    from srmil.training.inference import ensemble, graph_config, load_run_models
    from srmil.training.loop import predict_proba, prediction_table

    run_info, models = load_run_models(args.run, args.fold)
    classes = run_info["classes"]
    nets = [net for _, net in models]
    bags = find_bags(args.bags)
    data = BagDataset(list(bags.values()), list(bags), None, graph_config(run_info),
                      nets[0].uses_graph, nets[0].in_dim, cache=len(nets) > 1)
    probs = ensemble([predict_proba(net, data)[0] for net in nets])
    table = prediction_table(data, probs, classes)
    table.insert(1, "folds", ",".join(str(k) for k, _ in models))
    write_csv(args.out, table, overwrite=args.overwrite)
    print(f"{len(table)} slide(s) → {args.out} ({len(nets)} model(s) averaged)",
          file=sys.stderr)
    with pd.option_context("display.width", 120):
        print(table.head(20).to_string(index=False))
    return 0
