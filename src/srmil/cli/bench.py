"""``srmil bench graph``: print graph build times (benchmarks print; tests never time)."""

from __future__ import annotations

import argparse
import platform

import torch

from srmil.bench import bench_graph


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its figures")
    p.add_argument("what", choices=["graph"], help="graph: spatial graph build time")
    p.add_argument("--sizes", default="10000,100000", help="comma-separated patch counts")
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    sizes = tuple(int(s) for s in args.sizes.split(","))
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
