"""``srmil bench heatmap``: time and memory of each heatmap stage on large synthetic bags.

Benchmarks print figures; tests never time anything.
"""

from __future__ import annotations

import resource
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _measure(fn: Callable[[], Any], trace: bool) -> tuple[Any, float, float]:
    """(result, seconds, peak MiB of numpy/Python allocations during ``fn``).

    Timed without tracemalloc (it slows Python-heavy code several-fold); with ``trace`` the
    stage runs a second time under tracemalloc for its peak.
    """
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    peak = float("nan")
    if trace:
        tracemalloc.start()
        try:
            fn()
            peak = tracemalloc.get_traced_memory()[1] / 2**20
        finally:
            tracemalloc.stop()
    return out, seconds, peak


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _bench_size(n: int, d: Path, dim: int, thumb_side: int) -> list[dict[str, Any]]:
    """Every stage on one synthetic bag of ``n`` patches written under ``d``."""
    from srmil.bags.readers import read_bag
    from srmil.bags.writer import write_trident_bag
    from srmil.bench import tissue_like_coords
    from srmil.graphs.graph_bag import to_graph_bag
    from srmil.models.base import create_model
    from srmil.reports.heatmaps import render_heatmap, render_overlay
    from srmil.reports.patch_outputs import scores_table, write_geojson
    from srmil.reports.scores import patch_scores, rank_percentile
    from srmil.storage import write_csv

    rows: list[dict[str, Any]] = []

    def add(stage: str, fn: Callable[[], Any], trace: bool = True) -> Any:
        out, s, peak = _measure(fn, trace)
        rows.append({"patches": n, "stage": stage, "seconds": s, "peak_mib": peak,
                     "maxrss_mib": _maxrss_mib()})
        return out

    coords = tissue_like_coords(n)  # (n, 2) level-0, step 448 (20× on a 40× scan)
    feats = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    path = write_trident_bag(d / f"bag_{n}.h5", feats, coords, patch_size=224,
                             level0_magnification=40, target_magnification=20)
    del feats
    bag = add("read bag", lambda: read_bag(path))
    gb = to_graph_bag(bag, with_graph=False)
    abmil, mean = create_model("abmil", dim, 2), create_model("mean", dim, 2)
    # torch's buffers are not traced: no memory pass for the scores
    s = add("score: abmil attention", lambda: patch_scores(abmil, gb), trace=False).scores
    add("score: mean grad x input", lambda: patch_scores(mean, gb), trace=False)
    add("heatmap png (bags alone)", lambda: render_heatmap(
        d / f"h_{n}.png", bag.coords, s, 448.0, kind="attention", title=f"{n} patches",
        overwrite=True))
    pct = rank_percentile(s)
    add("scores.csv", lambda: write_csv(d / f"s_{n}.csv", scores_table(bag.coords, s, pct),
                                        overwrite=True))
    add("patches.geojson", lambda: write_geojson(
        d / f"g_{n}.geojson", bag.coords, 448, {"score": s, "score_percentile": pct},
        overwrite=True))
    side = float(coords.max() + 448)
    thumb = np.full((thumb_side, thumb_side, 3), 235, np.uint8)  # the whole slide's thumbnail
    add("overlay png (thumbnail)", lambda: render_overlay(
        d / f"o_{n}.png", thumb, side / thumb_side, bag.coords, s, 448.0, kind="attention",
        overwrite=True))
    return rows


def bench_heatmap(sizes: tuple[int, ...] = (10_000, 100_000), dim: int = 256,
                  thumb_side: int | None = None) -> list[dict[str, Any]]:
    """Each stage of ``srmil heatmap`` on a synthetic tissue-like bag of each size (step 448).

    Stages: read the bag; score it (untrained ABMIL attention, and gradient × input of the mean
    model); draw the bag-only heatmap PNG; write ``scores.csv``; write the GeoJSON; draw the
    overlay on a ``thumb_side`` px synthetic thumbnail (default: ``HeatmapConfig``'s).
    Memory: the peak of numpy/Python allocations in the stage (tracemalloc, a second run of
    the stage; matplotlib's C buffers and torch are not traced) and the process's peak RSS
    after it.

    Returns:
        Rows of {patches, stage, seconds, peak_mib, maxrss_mib}.
    """
    import torch

    from srmil.bench import tissue_like_coords
    from srmil.config import HeatmapConfig
    from srmil.reports.heatmaps import render_heatmap

    thumb_side = thumb_side or HeatmapConfig().thumb_side
    torch.manual_seed(0)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        # warm the imports and matplotlib's caches so the first size is not charged for them
        render_heatmap(d / "warm.png", tissue_like_coords(100), np.arange(100.0), 448.0)
        for n in sizes:
            rows += _bench_size(n, d, dim, thumb_side)
    return rows
