"""``srmil extract``: slide files → tissue → patches → feature bags, in TRIDENT's job layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from srmil.cli.slide_args import add_job_args, run_stages


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract", help="segment, patch and encode slides into feature bags (resumable)",
        description="Runs segment → patch → features on every slide (or one --shard) and writes "
        "<out>/<mag>x_<ps>px_<ov>px_overlap/features_<encoder>/<slide>.h5 as TRIDENT does. "
        "Finished outputs are skipped, truncated or stale ones redone; several processes may "
        "share one --out. Per-stage status tables say done / skipped / failed per slide. "
        "Exit code 1 when a slide failed (the others are still processed).",
    )
    add_job_args(p)
    p.add_argument("--encoder", required=True,
                   help="patch encoder: a preset, stain_stats (no weights), or "
                        "timm:<architecture> with --weights (see the README)")
    p.add_argument("--weights", default=None, help="local weights file (.safetensors, .pt, .bin)")
    p.add_argument("--batch-size", type=int, default=64, help="patches per forward pass")
    p.add_argument("--workers", type=int, default=2,
                   help="DataLoader worker processes reading patches (0: in this process)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda[:i]")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16"],
                   help="storage of the features (computation uses AMP on GPU)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from srmil.errors import SrmilError
    from srmil.features.encoders import create_encoder, weights_sha256
    from srmil.features.extract import extract_slide
    from srmil.slides.pipeline import FeaturesStage

    if args.batch_size < 1 or args.workers < 0:
        raise SrmilError(f"need --batch-size >= 1 and --workers >= 0, got {args.batch_size}, "
                         f"{args.workers}")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise SrmilError(f"--device {args.device!r} is not a torch device") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SrmilError(f"--device {args.device}: CUDA is not available here")
    encoder = create_encoder(args.encoder, args.weights).to(device)
    progress = False if args.quiet else None  # None: bars when stderr is a terminal

    def encode(slide, patches_h5: Path, out_h5: Path, overwrite: bool) -> int:
        return extract_slide(slide, patches_h5, encoder, out_h5, batch_size=args.batch_size,
                             num_workers=args.workers, precision=args.precision,
                             progress=progress, overwrite=overwrite)

    stage = FeaturesStage(encoder.name, encode, precision=args.precision,
                          weights_sha256=weights_sha256(encoder.weights))
    return run_stages(args, ["segment", "patch", "features"], stage)
