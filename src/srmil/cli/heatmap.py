"""``srmil heatmap``: per-patch scores of a trained run drawn as heatmaps, from the bags alone
or over the slides."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "heatmap", help="per-patch score heatmaps, GeoJSON for QuPath, top/bottom patches",
        description="Score every patch of each slide with a run's model: attention where the "
        "model has it (SRMIL: supernode attention of the last encoder layer, mean over heads; "
        "ABMIL: pooling weights), else gradient x input of the predicted class. Each slide is "
        "scored by the fold model whose test split held it; slides outside every test split by "
        "the mean over the folds; --fold picks one. Writes per slide: scores.csv, heatmap.png, "
        "top_bottom.csv, patches.geojson (QuPath: File > Import objects), and with --slides "
        "overlay.png and patch crops.")
    p.add_argument("--run", required=True, help="run directory (srmil train / cv)")
    p.add_argument("--bags", required=True, help="directory of bags, or one bag file")
    p.add_argument("--out", required=True, help="output directory (one folder per slide)")
    p.add_argument("--slides", default=None,
                   help="directory of slide files (slide_id = file name without extension); "
                   "adds the overlay on a thumbnail and patch crops")
    p.add_argument("--mpp-csv", default=None,
                   help="slide_id,mpp for slides whose files lack a pixel size (needed only "
                   "for bags with micrometre coordinates)")
    p.add_argument("--slide-ids", nargs="+", default=None, metavar="ID",
                   help="only these slides (default: every bag)")
    p.add_argument("--fold", type=int, default=None,
                   help="score every slide with this fold's model")
    p.add_argument("--method", choices=["auto", "attention", "gradient"], default=None,
                   help="auto (default): attention when the model has it, else gradient")
    p.add_argument("--norm", choices=["rank", "minmax"], default=None,
                   help="colour scale: rank percentile within the slide (default) or raw "
                   "min-max")
    p.add_argument("--top-k", type=int, default=None, help="patches at each end (default 8)")
    p.add_argument("--max-side", type=int, default=None,
                   help="pixels of the heatmap's long side (default 1200)")
    p.add_argument("--cmap", default=None, help="matplotlib colour map (default viridis)")
    p.add_argument("--no-geojson", action="store_true", help="skip the QuPath GeoJSON")
    p.add_argument("--overwrite", action="store_true",
                   help="redo slides that are already done (default: skip them)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import matplotlib

    from srmil.config import HeatmapConfig
    from srmil.errors import SrmilError
    from srmil.reports.slide_heatmaps import heatmap_run

    matplotlib.use("Agg")
    cfg = HeatmapConfig()
    for key in ("method", "norm", "top_k", "max_side", "cmap"):
        if getattr(args, key) is not None:
            cfg = replace(cfg, **{key: getattr(args, key)})
    if args.no_geojson:
        cfg = replace(cfg, geojson=False)
    if cfg.top_k < 0 or cfg.max_side < 100:
        raise SrmilError("--top-k must be >= 0 and --max-side >= 100")
    if cfg.cmap not in matplotlib.colormaps:
        raise SrmilError(f"unknown colour map {cfg.cmap!r} (see matplotlib's colormaps)")
    mpp = None
    if args.mpp_csv:
        from srmil.slides.readers import read_mpp_overrides

        mpp = read_mpp_overrides(args.mpp_csv)
    results = heatmap_run(args.run, args.bags, args.out, args.slides, args.slide_ids,
                          args.fold, cfg, overwrite=args.overwrite, mpp=mpp)
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    print(f"{counts['done']} slide(s) done, {counts['skipped']} already done (skipped), "
          f"{counts['failed']} failed -> {args.out}/index.csv", file=sys.stderr)
    return 1 if counts["failed"] else 0  # as srmil extract: 1 = some slides failed
