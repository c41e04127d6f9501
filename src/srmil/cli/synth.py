"""``srmil synth OUT``: write the built-in synthetic cohort."""

from __future__ import annotations

import argparse

from srmil.config import SynthConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = SynthConfig()
    p = sub.add_parser(
        "synth", help="write the built-in synthetic cohort (TRIDENT layout)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write the built-in synthetic cohort in TRIDENT's layout:\n\n"
        "  OUT/labels.csv      slide_id,case_id,label,...\n"
        "  OUT/synth.json      config + oracle accuracies\n"
        "  OUT/20x_224px_0px_overlap/features_synth/<slide_id>.h5")
    p.add_argument("out", help="output directory")
    p.add_argument("--variant", choices=["spatial", "instance"], default=d.variant)
    p.add_argument("--slides", type=int, default=d.slides)
    p.add_argument("--dim", type=int, default=d.dim)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--min-patches", type=int, default=d.min_patches)
    p.add_argument("--max-patches", type=int, default=d.max_patches)
    p.add_argument("--overwrite", action="store_true", help="replace an existing cohort")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    return SynthConfig(
        variant=args.variant, slides=args.slides, dim=args.dim, seed=args.seed,
        min_patches=args.min_patches, max_patches=args.max_patches,
    )


def format_summary(s: dict) -> str:
    classes = ", ".join(f"{k} {v}" for k, v in s["classes"].items())
    return "\n".join([
        f"cohort     {s['variant']}: {s['slides']} slides, {s['cases']} cases ({classes})",
        f"labels     {s['labels_csv']}",
        f"features   {s['features_dir']}  (dim {s['config']['dim']}, 20× and 40× scans mixed)",
        f"oracle     accuracy {s['oracle_true_mask_accuracy']:.2f} knowing the tumour patches, "
        f"{s['oracle_feature_threshold_accuracy']:.2f} thresholding the true tumour direction",
        f"           {s['mean_pooling_oracle_accuracy']:.2f} with the best cut on mean-pooled "
        "features (in-sample; ~chance on 'spatial')",
    ])


def run(args: argparse.Namespace) -> int:
    from srmil.bags.synth import write_cohort

    summary = write_cohort(config_from_args(args), args.out, overwrite=args.overwrite)
    print(format_summary(summary))
    return 0


