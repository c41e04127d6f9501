"""``srmil segment``: tissue contours (GeoJSON, QuPath-ready) and QC thumbnails per slide."""

from __future__ import annotations

import argparse

from srmil.cli.common import add_command
from srmil.cli.slide_args import add_job_args, job_kwargs, print_job


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "segment", help="segment tissue: GeoJSON contours + QC thumbnails (TRIDENT layout)",
        description="Otsu on the saturation of a low-resolution image, morphology, holes kept "
        "as holes. Writes <out>/contours_geojson/<slide>.geojson, thumbnails/ and contours/; "
        "skips slides already done; a per-slide status table in <out>/status_segment.csv. "
        "Exit code 1 when a slide failed (the others are still processed).",
    )
    add_job_args(p, patching=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srmil import api

    return print_job(args, api.segment(args.slides, args.out, **job_kwargs(args)))
