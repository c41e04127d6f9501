"""``srmil patch``: patch coordinates on tissue, ``patches/<slide>_patches.h5`` as TRIDENT's."""

from __future__ import annotations

import argparse

from srmil.cli.slide_args import add_job_args, run_stages


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "patch", help="patch coordinates on tissue (segments first where needed)",
        description="A level-0-aligned grid at --mag / --patch-size / --overlap; patches with "
        "at least --min-tissue tissue are kept. Writes "
        "<out>/<mag>x_<ps>px_<ov>px_overlap/patches/<slide>_patches.h5 with TRIDENT's attrs. "
        "Slides without contours are segmented first. Exit code 1 when a slide failed.",
    )
    add_job_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_stages(args, ["segment", "patch"])
