"""``srmil patch``: patch coordinates on tissue, ``patches/<slide>_patches.h5`` as TRIDENT's."""

from __future__ import annotations

import argparse

from srmil.cli.common import add_command
from srmil.cli.slide_args import add_job_args, job_kwargs, patch_config, print_job


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "patch", help="patch coordinates on tissue (segments first where needed)",
        description="A level-0-aligned grid at --mag / --patch-size / --overlap; patches with "
        "at least --min-tissue tissue are kept. Writes "
        "<out>/<mag>x_<ps>px_<ov>px_overlap/patches/<slide>_patches.h5 with TRIDENT's attrs. "
        "Slides without contours are segmented first. Exit code 1 when a slide failed.",
    )
    add_job_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srmil import api

    return print_job(args, api.patch(args.slides, args.out, patch_config(args),
                                     **job_kwargs(args)))
