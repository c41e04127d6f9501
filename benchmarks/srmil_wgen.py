"""Does the reconstruction loss help? SRMIL with w_gen = 1.8 (default) vs 0 (no L_rec).

Runs 5-fold patient-level CV of both settings on the built-in ``spatial`` cohort for several
seeds (the same cohort and folds for both) and prints test AUC mean ± std over seeds (each seed's
value is the mean over its folds).

    python benchmarks/srmil_wgen.py --seeds 0,1,2 --epochs 30
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from srmil.bags.cohort import load_cohort
from srmil.bags.splits import make_splits
from srmil.bags.synth import write_cohort
from srmil.config import RunConfig, SplitConfig, SynthConfig, TrainConfig
from srmil.training.crossval import run_folds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--slides", type=int, default=60)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--settings", default="1.8,0", help="w_gen values to compare")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = [float(w) for w in args.settings.split(",")]
    res: dict[float, list[float]] = {w: [] for w in settings}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            s = write_cohort(SynthConfig(slides=args.slides, dim=args.dim, seed=seed),
                             Path(tmp) / f"cohort{seed}")
            cohort = load_cohort(s["labels_csv"], s["features_dir"])
            split = SplitConfig(folds=args.folds, seed=seed)
            splits = make_splits(cohort.slides, split)
            for w in settings:
                cfg = RunConfig(model="srmil", model_config={"w_gen": w},
                                train=TrainConfig(epochs=args.epochs, seed=seed,
                                                  accelerator="cpu", bootstrap=200),
                                split=split)
                summary = run_folds(Path(tmp) / f"run{seed}_{w}", cohort, splits, cfg)
                auc = summary["metrics"]["test_auc"]["mean"]
                res[w].append(auc)
                print(f"seed {seed} w_gen {w}: mean test AUC over {args.folds} folds {auc:.3f}",
                      flush=True)
    print(f"spatial cohort, {args.slides} slides, dim {args.dim}, {args.epochs} epochs, "
          f"{args.folds}-fold CV, seeds {seeds}, {time.time() - t0:.0f} s")
    for w, v in res.items():
        v = np.asarray(v)
        print(f"  w_gen {w:<4} test AUC {v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}")


if __name__ == "__main__":
    main()
