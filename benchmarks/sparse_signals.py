"""SRMIL and the baselines on sparse, isolated instance signals (issue 15): which setting matters.

Writes one known-truth cohort (``--cohort sparse``: the ``instance`` variant with 1-6 % tumour
patches and a weak shift; ``--cohort spatial``: the arrangement-only cohort), makes ONE set of
patient-level folds, and runs every model spec of ``--specs`` on those identical folds through
:func:`srmil.training.compare.compare` (resumable: re-running with the same ``--out`` skips
finished folds and adds new specs). Prints, per spec, the test AUC of every fold, their mean,
the mean training classification loss of the last epoch (does the model fit its bags?), and on
the sparse cohort the pooled test AUC of normal slides against positives whose tumour patches
are isolated (``iso``) and against those whose tumour patches form one focus (``clu``).

Specs are ``srmil compare``'s (``srmil:residual=identity``, ``abmil:train.lr=2e-4``, …), one per
candidate cause, so each row changes one thing against the defaults.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/sparse_signals.py --cohort sparse \\
        --specs "srmil;srmil:residual=identity;abmil;mean" --epochs 25
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from srmil.bags.cohort import load_cohort
from srmil.bags.splits import make_splits
from srmil.bags.synth import generate, neighbour_fraction, write_cohort
from srmil.config import SYNTH_VARIANT_DEFAULTS, RunConfig, SplitConfig, SynthConfig, TrainConfig
from srmil.training.compare import compare
from srmil.training.rundir import ComparisonDir

COHORTS = {
    # instance-level signal, no spatial structure needed: 1-6 % tumour patches, weak shift
    "sparse": dict(variant="instance", tumour_fraction=(0.01, 0.06)),
    # srmil synth's `sparse` variant: every positive's 1-6 % tumour patches isolated, shift 2
    "isolated": dict(variant="sparse"),
    # arrangement only (the SRMIL win): the built-in defaults
    "spatial": dict(variant="spatial"),
}


def synth_config(args: argparse.Namespace) -> SynthConfig:
    kw = dict(COHORTS[args.cohort])
    if args.cohort == "sparse":
        kw["tumour_shift"] = args.shift
    return SynthConfig(slides=args.slides, dim=args.dim, seed=args.seed,
                       min_patches=args.min_patches, max_patches=args.max_patches, **kw)


def oracle_auc(cfg: SynthConfig) -> dict[str, float]:
    """AUCs of two oracles on the whole cohort: the share of true tumour patches, and the share
    of patches past half the shift along the true (hidden) tumour direction."""
    slides, direction = generate(cfg)
    pos = "tumour" if cfg.variant in ("instance", "sparse") else "scattered"
    y = np.array([s.label == pos for s in slides], dtype=int)
    if cfg.variant not in ("instance", "sparse"):
        return {}
    mask = np.array([s.tumour.mean() for s in slides])
    shift = (cfg.tumour_shift if cfg.tumour_shift is not None
             else SYNTH_VARIANT_DEFAULTS[cfg.variant]["tumour_shift"])
    thr = np.array([(s.features @ direction > shift / 2).mean() for s in slides])
    return {"true_patches": float(roc_auc_score(y, mask)),
            "direction_threshold": float(roc_auc_score(y, thr))}


def slide_kinds(cfg: SynthConfig) -> dict[str, str]:
    """slide_id → ``normal``, ``isolated`` or ``clustered`` (the positives' tumour patches: a
    mean share of tumour 8-neighbours ≤ 0.3 is the scattered draw, the compact focus is above)
    for the ``instance`` variant, from the cohort's own generator (same seed, same slides)."""
    slides, _ = generate(cfg)
    if cfg.variant != "instance":
        return {}
    return {s.slide_id: "normal" if s.label == "normal" else
            "clustered" if neighbour_fraction(s.cells, s.tumour) > 0.3 else "isolated"
            for s in slides}


def kind_aucs(run_path: Path, kinds: dict[str, str]) -> str:
    """Test AUC of normal vs isolated and normal vs clustered positives, test predictions
    pooled over the folds."""
    if not kinds:
        return ""
    t = pd.concat([pd.read_csv(f) for f in sorted(run_path.glob("fold_*/predictions.csv"))])
    t = t[t["split"] == "test"].assign(kind=lambda d: d["slide_id"].map(kinds))
    out = []
    for k in ("isolated", "clustered"):
        u = t[t["kind"].isin(["normal", k])]
        out.append(f"{roc_auc_score(u['kind'] == k, u['prob_tumour']):.3f}")
    return " ".join(out)


def last_train_ce(run_path: Path) -> float:
    """Mean over folds of the last epoch's training classification loss (``ce_full`` for SRMIL,
    ``ce`` for the others)."""
    vals = []
    for h in sorted(run_path.glob("fold_*/history.csv")):
        row = pd.read_csv(h).iloc[-1]
        col = next((c for c in ("train_ce_full", "train_ce") if c in row.index), None)
        if col is not None:
            vals.append(float(row[col]))
    return float(np.mean(vals)) if vals else float("nan")


def train_seconds(run_path: Path) -> float:
    """Seconds of every epoch of every fold (``history.csv``; noisy on a shared machine)."""
    return float(sum(pd.read_csv(h)["seconds"].sum()
                     for h in run_path.glob("fold_*/history.csv")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cohort", choices=sorted(COHORTS), default="sparse")
    ap.add_argument("--out", type=Path, default=None, help="default bench_out/sparse_<cohort>")
    ap.add_argument("--specs", default="srmil;abmil;mean", help="';'-separated model specs")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--slides", type=int, default=120)
    ap.add_argument("--min-patches", type=int, default=100)
    ap.add_argument("--max-patches", type=int, default=400)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--shift", type=float, default=3.0, help="sparse cohort's tumour shift")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = args.out or Path("bench_out") / f"sparse_{args.cohort}"
    specs = [s.strip() for s in args.specs.split(";") if s.strip()]
    scfg = synth_config(args)
    cohort_dir = out / "cohort"
    if not (cohort_dir / "labels.csv").exists():
        s = write_cohort(scfg, cohort_dir)
    else:
        import json
        s = json.loads((cohort_dir / "synth.json").read_text())
    orc = oracle_auc(scfg)
    kinds = slide_kinds(scfg)
    print(f"cohort {args.cohort}: {s['slides']} slides, {s['cases']} cases, {s['classes']}, "
          f"patches {args.min_patches}-{args.max_patches}, D {args.dim}, shift "
          f"{scfg.tumour_shift}, tumour fraction {scfg.tumour_fraction}")
    print("oracle accuracy: true patches {:.2f}, direction threshold {:.2f}".format(
        s["oracle_true_mask_accuracy"], s["oracle_feature_threshold_accuracy"])
        + "".join(f"; AUC {k} {v:.3f}" for k, v in orc.items()))
    cohort = load_cohort(s["labels_csv"], s["features_dir"])
    split = SplitConfig(folds=args.folds, seed=args.seed)
    splits = make_splits(cohort.slides, split)
    base = RunConfig(train=TrainConfig(epochs=args.epochs, seed=args.seed, accelerator="cpu",
                                       bootstrap=200, logger="csv"), split=split)
    t0 = time.time()
    cmp_dir = out / "compare"
    table = compare(cmp_dir, specs, cohort, splits, base,
                    resume=(cmp_dir / "compare.json").exists())
    print(f"\n{args.folds} patient-level folds (identical for every spec), {args.epochs} epochs, "
          f"seed {args.seed}")
    if kinds:
        counts = pd.Series(kinds).value_counts().to_dict()
        print(f"positives: {counts.get('isolated', 0)} isolated, {counts.get('clustered', 0)} "
              f"clustered; {counts.get('normal', 0)} normal slides")
    print(f"{'spec':<52} {'test AUC per fold':<22} {'mean':>6} {'iso clu':>12} "
          f"{'train CE':>9} {'s':>6}")
    for r in table.itertuples():
        per = " ".join(f"{float(v):.3f}" for v in str(r.per_fold_auc).split(";"))
        run = ComparisonDir(cmp_dir).run(r.model).path
        ce, secs = last_train_ce(run), train_seconds(run)
        print(f"{r.model:<52} {per:<22} {r.auc_mean:>6.3f} {kind_aucs(run, kinds):>12} "
              f"{ce:>9.3f} {secs:>6.0f}")
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
