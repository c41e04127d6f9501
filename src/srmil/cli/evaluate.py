"""``srmil evaluate``: re-test a run's selected models, on its own test splits or on a new
labelled cohort (external validation)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from srmil.errors import SrmilError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run's models on its test splits or a cohort")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--labels", help="labels CSV of an external cohort (default: the run's "
                   "own test split of every fold)")
    p.add_argument("--features", help="bags of the external cohort")
    p.add_argument("--out", help="directory for metrics.json and predictions.csv (new)")
    p.set_defaults(func=run)


def _fmt(name: str, m: dict) -> str:
    return (f"{name:<12} n={m['n']:<5} AUC {m['auc']:.3f}  accuracy {m['accuracy']:.3f}  "
            f"balanced {m['balanced_accuracy']:.3f}  F1 {m['f1']:.3f}")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from srmil.bags.cohort import load_cohort
    from srmil.storage import write_csv, write_json
    from srmil.training.data import BagDataset
    from srmil.training.inference import ensemble, graph_config, load_run_models
    from srmil.training.loop import predict_proba, prediction_table
    from srmil.training.metrics import classification_metrics

    if (args.labels is None) != (args.features is None):
        raise SrmilError("--labels and --features go together")
    info, models = load_run_models(args.run)
    classes = info["classes"]
    external = args.labels is not None
    labels = args.labels or info["data"].get("labels")
    features = args.features or info["data"].get("features")
    if not labels or not features:
        raise SrmilError("the run does not record its data; give --labels and --features",
                         args.run)
    cohort = load_cohort(labels, features, classes=classes)
    splits = pd.read_csv(Path(args.run) / "splits.csv", dtype={"slide_id": str})
    if external:
        seen = set(splits.loc[splits.split.isin(["train", "val"]), "slide_id"])
        inside = sorted(seen & set(cohort.slides["slide_id"]))
        if inside:
            print(f"srmil evaluate: warning: {len(inside)} of {len(cohort.slides)} slides "
                  f"(e.g. {inside[0]}) were in this run's train/val splits: the metrics are "
                  "not an external validation", file=sys.stderr)
    results, tables, probs_all = {}, [], []
    rows = cohort.slides.set_index("slide_id")
    net0 = models[0][1]
    pool = BagDataset(rows["path"].tolist(), rows.index.tolist(), rows["target"].tolist(),
                      graph_config(info), net0.uses_graph, net0.in_dim)  # each bag read once
    for k, net in models:
        if external:
            ids = rows.index.tolist()
        else:
            ids = splits.loc[(splits.fold == k) & (splits.split == "test"), "slide_id"].tolist()
            ids = [s for s in ids if s in rows.index]
        if not ids:
            raise SrmilError(f"fold {k}: no slide to evaluate", args.run)
        data = pool.subset(ids)
        probs, _ = predict_proba(net, data)
        results[f"fold_{k}"] = classification_metrics(np.asarray(data.targets), probs,
                                                      len(classes))
        t = prediction_table(data, probs, classes)
        t.insert(1, "fold", k)
        tables.append(t)
        probs_all.append(probs)
        print(_fmt(f"fold {k}", results[f"fold_{k}"]))
    if external and len(probs_all) > 1:
        targets = rows.loc[tables[0].slide_id, "target"].to_numpy()
        results["ensemble"] = classification_metrics(targets, ensemble(probs_all), len(classes))
        print(_fmt("ensemble", results["ensemble"]))
    if args.out:
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise SrmilError("is not empty; choose a new --out", out)
        write_json(out / "metrics.json", results)
        write_csv(out / "predictions.csv", pd.concat(tables, ignore_index=True))
    return 0
