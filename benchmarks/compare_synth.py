"""Every model on the built-in synthetic cohorts, several seeds: the evidence table of README.

For each variant (``spatial``: only the arrangement of tumour-like patches tells the classes
apart; ``instance``: their presence does) and each seed, writes a cohort with ``srmil synth``
and runs ``srmil compare`` on it (5-fold patient-level CV, identical folds for every model).
Everything goes through the command line, as a user would run it, and is resumable: re-running
with the same ``--out`` skips finished folds and adds new model specs.

Prints, per variant, each model's test AUC as mean ± std over seeds (each seed's value is the
mean over its folds) and the seeds' values, and writes ``OUT/summary_<variant>.md``.

    python benchmarks/compare_synth.py --out bench_out/compare_synth --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

MODELS = "srmil,srmil:w_gen=0,patchgcn,abmil,abmil_gated,clam_sb,transmil,dsmil,dtfd,mean,max"


def srmil_cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "srmil.cli.main", *args]
    print("$ srmil " + " ".join(args), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def run_seed(out: Path, variant: str, seed: int, models: str, epochs: int, folds: int) -> Path:
    cohort = out / variant / f"seed{seed}" / "cohort"
    if not (cohort / "labels.csv").exists():
        srmil_cli("synth", str(cohort), "--variant", variant, "--seed", str(seed))
    feats = next(cohort.glob("*_overlap/features_synth"))
    cmp_dir = out / variant / f"seed{seed}" / "compare"
    args = ["compare", "--labels", str(cohort / "labels.csv"), "--bags", str(feats),
            "--out", str(cmp_dir), "--models", models, "--folds", str(folds),
            "--epochs", str(epochs), "--seed", str(seed)]
    if (cmp_dir / "compare.json").exists():
        args.append("--resume")
    srmil_cli(*args)
    return cmp_dir / "comparison.csv"


def summarise(tables: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Test AUC per model: mean ± std over seeds of the per-seed fold means."""
    rows = []
    models = list(next(iter(tables.values()))["model"])
    for m in models:
        vals = [float(t.set_index("model").loc[m, "auc_mean"]) for t in tables.values()]
        bacc = [float(t.set_index("model").loc[m, "balanced_accuracy_mean"])
                for t in tables.values()]
        rows.append({"model": m, "auc_mean": np.mean(vals), "auc_std": np.std(vals, ddof=0),
                     "bacc_mean": np.mean(bacc),
                     "per_seed_auc": " ".join(f"{v:.3f}" for v in vals)})
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame, seeds: list[int]) -> str:
    lines = [f"| model | test AUC (mean ± std over seeds {','.join(map(str, seeds))}) "
             "| balanced acc. | per seed |", "|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(f"| {r.model} | {r.auc_mean:.3f} ± {r.auc_std:.3f} | {r.bacc_mean:.3f} "
                     f"| {r.per_seed_auc} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_out/compare_synth"))
    ap.add_argument("--variants", default="spatial,instance")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.time()
    for variant in args.variants.split(","):
        tables = {s: pd.read_csv(run_seed(args.out, variant, s, args.models, args.epochs,
                                          args.folds)) for s in seeds}
        md = markdown(summarise(tables), seeds)
        (args.out / f"summary_{variant}.md").write_text(md)
        print(f"\n## {variant} ({args.folds}-fold CV, {args.epochs} epochs)\n\n{md}", flush=True)
    print(f"total {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
