"""``srmil bench graph``: print graph build times (benchmarks print; tests never time)."""

from __future__ import annotations

import argparse
import platform


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its figures")
    p.add_argument("what", choices=["graph", "extract", "heatmap", "step", "scale"],
                   help="graph: spatial graph build time; extract: patch reading and encoding "
                        "throughput on the CPU; heatmap: time and memory of each heatmap stage; "
                        "step: time and peak memory of a training step and of inference, "
                        "SRMIL's paths and every model; scale: folds/hour of cv --executor "
                        "local at 1 and 2 jobs at a time")
    p.add_argument("--sizes", default=None, help="comma-separated patch counts (graph: "
                   "10000,100000; step: 200,2000,10000,50000, the first at --small-dim)")
    p.add_argument("--repeats", type=int, default=None,
                   help="graph: repeats per size (5); step: timed steps per config (3)")
    p.add_argument("--large", action="store_true", help="step: add 100,000 patches")
    p.add_argument("--dim", type=int, default=1024, help="step: feature dimension D")
    p.add_argument("--small-dim", type=int, default=32, help="step: D of the first size")
    p.add_argument("--models", default="", help="step: comma-separated model names or labels "
                   "(default: SRMIL's paths and every registered model; SRMIL's memory options "
                   "only when named: 'srmil (grid) +checkpoint', 'srmil (grid) +shared proj', "
                   "'srmil (grid) +crop 8192', 'srmil (grid) +crop 2048')")
    p.add_argument("--faithful-up-to", type=int, default=20_000,
                   help="step: largest N for SRMIL's faithful PyG path")
    p.add_argument("--device", default="cpu", help="step: cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="step: torch threads per worker; "
                   "scale: per job (default cpu_count / jobs)")
    p.add_argument("--out", default=None, help="step: also write the figures as JSON here")
    p.add_argument("--slide", default=None, help="extract: slide file (default: the CMU-1 "
                   "fixture of `make fixtures`, else a synthetic in-memory slide)")
    p.add_argument("--patches", type=int, default=128, help="extract: patches per measurement")
    p.add_argument("--workers", default="0,2", help="extract: DataLoader worker counts")
    p.add_argument("--batch-size", type=int, default=32, help="extract: patches per batch")
    p.add_argument("--encoders", default="stain_stats,resnet50_trunc",
                   help="extract: encoders to time (presets run with random weights)")
    p.add_argument("--jobs", default="1,2", help="scale: jobs at a time to compare")
    p.add_argument("--ddp-devices", default="1,2",
                   help="scale: DDP processes training one fold, to compare ('' skips)")
    p.add_argument("--folds", type=int, default=4, help="scale: folds of the cohort")
    p.add_argument("--epochs", type=int, default=3, help="scale: epochs per fold")
    p.add_argument("--model", default="abmil", help="scale: the model cross-validated")
    p.add_argument("--n-slides", type=int, default=40, help="scale: slides of the cohort")
    p.set_defaults(func=run)


def run_scale(args: argparse.Namespace) -> int:
    from srmil.bench_scale import bench_scale, format_scale_table
    from srmil.config import ScaleBenchConfig
    from srmil.storage import write_json

    cfg = ScaleBenchConfig(slides=args.n_slides, folds=args.folds, epochs=args.epochs,
                           model=args.model, threads=args.threads,
                           jobs=tuple(int(j) for j in args.jobs.split(",") if j),
                           devices=tuple(int(d) for d in args.ddp_devices.split(",") if d))
    result = bench_scale(cfg)
    print(format_scale_table(result))
    if args.out:
        print(f"figures: {write_json(args.out, result, overwrite=True)}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.what == "scale":
        return run_scale(args)
    if args.what == "extract":
        return run_extract(args)
    if args.what == "heatmap":
        return run_heatmap(args)
    if args.what == "step":
        return run_step(args)
    import torch

    from srmil.bench import bench_graph

    sizes = _sizes(args.sizes, "10000,100000")
    args.repeats = args.repeats or 5
    print(f"graph build, window 2, tissue-like grid at step 448; median of {args.repeats} "
          f"({platform.processor() or platform.machine()}, torch threads "
          f"{torch.get_num_threads()})")
    print(f"{'patches':>9} {'edges':>10} {'builder':>8} {'median s':>9} {'min s':>7} "
          f"{'kd-tree s':>9} {'O(N²) s':>8}")
    for r in bench_graph(sizes, args.repeats):
        print(f"{r['patches']:>9,} {r['edges']:>10,} {r['builder']:>8} {r['median_s']:>9.3f} "
              f"{r['min_s']:>7.3f} {r['kdtree_median_s']:>9.3f} "
              + (f"{r['dense_s']:>8.2f}" if r["dense_s"] is not None else f"{'-':>8}"))
    return 0


def run_extract(args: argparse.Namespace) -> int:
    import torch

    from srmil.bench import bench_extract

    workers = tuple(int(w) for w in args.workers.split(","))
    source, rows = bench_extract(args.slide, args.patches, workers, args.batch_size,
                                 tuple(args.encoders.split(",")))
    print(f"feature extraction on the CPU ({platform.processor() or platform.machine()}, "
          f"torch threads {torch.get_num_threads()}, batch {args.batch_size}); {source}; "
          "encoders with random weights (same cost as trained ones)")
    print(f"{'stage':<12} {'encoder':<16} {'workers':>7} {'patches/s':>10} {'seconds':>8}")
    for r in rows:
        w = "-" if r["workers"] is None else str(r["workers"])
        print(f"{r['stage']:<12} {r['encoder'] or '-':<16} {w:>7} {r['patches_per_s']:>10.1f} "
              f"{r['seconds']:>8.2f}")
    read = max(r["patches_per_s"] for r in rows if r["stage"] == "read")
    for r in rows:
        if r["stage"] == "encode":
            slow = "encoding" if r["patches_per_s"] < read else "reading"
            print(f"{r['encoder']}: reading up to {read:.1f} patches/s, encoding "
                  f"{r['patches_per_s']:.1f} patches/s: {slow} is the bottleneck")
    return 0


def run_heatmap(args: argparse.Namespace) -> int:
    import torch

    from srmil.reports.bench import bench_heatmap

    sizes = _sizes(args.sizes, "10000,100000")
    print(f"heatmap stages on synthetic tissue-like bags (D=256, step 448), one run each "
          f"({platform.processor() or platform.machine()}, torch threads "
          f"{torch.get_num_threads()}); peak = numpy/Python allocations in the stage "
          "(tracemalloc), maxrss = process peak RSS so far")
    print(f"{'patches':>9} {'stage':<26} {'seconds':>8} {'peak MiB':>9} {'maxrss MiB':>10}")
    for r in bench_heatmap(sizes):
        print(f"{r['patches']:>9,} {r['stage']:<26} {r['seconds']:>8.2f} {r['peak_mib']:>9.1f} "
              f"{r['maxrss_mib']:>10.0f}")
    return 0


def _sizes(text: str | None, default: str) -> tuple[int, ...]:
    from srmil.errors import ConfigError

    try:
        sizes = tuple(int(s) for s in (text or default).split(","))
    except ValueError:
        raise ConfigError(f"--sizes: expected comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"--sizes: patch counts must be >= 1, got {text!r}")
    return sizes


def run_step(args: argparse.Namespace) -> int:
    from srmil.bench_step import bench_step, format_step_table
    from srmil.config import StepBenchConfig
    from srmil.storage import write_json

    sizes = _sizes(args.sizes, "200,2000,10000,50000") + ((100_000,) if args.large else ())
    cfg = StepBenchConfig(
        sizes=sizes, dim=args.dim, small_dim=args.small_dim,
        models=tuple(m for m in args.models.split(",") if m), repeats=args.repeats or 3,
        faithful_up_to=args.faithful_up_to, device=args.device, threads=args.threads)
    result = bench_step(cfg)
    print(format_step_table(result))
    if args.out:
        print(f"figures: {write_json(args.out, result, overwrite=True)}")
    return 0
