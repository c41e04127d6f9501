"""``srmil extract``: slide files → tissue → patches → feature bags, in TRIDENT's job layout."""

from __future__ import annotations

import argparse

from srmil.cli.common import add_command, flag, parse_dtype
from srmil.cli.slide_args import add_job_args, job_kwargs, patch_config, print_job
from srmil.config import ExtractConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "extract", help="segment, patch and encode slides into feature bags (resumable)",
        description="Runs segment → patch → features on every slide (or one --shard) and writes "
        "<out>/<mag>x_<ps>px_<ov>px_overlap/features_<encoder>/<slide>.h5 as TRIDENT does. "
        "Finished outputs are skipped, truncated or stale ones redone; several processes may "
        "share one --out. Per-stage status tables say done / skipped / failed per slide. "
        "Exit code 1 when a slide failed (the others are still processed).",
    )
    add_job_args(p)
    d = ExtractConfig()
    flag(p, "--encoder", required=True)
    flag(p, "--weights", default=None)
    flag(p, "--batch-size", f" (default {d.batch_size})", type=int, default=d.batch_size)
    flag(p, "--workers", f" (default {d.workers})", type=int, default=d.workers)
    flag(p, "--device", f" (default {d.device})", default=d.device)
    flag(p, "--devices", " (default 1: this process)", type=int, default=1)
    flag(p, "--dtype", " (default float32; computation uses AMP on a GPU)", type=parse_dtype,
         default=d.precision, metavar="{float32,float16}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from srmil import api

    enc = ExtractConfig(encoder=args.encoder, weights=args.weights, batch_size=args.batch_size,
                        workers=args.workers, device=args.device, precision=args.dtype)
    return print_job(args, api.extract(args.slides, args.out, enc, patch_config(args),
                                       devices=args.devices, **job_kwargs(args)))
