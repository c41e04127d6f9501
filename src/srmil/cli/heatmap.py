"""``srmil heatmap``: per-patch scores of a trained run drawn as heatmaps, from the bags alone
or over the slides."""

from __future__ import annotations

import argparse
import sys

from srmil.cli.common import add_command, flag


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "heatmap", help="per-patch score heatmaps, GeoJSON for QuPath, top/bottom patches",
        description="Score every patch of each slide with a run's model: attention where the "
        "model has it (SRMIL: supernode attention of the last encoder layer, mean over heads; "
        "ABMIL: pooling weights), else gradient x input of the predicted class (survival: of "
        "the risk; regression: of the value). Each slide is "
        "scored by the fold model whose test split held it; slides outside every test split by "
        "the mean over the folds; --fold picks one. A patient-level run scores a slide inside "
        "its case's bag (the case's other slides from --bags) and draws it per slide. Writes "
        "per slide: scores.csv, heatmap.png, "
        "top_bottom.csv, patches.geojson (QuPath: File > Import objects), and with --slides "
        "overlay.png and patch crops. Finished slides are skipped unless --overwrite.")
    flag(p, "--run", required=True)
    flag(p, "--bags", required=True)
    flag(p, "--out", ": the output directory (one folder per slide)", required=True)
    flag(p, "--slides", "; slide_id = file name without extension; adds the overlay on a "
         "thumbnail and patch crops", default=None)
    flag(p, "--mpp-csv", " (needed only for bags with micrometre coordinates)", default=None)
    flag(p, "--slide-ids", nargs="+", default=None, metavar="ID")
    flag(p, "--fold", ": score every slide with this fold's model", type=int, default=None)
    flag(p, "--method", " (default auto)", choices=["auto", "attention", "gradient"],
         default=None)
    flag(p, "--norm", " (default rank)", choices=["rank", "minmax"], default=None)
    flag(p, "--top-k", " (default 8)", type=int, default=None)
    flag(p, "--max-side", " (default 1200)", type=int, default=None)
    flag(p, "--cmap", " (default viridis)", default=None)
    flag(p, "--no-geojson", action="store_true")
    flag(p, "--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from srmil import api
    from srmil.config import HeatmapConfig

    cfg = HeatmapConfig()
    for key in ("method", "norm", "top_k", "max_side", "cmap"):
        if getattr(args, key) is not None:
            cfg = replace(cfg, **{key: getattr(args, key)})
    if args.no_geojson:
        cfg = replace(cfg, geojson=False)
    result = api.heatmap(args.run, args.bags, args.out, cfg, slides=args.slides,
                         slide_ids=args.slide_ids, fold=args.fold, overwrite=args.overwrite,
                         mpp=args.mpp_csv)
    print(f"{result.count('done')} slide(s) done, {result.count('skipped')} already done "
          f"(skipped), {result.count('failed')} failed -> {args.out}/index.csv",
          file=sys.stderr)
    return 1 if result.failed else 0  # as srmil extract: 1 = some slides failed
