"""Arguments shared by ``srmil segment``, ``srmil patch`` and ``srmil extract`` (one vocabulary)."""

from __future__ import annotations

import argparse
import sys

from srmil.cli.common import add_lock_arg, flag
from srmil.config import PatchConfig


def add_job_args(p: argparse.ArgumentParser, patching: bool = True) -> None:
    flag(p, "--slides", required=True)
    flag(p, "--out", ": the job directory (TRIDENT's layout; resumable)", required=True)
    flag(p, "--mpp-csv", default=None)
    flag(p, "--geojson", default=None, metavar="DIR")
    d = PatchConfig()
    if patching:
        flag(p, "--mag", f" (default {d.magnification})", type=int, default=d.magnification)
        flag(p, "--patch-size", f" (default {d.patch_size})", type=int, default=d.patch_size)
        flag(p, "--overlap", f" (default {d.overlap})", type=int, default=d.overlap)
        flag(p, "--min-tissue", f" (default {d.min_tissue})", type=float, default=d.min_tissue)
    flag(p, "--shard", default=None, metavar="I/N")
    add_lock_arg(p)
    flag(p, "--overwrite", action="store_true")


def patch_config(args: argparse.Namespace) -> PatchConfig:
    d = PatchConfig()
    return PatchConfig(
        magnification=getattr(args, "mag", d.magnification),
        patch_size=getattr(args, "patch_size", d.patch_size),
        overlap=getattr(args, "overlap", d.overlap),
        min_tissue=getattr(args, "min_tissue", d.min_tissue),
    )


def job_kwargs(args: argparse.Namespace) -> dict:
    """The keywords of :func:`srmil.api.segment` & co. from the shared flags."""
    return {"geojson": args.geojson, "mpp": args.mpp_csv, "shard": args.shard,
            "overwrite": args.overwrite, "progress": False if args.quiet else None,
            "lock": args.lock}


def print_job(args: argparse.Namespace, result) -> int:
    """A summary line per stage; each failed slide once on stderr; exit code 1 if one failed."""
    for stage, counts in result.counts().items():
        table = result.layout.status(stage, result.encoder)
        print(f"{stage}: {counts['done']} done, {counts['skipped']} skipped, "
              f"{counts['failed']} failed ({table})")
        for row in result.stages[stage]:
            if row.status == "failed" and not row.reason.startswith("not run:"):
                # the stage that failed says why, once
                print(f"srmil {args.command}: {stage} {row.slide_id}: {row.reason}",
                      file=sys.stderr)
    return 1 if result.failed else 0
