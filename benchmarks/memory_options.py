"""SRMIL's memory options side by side: speed-up and memory (``srmil bench step``) and the
test-AUC change (``srmil compare`` on the built-in ``spatial`` cohort, identical folds).

    python benchmarks/memory_options.py --out bench_out/backend_auc --seeds 0,1,2 \
        --sizes 10000 --crop 96

The AUC part trains every option on the small built-in cohort (100–300 patches per slide), so
its crop is ``--crop`` patches (the step part crops 8,192 and 2,048 of the large bags). Both
parts are resumable: finished folds are skipped, and a step JSON given with ``--step-json``
is read instead of measured again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from compare_synth import run_seed  # noqa: E402

DEFAULT = "srmil"
OPTIONS = {  # label: (compare spec, bench step label); crop specs get --crop
    "checkpoint": ("srmil:checkpoint=true", "srmil (grid) +checkpoint"),
    "shared projection": ("srmil:share_projection=true", "srmil (grid) +shared proj"),
    "crop": ("srmil:train_crop={crop}", "srmil (grid) +crop 8192"),
}


def step_figures(sizes: str, out: Path) -> dict:
    labels = ",".join(["srmil (grid)", *(v[1] for v in OPTIONS.values())])
    cmd = [sys.executable, "-m", "srmil.cli.main", "bench", "step", "--sizes", sizes,
           "--small-dim", "1024", "--threads", "1", "--repeats", "2", "--models", labels,
           "--out", str(out)]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_out/memory_options"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--options", default="shared projection,crop",
                    help="which options train for the AUC (checkpoint is exact: same AUC)")
    ap.add_argument("--sizes", default="10000")
    ap.add_argument("--step-json", type=Path, default=None)
    args = ap.parse_args()
    chosen = [o.strip() for o in args.options.split(",") if o.strip()]
    specs = {o: OPTIONS[o][0].format(crop=args.crop) for o in chosen}
    seeds = [int(s) for s in args.seeds.split(",")]
    models = ",".join([DEFAULT, *specs.values()])
    tables = {s: pd.read_csv(run_seed(args.out, "spatial", s, models, args.epochs, 5)
                             ).set_index("model") for s in seeds}
    step_json = args.step_json or args.out / "step.json"
    step = (json.loads(step_json.read_text()) if step_json.exists()
            else step_figures(args.sizes, step_json))
    rows = {(r["label"], r["n"]): r for r in step["rows"] if "step_s" in r}
    sizes = sorted({n for _, n in rows})
    auc = {m: [float(t.loc[m, "auc_mean"]) for t in tables.values()] for m in [DEFAULT,
                                                                            *specs.values()]}
    head = ["option"] + [f"step ×, peak MB @ {n:,}" for n in sizes] + [
        f"test AUC (seeds {args.seeds})", "ΔAUC vs default"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    base = np.asarray(auc[DEFAULT])
    print("| default | " + " | ".join(
        f"1.00×, {rows[('srmil (grid)', n)]['step_peak_mb']:,.0f}" for n in sizes)
          + f" | {base.mean():.3f} ± {base.std():.3f} | – |")
    for o in OPTIONS:
        spec, label = OPTIONS[o]
        cells = []
        for n in sizes:
            r, d = rows.get((label, n)), rows[("srmil (grid)", n)]
            cells.append("–" if r is None else
                         f"{r['step_s'] / d['step_s']:.2f}×, {r['step_peak_mb']:,.0f}")
        if o in specs:
            v = np.asarray(auc[specs[o]])
            auc_cells = [f"{v.mean():.3f} ± {v.std():.3f}", f"{(v - base).mean():+.3f}"]
        else:
            auc_cells = ["= default (exact)", "0"]
        print(f"| {o} | " + " | ".join(cells + auc_cells) + " |")


if __name__ == "__main__":
    main()
