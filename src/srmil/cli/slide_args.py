"""Arguments shared by ``srmil segment``, ``srmil patch`` and ``srmil extract`` (one vocabulary)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from srmil.config import PatchConfig, TissueConfig
from srmil.errors import SrmilError


def add_job_args(p: argparse.ArgumentParser, patching: bool = True) -> None:
    p.add_argument("--slides", required=True,
                   help="directory of slide files (.svs .ndpi .mrxs .scn .tif …), or a list: "
                        "a text file with one path per line, or a CSV with a 'path' (or 'wsi') "
                        "column and an optional 'mpp' column")
    p.add_argument("--out", required=True, help="job directory (TRIDENT's layout; resumable)")
    p.add_argument("--mpp-csv", default=None,
                   help="CSV slide_id,mpp: pixel size (µm/px) for slides that lack it or "
                        "where the file is wrong")
    p.add_argument("--geojson", default=None, metavar="DIR",
                   help="user tissue contours <DIR>/<slide_id>.geojson (e.g. edited in QuPath), "
                        "used instead of segmenting")
    d = PatchConfig()
    if patching:
        p.add_argument("--mag", type=int, default=d.magnification,
                       help=f"target magnification (default {d.magnification})")
        p.add_argument("--patch-size", type=int, default=d.patch_size,
                       help=f"patch side in pixels at --mag (default {d.patch_size})")
        p.add_argument("--overlap", type=int, default=d.overlap,
                       help=f"overlap in pixels at --mag (default {d.overlap})")
        p.add_argument("--min-tissue", type=float, default=d.min_tissue,
                       help=f"keep patches with at least this tissue fraction "
                            f"(default {d.min_tissue})")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="process only shard I of N (0-based: 0/4 … 3/4, e.g. "
                        "$SLURM_ARRAY_TASK_ID/4); shards are disjoint and cover the cohort")
    p.add_argument("--overwrite", action="store_true",
                   help="redo outputs that are already complete (default: skip them)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def resolve_slides(args: argparse.Namespace) -> tuple[dict[str, Path], dict[str, float]]:
    """({slide_id: path}, {slide_id: mpp override}) from --slides and --mpp-csv."""
    from srmil.slides.readers import (
        SLIDE_EXTENSIONS,
        find_slides,
        read_mpp_overrides,
        read_slide_list,
    )

    src = Path(args.slides)
    mpp: dict[str, float] = {}
    if src.is_dir():
        slides = find_slides(src)
        if not slides:
            raise SrmilError(f"no slide files ({' '.join(SLIDE_EXTENSIONS)})", src)
    elif src.is_file():
        slides, mpp = read_slide_list(src)
        if not slides:
            raise SrmilError("the slide list names no slide", src)
    else:
        raise SrmilError("no such slide directory or slide list", src)
    if args.mpp_csv:
        mpp.update(read_mpp_overrides(args.mpp_csv))
    return slides, mpp


def build_pipeline(args: argparse.Namespace, slides: dict[str, Path], mpp: dict[str, float]):
    from srmil.slides.pipeline import Pipeline

    d = PatchConfig()
    patch = PatchConfig(
        magnification=getattr(args, "mag", d.magnification),
        patch_size=getattr(args, "patch_size", d.patch_size),
        overlap=getattr(args, "overlap", d.overlap),
        min_tissue=getattr(args, "min_tissue", d.min_tissue),
    )
    if not 0.0 <= patch.min_tissue <= 1.0:
        raise SrmilError(f"--min-tissue must be in [0, 1], got {patch.min_tissue}")
    return Pipeline(args.out, slides, tissue=TissueConfig(), patch=patch, mpp=mpp,
                    geojson_dir=args.geojson, overwrite=args.overwrite,
                    progress=False if args.quiet else None)


def run_stages(args: argparse.Namespace, stages: list[str], features=None) -> int:
    """Run ``stages`` on this shard's slides, print a summary; exit code 1 if a slide failed."""
    from srmil.slides.job import select_shard
    from srmil.slides.pipeline import summarize

    slides, mpp = resolve_slides(args)
    pipe = build_pipeline(args, slides, mpp)
    ids = select_shard(list(slides), args.shard)
    results = pipe.run(ids, stages, features)
    enc = features.encoder if features is not None else None
    failed = False
    for stage, counts in summarize(results).items():
        table = pipe.layout.status(stage, enc)
        print(f"{stage}: {counts['done']} done, {counts['skipped']} skipped, "
              f"{counts['failed']} failed ({table})")
        for row in results[stage]:
            if row.status == "failed":
                failed = True
                if row.reason.startswith("not run:"):
                    continue  # the stage that failed said why, once
                print(f"srmil {args.command}: {stage} {row.slide_id}: {row.reason}",
                      file=sys.stderr)
    return 1 if failed else 0
