"""When does SRMIL win? The known-truth study (a benchmark: CPU-hours, never a test).

SRMIL, SRMIL without reconstruction (``srmil:w_gen=0``), Patch-GCN, ABMIL, TransMIL and mean
pooling on identical patient-level folds (``srmil.api.compare``) over ``srmil synth`` cohorts:
each variant's base cohort (``spatial``: arrangement only; ``mixed``: contiguous lesions plus
isolated look-alikes; ``sparse``: isolated instances), then one knob varied at a time (lesion
fraction, shift strength, bag size, feature dimension, tissue-type nuisance), at several seeds.

Resumable: each (cohort, seed, model) cell is written atomically to
``OUT/cells/<cohort>/<spec>.json`` as it finishes and a rerun skips it; an interrupted cell
resumes inside its comparison directory (finished folds kept, a fold from its ``last.pt``).
Prints the table (test AUC mean ± std over seeds, each seed's value the mean over its folds)
and writes ``OUT/study.csv`` (cells), ``study_summary.csv``, ``study.md`` and ``study.png``.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/study.py --quick --out bench_out/study_quick
    python benchmarks/study.py --out bench_out/study          # the full grid (the real study)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from srmil.config import QUICK_STUDY, StudyConfig


def _tuple(text: str | None, conv=str) -> tuple | None:
    return None if text is None else tuple(conv(x) for x in text.split(",") if x.strip())


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import torch

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_out/study"))
    ap.add_argument("--quick", action="store_true", help="the quick grid (srmil.config."
                    "QUICK_STUDY: base cohorts only, 3 seeds, 40 slides, 3 folds, 20 epochs, "
                    "no TransMIL)")
    ap.add_argument("--variants", help="comma-separated synth variants")
    ap.add_argument("--models", help="comma-separated model specs (as srmil compare --models)")
    ap.add_argument("--knobs", nargs="*", help="KNOB=v1,v2 … (lesion_fraction, shift, "
                    "bag_size, dim, tissue_spread); none: base cohorts only")
    ap.add_argument("--seeds", help="comma-separated seeds")
    ap.add_argument("--slides", type=int)
    ap.add_argument("--dim", type=int)
    ap.add_argument("--bag-size", type=int, help="most patches per slide (fewest: a third)")
    ap.add_argument("--folds", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--accelerator", help="cpu | gpu | auto")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("srmil.study").setLevel(logging.INFO)

    from srmil.errors import SrmilError
    from srmil.study import format_table, run_study, study_config

    base = QUICK_STUDY if args.quick else StudyConfig()
    cfg = study_config(base, variants=_tuple(args.variants), models=_tuple(args.models),
                       knobs=None if args.knobs is None else tuple(args.knobs),
                       seeds=_tuple(args.seeds, int), slides=args.slides, dim=args.dim,
                       bag_size=args.bag_size, folds=args.folds, epochs=args.epochs,
                       accelerator=args.accelerator)
    t0 = time.time()
    try:
        res = run_study(args.out, cfg)
    except SrmilError as e:
        sys.exit(f"study: {e}")
    print(f"known-truth study ({'quick grid' if args.quick else 'grid'}): variants "
          f"{','.join(cfg.variants)}; knobs {' '.join(cfg.knobs) or 'none'}; seeds "
          f"{','.join(map(str, cfg.seeds))}; {cfg.slides} slides of {max(1, cfg.bag_size // 3)}"
          f"-{cfg.bag_size} patches, dim {cfg.dim}; {cfg.folds}-fold patient-level CV, "
          f"{cfg.epochs} epochs, torch threads {args.threads}\n")
    print(format_table(res.summary, cfg))
    print(f"cells {len(res.cells)} ({len(res.ran)} trained now), {time.time() - t0:.0f} s; "
          f"training time per model (s, summed over cells): "
          + ", ".join(f"{m} {t:.0f}" for m, t in
                      res.cells.groupby("model", sort=False)["seconds"].sum().items()))
    print(f"written: {args.out / 'study.csv'}, {args.out / 'study.md'}, {res.figure}")


if __name__ == "__main__":
    main()
