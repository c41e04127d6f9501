"""``srmil synth OUT``: write one of the built-in known-truth cohorts."""

from __future__ import annotations

import argparse

from srmil.cli.common import RawDescriptionHelpFormatter, add_command, flag
from srmil.config import SYNTH_VARIANT_DEFAULTS, SynthConfig

VARIANTS = ["spatial", "instance", "mixed", "sparse", "survival", "regression"]


def _range(text: str) -> tuple[float, float]:
    """``"0.01,0.06"`` → ``(0.01, 0.06)``; one value ``"0.05"`` → ``(0.05, 0.05)``."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (shares in [0, 1]), got {text!r}"
                                         ) from None
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected LO,HI (shares in [0, 1]), got {text!r}")
    return (parts[0], parts[-1])


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = SynthConfig()
    p = add_command(
        sub, "synth", formatter_class=RawDescriptionHelpFormatter,
        help="write the built-in synthetic cohort (TRIDENT layout)",
        description="Write the built-in synthetic cohort in TRIDENT's layout:\n\n"
        "  OUT/labels.csv      slide_id,case_id,label,...\n"
        "  OUT/synth.json      config + oracle accuracies\n"
        "  OUT/20x_224px_0px_overlap/features_synth/<slide_id>.h5")
    p.add_argument("out", help="output directory")
    flag(p, "--variant", f" (default {d.variant}; see README 'The built-in synthetic cohorts')",
         choices=VARIANTS, default=d.variant)
    flag(p, "--n-slides", f" (default {d.slides})", type=int, default=d.slides)
    flag(p, "--dim", f" (default {d.dim})", type=int, default=d.dim)
    flag(p, "--seed", f" (default {d.seed})", type=int, default=d.seed)
    flag(p, "--min-patches", f" (default {d.min_patches})", type=int, default=d.min_patches)
    flag(p, "--max-patches", f" (default {d.max_patches})", type=int, default=d.max_patches)
    flag(p, "--positive-fraction", f", for imbalanced cohorts (default {d.positive_fraction})",
         type=float, default=d.positive_fraction)
    frac = ", ".join(f"{v} {lo:g}-{hi:g}" for v, e in SYNTH_VARIANT_DEFAULTS.items()
                     for lo, hi in [e["tumour_fraction"]])
    flag(p, "--tumour-fraction", f" (mixed: of the lesion); default per variant: {frac}",
         type=_range, default=None)
    shift = ", ".join(f"{v} {e['tumour_shift']:g}" for v, e in SYNTH_VARIANT_DEFAULTS.items())
    flag(p, "--tumour-shift", f"; default per variant: {shift}", type=float, default=None)
    flag(p, "--lookalike-fraction", f", mixed variant (default "
         f"{d.lookalike_fraction[0]:g},{d.lookalike_fraction[1]:g})",
         type=_range, default=d.lookalike_fraction)
    flag(p, "--tissue-spread", f" (default {d.tissue_spread:g})", type=float,
         default=d.tissue_spread)
    flag(p, "--overwrite", action="store_true")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    return SynthConfig(
        variant=args.variant, slides=args.n_slides, dim=args.dim, seed=args.seed,
        min_patches=args.min_patches, max_patches=args.max_patches,
        positive_fraction=args.positive_fraction, tumour_fraction=args.tumour_fraction,
        tumour_shift=args.tumour_shift, lookalike_fraction=args.lookalike_fraction,
        tissue_spread=args.tissue_spread,
    )


def format_summary(s: dict) -> str:
    classes = ", ".join(f"{k} {v}" for k, v in s["classes"].items())
    if s["variant"] in ("survival", "regression"):
        what = "c-index" if s["variant"] == "survival" else "Pearson r"
        key = "c_index" if s["variant"] == "survival" else "pearson"
        return "\n".join([
            f"cohort     {s['variant']}: {s['slides']} slides, {s['cases']} cases"
            + (f" ({classes})" if classes else ""),
            f"labels     {s['labels_csv']}",
            f"features   {s['features_dir']}  (dim {s['config']['dim']}, 20× and 40× scans "
            "mixed)",
            f"oracle     {what} {s['oracle_score_' + key]:.2f} knowing the true score, "
            f"{s['oracle_true_mask_' + key]:.2f} from the true tumour patches' clustering",
            f"           {s['mean_pooling_oracle_' + key]:.2f} from mean-pooled features "
            "along the tumour direction (in-sample; ~chance)",
        ])
    return "\n".join([
        f"cohort     {s['variant']}: {s['slides']} slides, {s['cases']} cases ({classes})",
        f"labels     {s['labels_csv']}",
        f"features   {s['features_dir']}  (dim {s['config']['dim']}, 20× and 40× scans mixed)",
        f"oracle     accuracy {s['oracle_true_mask_accuracy']:.2f} knowing the tumour patches, "
        f"{s['oracle_feature_threshold_accuracy']:.2f} thresholding the true tumour direction",
        f"           {s['mean_pooling_oracle_accuracy']:.2f} with the best cut on mean-pooled "
        "features (in-sample; ~chance on 'spatial')",
        f"oracle AUC {s['oracle_count_auc']:.2f} knowing which patches are tumour-like (their "
        f"share), {s['oracle_arrangement_auc']:.2f} knowing their arrangement,",
        f"           {s['oracle_look_auc']:.2f} knowing what tumour looks like but not where "
        f"(shift {s['config']['tumour_shift']:g}, tumour-like share "
        f"{s['config']['tumour_fraction'][0]:g}-{s['config']['tumour_fraction'][1]:g})",
    ])


def run(args: argparse.Namespace) -> int:
    from srmil import api

    result = api.synth(args.out, config_from_args(args), overwrite=args.overwrite)
    print(format_summary(result.summary))
    return 0
