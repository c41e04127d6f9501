"""The spatial grid graph of one slide (METHOD.md, Graph).

Patches i and j are joined when their distance, measured in grid steps, is at most
``window·√2`` (window 2: the 5×5 neighbourhood, corners included), in both directions, plus a
self loop on every patch. The step is taken from the h5 attrs and cross-checked against the
coordinates (modal nearest-neighbour spacing); 224 is never assumed, because TRIDENT and CLAM
store level-0 pixels (step 448 for 20×/224 px on a 40× scan).

Two exact builders, both O(N) expected time, neither forms an N×N distance matrix:

- all patches on one grid (the usual TRIDENT case): integer cells and a dense lookup table,
  one gather per neighbour offset;
- otherwise (per-contour grids, off-grid points, two patches in one cell): a KD-tree radius
  query on ``coords / step``, which gives the same edges wherever the points are on a grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from srmil.bags.bag import FeatureBag
from srmil.config import GraphConfig
from srmil.errors import BagError, Problem

_RADIUS_EPS = 1e-6  # radius slack in step units: grid distances are exact, floats are not


def infer_step(coords: np.ndarray) -> float | None:
    """Modal nearest-neighbour spacing of the coordinates.

    Args:
        coords: (N, 2) positions in any frame (pixels or micrometres).

    Returns:
        The step in the same frame, or ``None`` when fewer than two distinct points exist.
    """
    if coords is None or len(coords) < 2:
        return None
    xy = np.asarray(coords, dtype=np.float64)
    d, _ = cKDTree(xy).query(xy, k=2)
    d = d[:, 1]
    d = d[d > 0]
    if d.size == 0:
        return None
    # log-spaced bins 0.2 % wide so float (µm) coordinates that differ in the last digits agree
    bins = np.round(np.log(d) / math.log1p(0.002)).astype(np.int64)
    values, counts = np.unique(bins, return_counts=True)
    mode = values[np.argmax(counts)]
    return float(np.median(d[np.abs(bins - mode) <= 1]))


@dataclass(frozen=True)
class StepEstimate:
    """The grid step of one slide and where it came from.

    ``source`` is one of ``attrs+coords`` (both agree), ``coords`` (no attrs, or attrs that
    disagree with the coordinates: a warning says so), ``attrs`` (one patch only), ``config``
    (set by the user) or ``none`` (a single patch without attrs; the graph is its self loop).
    """

    step: float | None
    source: str
    attrs_step: float | None = None
    coords_step: float | None = None
    problems: tuple[Problem, ...] = ()


def resolve_step(bag: FeatureBag, cfg: GraphConfig = GraphConfig()) -> StepEstimate:
    """Pick the grid step of ``bag``: config, else attrs cross-checked with the coordinates."""
    if cfg.step is not None:
        return StepEstimate(float(cfg.step), "config", bag.step, None)
    if bag.coords is None:
        return StepEstimate(None, "none", bag.step, None)
    coords_step = infer_step(bag.coords)
    attrs_step = bag.step
    if coords_step is None:
        if attrs_step is not None:
            return StepEstimate(attrs_step, "attrs", attrs_step, None)
        return StepEstimate(None, "none", None, None)
    if attrs_step is None:
        return StepEstimate(coords_step, "coords", None, coords_step)
    if abs(coords_step - attrs_step) <= cfg.step_tolerance * attrs_step:
        return StepEstimate(attrs_step, "attrs+coords", attrs_step, coords_step)
    warn = Problem(
        "warning",
        f"attrs give a step of {attrs_step:g} but the coordinates are spaced {coords_step:g}; "
        "using the coordinates",
        bag.source,
    )
    return StepEstimate(coords_step, "coords", attrs_step, coords_step, (warn,))


def neighbour_offsets(window: int) -> np.ndarray:
    """Integer offsets (dx, dy) ≠ (0, 0) with dx² + dy² ≤ 2·window², shape (K, 2).

    window 2 gives the 24 offsets of the 5×5 block; from window 3 on the set is a disc, not a
    square (e.g. (4, 1) is within 3·√2).
    """
    r2 = 2 * window * window
    reach = int(math.isqrt(r2))
    offs = [
        (dx, dy)
        for dx in range(-reach, reach + 1)
        for dy in range(-reach, reach + 1)
        if (dx, dy) != (0, 0) and dx * dx + dy * dy <= r2
    ]
    return np.asarray(offs, dtype=np.int64).reshape(-1, 2)


def grid_cells(coords: np.ndarray, step: float, tolerance: float = 0.05) -> tuple[
    np.ndarray, np.ndarray
]:
    """Integer grid cells of the coordinates and which points sit on the main grid.

    The main grid is the phase (offset modulo the step) shared by most points; a global grid
    offset is fine, as is a grid whose origin is not (0, 0).

    Args:
        coords: (N, 2) positions.
        step: grid step in the coordinates' frame.
        tolerance: how far off its cell centre, in steps, a point may sit.

    Returns:
        cells (N, 2) int64 relative to the main grid, on_grid (N,) bool.
    """
    u = np.asarray(coords, dtype=np.float64) / step  # (N, 2)
    frac = u - np.floor(u)
    nbins = max(int(round(1.0 / tolerance)), 1)
    key = (np.round(frac * nbins).astype(np.int64) % nbins) @ np.array([nbins, 1])
    values, counts = np.unique(key, return_counts=True)
    ref = u[np.flatnonzero(key == values[np.argmax(counts)])[0]]  # a point of the main phase
    rel = u - ref
    cells = np.round(rel).astype(np.int64)
    on_grid = (np.abs(rel - cells) <= tolerance).all(axis=1)
    return cells, on_grid


def _edges_by_table(cells: np.ndarray, window: int) -> np.ndarray | None:
    """Directed edges (2, E) without self loops by a dense cell → node table; ``None`` when a
    cell holds two points or the table would be far larger than the bag."""
    n = len(cells)
    reach = int(math.isqrt(2 * window * window))
    lo = cells.min(axis=0) - reach
    c = cells - lo  # (N, 2) all ≥ reach
    w, h = (c.max(axis=0) + reach + 1).tolist()
    if w * h > 64 * n + 1_000_000:
        return None
    table = np.full(w * h, -1, dtype=np.int64)  # flat (w, h) table: one gather per offset
    flat = c[:, 0] * h + c[:, 1]  # (N,)
    table[flat] = np.arange(n)
    if (table >= 0).sum() != n:
        return None  # two patches in one cell: the KD-tree keeps both
    srcs, dsts = [], []
    idx = np.arange(n)
    for dx, dy in neighbour_offsets(window).tolist():
        nb = table[flat + (dx * h + dy)]  # (N,)
        hit = nb >= 0
        srcs.append(nb[hit])
        dsts.append(idx[hit])
    return np.stack([np.concatenate(srcs), np.concatenate(dsts)])


def _edges_by_kdtree(u: np.ndarray, window: int) -> np.ndarray:
    """Directed edges (2, E) without self loops: pairs within window·√2 of ``u`` (step units)."""
    pairs = cKDTree(u).query_pairs(window * math.sqrt(2) + _RADIUS_EPS, output_type="ndarray")
    return np.concatenate([pairs.T, pairs.T[::-1]], axis=1).astype(np.int64)


@dataclass
class SpatialGraph:
    """The spatial graph of one slide.

    Attributes:
        edge_index: (2, E) int64, PyG convention ``[source; target]``, both directions of every
            pair and a self loop per node when asked for.
        n_nodes: N.
        step: grid step used, in the coordinates' frame (``None`` for a lone patch).
        step_source: see :class:`StepEstimate`.
        builder: ``table``, ``kdtree`` or ``single`` (no neighbours possible).
        off_grid: number of points not on the main grid.
        close_pairs: pairs closer than half a step (two patches in one cell).
        problems: warnings found while building.
    """

    edge_index: np.ndarray
    n_nodes: int
    step: float | None
    step_source: str
    builder: str
    off_grid: int = 0
    close_pairs: int = 0
    problems: list[Problem] = field(default_factory=list)

    def degrees(self) -> np.ndarray:
        """(N,) neighbours per node, self loop not counted."""
        ei = self.edge_index
        not_loop = ei[0] != ei[1]
        return np.bincount(ei[1][not_loop], minlength=self.n_nodes)


def build_edge_index(
    coords: np.ndarray, step: float, window: int = 2, self_loops: bool = True,
    tolerance: float = 0.05,
) -> tuple[np.ndarray, dict[str, int | str]]:
    """Edges between patches within ``window·√2`` grid steps.

    Args:
        coords: (N, 2) top-left positions.
        step: grid step in the same frame.
        window: METHOD.md window (2).
        self_loops: add (i, i) for every node.
        tolerance: off-grid tolerance in steps.

    Returns:
        edge_index (2, E) int64 and facts about the build (builder, off_grid, close_pairs).
    """
    n = len(coords)
    if n == 0:
        return np.zeros((2, 0), dtype=np.int64), {"builder": "single", "off_grid": 0,
                                                   "close_pairs": 0}
    cells, on_grid = grid_cells(coords, step, tolerance)
    off_grid = int((~on_grid).sum())
    ei = _edges_by_table(cells, window) if off_grid == 0 else None
    builder = "table"
    # on one grid, distances are measured between cells (jitter within tolerance is snapped);
    # off the grid, between the true positions in step units
    u = cells.astype(np.float64) if off_grid == 0 else np.asarray(coords, np.float64) / step
    if ei is None:
        builder = "kdtree"
        ei = _edges_by_kdtree(u, window)
    close = 0
    if builder == "kdtree":
        close = len(cKDTree(u).query_pairs(0.5 - _RADIUS_EPS, output_type="ndarray"))
    if self_loops:
        loops = np.arange(n, dtype=np.int64)
        ei = np.concatenate([ei, np.stack([loops, loops])], axis=1)
    return ei, {"builder": builder, "off_grid": off_grid, "close_pairs": close}


def build_graph(bag: FeatureBag, cfg: GraphConfig = GraphConfig()) -> SpatialGraph:
    """Resolve the step of ``bag`` and build its spatial graph (METHOD.md, Graph).

    Raises:
        BagError: the bag has no coordinates (e.g. CLAM ``pt_files`` without ``h5_files``).
    """
    if bag.coords is None:
        raise BagError(
            "no coordinates (CLAM pt_files without a matching h5): graph models cannot use it",
            bag.source,
        )
    est = resolve_step(bag, cfg)
    problems = list(est.problems)
    n = bag.n_patches
    if est.step is None:
        loops = np.arange(n, dtype=np.int64)
        ei = np.stack([loops, loops]) if cfg.self_loops else np.zeros((2, 0), dtype=np.int64)
        return SpatialGraph(ei, n, None, est.source, "single", problems=problems)
    ei, facts = build_edge_index(
        bag.coords, est.step, cfg.window, cfg.self_loops, cfg.off_grid_tolerance
    )
    if facts["off_grid"]:
        problems.append(Problem(
            "warning",
            f"{facts['off_grid']} of {n} patches are off the main grid (step {est.step:g}; "
            "per-contour grids?); edges use exact distances",
            bag.source,
        ))
    if facts["close_pairs"]:
        problems.append(Problem(
            "warning",
            f"{facts['close_pairs']} pairs of patches share a grid cell (closer than half a "
            "step); both kept, not merged",
            bag.source,
        ))
    return SpatialGraph(
        ei, n, est.step, est.source, str(facts["builder"]), int(facts["off_grid"]),
        int(facts["close_pairs"]), problems,
    )
