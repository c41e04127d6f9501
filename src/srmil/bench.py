"""Benchmarks behind ``srmil bench``: they print figures, tests never time anything."""

from __future__ import annotations

import math
import time

import numpy as np

from srmil.graphs.grid import _edges_by_kdtree, build_edge_index


def tissue_like_coords(n: int, step: int = 448, seed: int = 0) -> np.ndarray:
    """(n, 2) level-0 coordinates of a ragged tissue region on a grid (60 % of a square)."""
    rng = np.random.default_rng(seed)
    side = int(math.ceil(math.sqrt(n / 0.6)))
    yy, xx = np.mgrid[0:side, 0:side]
    r = np.hypot(xx - side / 2, yy - side / 2) + rng.uniform(0, side / 4, (side, side))
    order = np.argsort(r.ravel(), kind="stable")[:n]
    cells = np.stack([order % side, order // side], axis=1)
    return cells[rng.permutation(n)] * step


def dense_radius_edges(coords: np.ndarray, step: float, window: int = 2,
                       chunk: int = 2048) -> int:
    """The reference's O(N²) radius graph (all pairwise distances, in row chunks); returns the
    edge count. For timing comparison only."""
    import torch

    u = torch.from_numpy(np.asarray(coords, dtype=np.float32) / step)
    r = window * math.sqrt(2) + 1e-4
    edges = 0
    for i in range(0, len(u), chunk):
        edges += int((torch.cdist(u[i:i + chunk], u) <= r).sum())
    return edges


def bench_graph(sizes: tuple[int, ...] = (10_000, 100_000), repeats: int = 5,
                dense_up_to: int = 20_000) -> list[dict]:
    """Median wall time of the graph build (table builder, and the KD-tree builder used for
    off-grid coordinates) on tissue-like grids of the given sizes, and once the O(N²) dense
    radius graph for sizes up to ``dense_up_to``."""
    out = []
    build_edge_index(tissue_like_coords(1000), 448.0)  # warm caches and imports
    for n in sizes:
        coords = tissue_like_coords(n)
        times, ktimes = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ei, facts = build_edge_index(coords, 448.0, window=2)
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _edges_by_kdtree(coords / 448.0, 2)
            ktimes.append(time.perf_counter() - t0)
        dense_s = None
        if n <= dense_up_to:
            t0 = time.perf_counter()
            dense_edges = dense_radius_edges(coords, 448.0)
            dense_s = time.perf_counter() - t0
            if dense_edges != ei.shape[1]:
                raise RuntimeError(f"dense ({dense_edges}) and table builders disagree")
        out.append({
            "patches": n, "edges": int(ei.shape[1]), "builder": facts["builder"],
            "median_s": float(np.median(times)), "min_s": float(np.min(times)),
            "kdtree_median_s": float(np.median(ktimes)), "dense_s": dense_s,
        })
    return out
