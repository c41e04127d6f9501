import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from helpers import grid_coords, raw_h5, trident_bag
from srmil.bags.readers import read_bag
from srmil.config import GraphConfig
from srmil.errors import BagError
from srmil.graphs.grid import (
    build_edge_index,
    build_graph,
    infer_step,
    neighbour_offsets,
    resolve_step,
)


def brute_force_edges(coords: np.ndarray, step: float, window: int) -> set[tuple[int, int]]:
    """Reference: every ordered pair within window·√2 steps, by the full distance matrix."""
    u = np.asarray(coords, dtype=np.float64) / step
    d = np.sqrt(((u[:, None, :] - u[None, :, :]) ** 2).sum(-1))
    src, dst = np.nonzero(d <= window * math.sqrt(2) + 1e-9)
    return set(zip(src.tolist(), dst.tolist(), strict=True))  # includes (i, i)


def tissue_with_holes(rng, side: int) -> np.ndarray:
    """Cells of a random smooth blob with holes and islands, shape (N, 2)."""
    f = ndimage.gaussian_filter(rng.standard_normal((side, side)), sigma=side / 10)
    mask = f > np.quantile(f, rng.uniform(0.3, 0.7))
    return np.argwhere(mask)


def as_set(ei: np.ndarray) -> set[tuple[int, int]]:
    pairs = list(zip(ei[0].tolist(), ei[1].tolist(), strict=True))
    assert len(pairs) == len(set(pairs)), "duplicate edges"
    return set(pairs)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("window", [1, 2, 3])
def test_table_builder_matches_brute_force_on_random_tissue(seed, window):
    rng = np.random.default_rng(seed)
    step = int(rng.choice([224, 256, 448, 512]))
    cells = tissue_with_holes(rng, int(rng.integers(12, 40)))
    offset = rng.integers(-5000, 5000, size=2)  # a global grid offset, negative coords too
    coords = cells[rng.permutation(len(cells))] * step + offset
    ei, facts = build_edge_index(coords, step, window=window)
    assert facts["builder"] == "table" and facts["off_grid"] == 0
    assert as_set(ei) == brute_force_edges(coords, step, window)


@pytest.mark.parametrize("seed", range(6))
def test_kdtree_builder_matches_brute_force_on_per_contour_grids(seed):
    """Two tissue pieces patched on grids with different offsets (CLAM's per-contour grids)."""
    rng = np.random.default_rng(100 + seed)
    step = 512
    a = tissue_with_holes(rng, 15) * step
    b = tissue_with_holes(rng, 15) * step + np.array([14 * step + 137, 3 * step + 301])
    coords = np.concatenate([a, b])[rng.permutation(len(a) + len(b))]
    ei, facts = build_edge_index(coords, step, window=2)
    assert facts["builder"] == "kdtree" and facts["off_grid"] > 0
    assert as_set(ei) == brute_force_edges(coords, step, 2)


def test_window_two_is_the_full_five_by_five_block():
    offs = {tuple(o) for o in neighbour_offsets(2).tolist()}
    assert len(offs) == 24 and (2, 2) in offs and (-2, 2) in offs
    offs3 = {tuple(o) for o in neighbour_offsets(3).tolist()}
    assert (4, 1) in offs3 and (4, 2) not in offs3  # 17 <= 18 < 20: a disc, not a square


def test_edges_are_symmetric_with_self_loops_and_interior_degree_24():
    coords = np.stack(np.meshgrid(np.arange(9), np.arange(9)), -1).reshape(-1, 2) * 448
    ei, _ = build_edge_index(coords, 448.0)
    s = as_set(ei)
    assert all((j, i) in s for i, j in s)
    assert all((i, i) in s for i in range(len(coords)))
    centre = int(np.flatnonzero((coords == [4 * 448, 4 * 448]).all(1))[0])
    assert sum(1 for i, j in s if j == centre and i != centre) == 24
    no_loops, _ = build_edge_index(coords, 448.0, self_loops=False)
    assert not (no_loops[0] == no_loops[1]).any()


def test_step_224_on_a_40x_scan_would_break_the_graph():
    """The trap: dividing level-0 coords of a 40× scan by 224 shrinks the 5×5 window to 3×3."""
    coords = grid_coords(200, 448)
    right, _ = build_edge_index(coords, 448.0, self_loops=False)
    wrong, _ = build_edge_index(coords, 224.0, self_loops=False)
    assert as_set(wrong) < as_set(right)
    assert right.shape[1] > 2.5 * wrong.shape[1]


def test_infer_step_is_modal_nearest_neighbour_spacing():
    assert infer_step(grid_coords(300, 448, offset=(17, 93))) == 448
    assert infer_step(grid_coords(300, 192)) == 192  # overlap: step < patch size
    um = grid_coords(300, 1) * 112.0 + 1e-6 * np.random.default_rng(0).standard_normal((300, 2))
    assert infer_step(um) == pytest.approx(112.0, rel=1e-4)
    assert infer_step(np.array([[0, 0]])) is None


def test_step_sources_mixed_magnification_cohort(tmp_path):
    b20 = read_bag(trident_bag(tmp_path / "a.h5", mag0=20))
    b40 = read_bag(trident_bag(tmp_path / "b.h5", mag0=40))
    assert (resolve_step(b20).step, resolve_step(b20).source) == (224, "attrs+coords")
    assert (resolve_step(b40).step, resolve_step(b40).source) == (448, "attrs+coords")
    plain = read_bag(raw_h5(tmp_path / "c.h5", features=np.ones((50, 2), np.float32),
                            coords=grid_coords(50, 512)))
    assert (resolve_step(plain).step, resolve_step(plain).source) == (512, "coords")
    assert resolve_step(plain, GraphConfig(step=500)).source == "config"


def test_attrs_that_disagree_with_coords_warn_and_coords_win(tmp_path):
    p = trident_bag(tmp_path / "x.h5", mag0=40, coords=grid_coords(60, 224))  # attrs say 448
    est = resolve_step(read_bag(p))
    assert est.step == 224 and est.source == "coords" and est.attrs_step == 448
    (warn,) = est.problems
    assert not warn.is_error and "attrs give a step of 448" in warn.message


def test_off_grid_points_and_shared_cells_are_reported_not_merged(tmp_path):
    coords = grid_coords(80, 224)
    coords = np.concatenate([coords, coords[:2] + np.array([[100, 0], [3, 4]])])
    p = raw_h5(tmp_path / "o.h5", features=np.ones((82, 2), np.float32), coords=coords)
    g = build_graph(read_bag(p))
    assert g.n_nodes == 82 and g.builder == "kdtree"
    assert g.off_grid == 1  # (+100, 0) is off the grid; (+3, +4) is within tolerance
    assert g.close_pairs == 2  # both extra points share a cell with an existing patch
    msgs = " | ".join(p.message for p in g.problems)
    assert "off the main grid" in msgs and "share a grid cell" in msgs
    assert as_set(g.edge_index) == brute_force_edges(coords, 224, 2)


def test_single_patch_and_missing_coords(tmp_path):
    one = read_bag(raw_h5(tmp_path / "1.h5", features=np.ones((1, 3), np.float32),
                          coords=np.array([[448, 896]])))
    g = build_graph(one)
    assert g.step_source == "none" and g.edge_index.tolist() == [[0], [0]]
    from srmil.bags.bag import FeatureBag
    nocoords = FeatureBag(np.ones((3, 2), np.float32), None, "x", tmp_path / "x.pt", "clam_pt")
    with pytest.raises(BagError, match="no coordinates"):
        build_graph(nocoords)


def test_edge_index_feeds_pyg_message_passing(tmp_path):
    from torch_geometric.nn import GATConv
    from torch_geometric.utils import is_undirected

    bag = read_bag(trident_bag(tmp_path / "g.h5", n=60, d=8))
    ei = torch.from_numpy(build_graph(bag).edge_index)
    assert ei.dtype == torch.long and is_undirected(ei, num_nodes=60)
    out = GATConv(8, 4, heads=2, add_self_loops=False)(torch.from_numpy(bag.features), ei)
    assert out.shape == (60, 8) and torch.isfinite(out).all()


def test_jitter_within_tolerance_snaps_to_cells_on_both_builders():
    """Coordinates a few pixels off their cell (within tolerance) give the clean grid's edges,
    also when the KD-tree builds them (two far-apart tissue pieces refuse the cell table)."""
    rng = np.random.default_rng(7)
    cells = np.concatenate([tissue_with_holes(rng, 12), tissue_with_holes(rng, 12) + 40_000])
    clean = cells * 224
    jitter = clean + rng.integers(-3, 4, clean.shape)  # ≤ 3 px of 224: on the grid
    ei_clean, f_clean = build_edge_index(clean, 224.0)
    ei_jit, f_jit = build_edge_index(jitter, 224.0)
    assert f_clean["builder"] == f_jit["builder"] == "kdtree" and f_jit["off_grid"] == 0
    assert as_set(ei_jit) == as_set(ei_clean) == brute_force_edges(clean, 224, 2)
