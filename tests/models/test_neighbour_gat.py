"""The grid backend (neighbour tables, stacked passes) equals the faithful PyG path.

Checked in float64 so that any difference is a bug, not rounding: the loss and the gradient of
every parameter, with the same weights, inputs and mask, at zero dropout (no draws) and in eval
mode; holes in the tissue, off-grid patches, an isolated patch and the supernode included.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import grid_coords
from srmil.bags.bag import FeatureBag
from srmil.config import GraphConfig, SRMILConfig
from srmil.graphs.graph_bag import GraphBag, to_graph_bag
from srmil.graphs.grid import build_edge_index
from srmil.graphs.neighbours import build_neighbour_table
from srmil.models.layers import GATLayer
from srmil.models.neighbour_gat import StackedTable, Supernodes, gat_layer, gat_output_layer
from srmil.models.srmil import SRMIL, supernode_edge_index

STEP = 448
NO_DROPOUT = {"feat_drop": 0.0, "attn_drop": 0.0, "cls_dropout": 0.0}


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def holey_coords(n: int, seed: int = 0) -> np.ndarray:
    """A ragged grid region (half the cells empty) with a hole punched through the middle."""
    c = grid_coords(n + n // 4, STEP, seed) // STEP
    mid = np.median(c, axis=0)
    keep = np.abs(c - mid).max(axis=1) > 1  # a 3×3 hole
    return c[keep][:n] * STEP


def make_bag(n: int = 60, d: int = 12, seed: int = 0, coords: np.ndarray | None = None,
             graph: GraphConfig = GraphConfig()) -> GraphBag:
    rng = np.random.default_rng(seed)
    c = holey_coords(n, seed) if coords is None else coords
    fb = FeatureBag(features=rng.standard_normal((len(c), d)), coords=c, slide_id=f"s{seed}",
                    source=Path(f"s{seed}.h5"), reader="test", patch_size_level0=STEP, step=STEP)
    gb = to_graph_bag(fb, graph, y=1)
    gb.x = gb.x.double()
    return gb


def edge_pairs(ei) -> list[tuple[int, int]]:
    return sorted(zip(np.asarray(ei[0]).tolist(), np.asarray(ei[1]).tolist(), strict=True))


# ---- the table ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["grid", "offgrid", "duplicates"])
def test_table_holds_exactly_the_edges(kind):
    coords = holey_coords(80).astype(np.float64)
    if kind == "offgrid":
        coords[:7] += STEP * 0.37  # a second grid: the KD-tree builder
    if kind == "duplicates":
        coords[5] = coords[6]  # two patches in one cell
    ei, facts = build_edge_index(coords, STEP)
    assert facts["builder"] == ("table" if kind == "grid" else "kdtree")
    n = len(coords)
    t = build_neighbour_table(ei, n)
    rows, cols = torch.nonzero(t.valid, as_tuple=True)
    from_table = sorted(zip(t.index[rows, cols].tolist(), rows.tolist(), strict=True))
    assert from_table == edge_pairs(ei)
    assert t.width == int(np.bincount(ei[1], minlength=n).max())
    # the transposed table: every real out-slot points back at the in-slot of the same edge
    k = t.width
    real = t.out_slot < n * k
    src = torch.arange(n)[:, None].expand_as(t.out_slot)[real]
    dst, slot = t.out_index[real], t.out_slot[real]
    assert torch.equal(slot // k, dst)
    assert torch.equal(t.index.view(-1)[slot], src)
    assert t.valid.view(-1)[slot].all()
    assert int(real.sum()) == ei.shape[1]


# ---- one layer ---------------------------------------------------------------------------


def grads(out, inputs, weight):
    return torch.autograd.grad((out * weight).sum(), inputs, allow_unused=True)


def assert_close_all(a, b, tol=1e-10):
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            assert (x is None or not x.abs().max()) and (y is None or not y.abs().max())
            continue
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)


@pytest.mark.parametrize(("din", "residual"), [(12, "faithful"), (256, "faithful"),
                                               (256, "identity")])
def test_layer_with_supernodes_equals_pyg(din, residual):
    bag = make_bag()
    n, ei = bag.num_nodes, bag.edge_index
    torch.manual_seed(0)
    layer = GATLayer(din, 64, 4, residual=residual)
    h = torch.randn(3 * n, din, requires_grad=True)
    s = torch.randn(2, din, requires_grad=True)
    table = StackedTable.of(bag.neighbour_table(), 3)
    out, s_out, att = gat_layer(layer, h, table, Supernodes(s, (1, 2)),
                                return_supernode_attention=True)
    ei_sup = supernode_edge_index(ei, n)
    r0 = layer(h[:n], ei)
    r1, (e1, a1) = layer(torch.cat([h[n:2 * n], s[:1]]), ei_sup, return_attention_weights=True)
    r2 = layer(torch.cat([h[2 * n:], s[1:]]), ei_sup)
    ref = torch.cat([r0, r1[:n], r2[:n]])
    ref_s = torch.cat([r1[n:], r2[n:]])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s_out, ref_s, rtol=1e-12, atol=1e-12)
    to_sup = e1[1] == n
    want_att = torch.zeros(n, 4)
    want_att[e1[0, to_sup]] = a1[to_sup]
    torch.testing.assert_close(att[0], want_att, rtol=1e-12, atol=1e-12)
    g, gs = torch.randn_like(ref), torch.randn_like(ref_s)
    params = [h, s, *layer.parameters()]
    want = torch.autograd.grad((ref * g).sum() + (ref_s * gs).sum(), params, allow_unused=True)
    got = torch.autograd.grad((out * g).sum() + (s_out * gs).sum(), params, allow_unused=True)
    assert_close_all(got, want)


def test_isolated_patch_receives_nothing_as_in_pyg():
    coords = np.array([[0, 0], [1, 0], [0, 1], [9, 9]]) * STEP  # (9, 9) has no neighbour
    bag = make_bag(coords=coords, graph=GraphConfig(self_loops=False))
    table = bag.neighbour_table()
    assert table.isolated
    torch.manual_seed(1)
    layer = GATLayer(12, 8, 2, residual="faithful")
    h = torch.randn(bag.num_nodes, 12, requires_grad=True)
    out, _, _ = gat_layer(layer, h, StackedTable.of(table, 1))
    ref = layer(h, bag.edge_index)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    assert_close_all(grads(out, [h, *layer.parameters()], g),
                     grads(ref, [h, *layer.parameters()], g))


def test_output_layer_aggregates_then_projects():
    bag = make_bag()
    torch.manual_seed(2)
    layer = GATLayer(256, 40, 1, residual="none", norm=False, activation=False)
    h = torch.randn(bag.num_nodes, 256, requires_grad=True)
    rows = torch.tensor([0, 7, 3, 40])
    out = gat_output_layer(layer, h, StackedTable.of(bag.neighbour_table(), 1), rows)
    ref = layer(h, bag.edge_index)[rows]
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    assert_close_all(grads(out, [h, *layer.parameters()], g),
                     grads(ref, [h, *layer.parameters()], g))


# ---- the whole model ---------------------------------------------------------------------


def twin_models(d: int, c: int, **cfg) -> tuple[SRMIL, SRMIL]:
    torch.manual_seed(0)
    base = dataclasses.replace(SRMILConfig(), **cfg)
    pyg = SRMIL(d, c, dataclasses.replace(base, backend="pyg"))
    grid = SRMIL(d, c, dataclasses.replace(base, backend="grid"))
    grid.load_state_dict(pyg.state_dict())
    return pyg, grid


@pytest.mark.parametrize("cfg", [
    {},
    {"pooling": "gated"},
    {"residual": "identity", "reformer": "mlp"},
    {"mask_rate": 0.0},
    {"layers": 3, "decoder_layers": 1, "heads": 2, "hidden": 8},
], ids=["default", "gated", "identity-mlp", "no-mask", "3-layers"])
def test_loss_and_every_gradient_equal_pyg(cfg):
    bag = make_bag(70, 12, seed=3)
    pyg, grid = twin_models(12, 3, **NO_DROPOUT, **cfg)
    pyg.train()
    grid.train()
    mask = pyg.mask_nodes(bag.num_nodes) if pyg.cfg.mask_rate else torch.zeros(0, dtype=torch.long)
    want = pyg.loss(bag, 2, mask=mask)
    got = grid.loss(bag, 2, mask=mask)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-12)
    gw = torch.autograd.grad(want["total"], list(pyg.parameters()), allow_unused=True)
    gg = torch.autograd.grad(got["total"], list(grid.parameters()), allow_unused=True)
    names = [n for n, _ in pyg.named_parameters()]
    used = 0
    for name, a, b in zip(names, gw, gg, strict=True):
        if a is None:  # e.g. PyG's own bias (unused, bias=False) or the unused pool
            assert b is None or not b.abs().max(), name
            continue
        used += 1
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=name)
    assert used >= 10


@pytest.mark.parametrize("pooling", ["supernode", "gated"])
def test_eval_forward_and_attention_equal_pyg(pooling):
    bag = make_bag(90, 12, seed=4)
    pyg, grid = twin_models(12, 2, pooling=pooling)  # default dropouts: eval mode ignores them
    pyg.eval()
    grid.eval()
    torch.testing.assert_close(grid(bag), pyg(bag), rtol=1e-12, atol=1e-12)
    a_grid, a_pyg = grid.attention(bag), pyg.attention(bag)
    torch.testing.assert_close(a_grid, a_pyg, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a_grid.sum(), torch.tensor(1.0))
    for net in (pyg, grid):  # one pass gives both, equal to the two calls
        logits, scores = net.forward_scores(bag)
        torch.testing.assert_close(logits, pyg(bag), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(scores, a_pyg, rtol=1e-12, atol=1e-12)


def test_table_built_lazily_for_bags_without_one():
    bag = make_bag(40)
    bare = GraphBag(bag.x, bag.edge_index, bag.slide_id, bag.y, bag.coords)
    _, grid = twin_models(12, 2)
    grid.eval()
    torch.testing.assert_close(grid(bare), grid(bag))
    assert bare.neighbours is not None


def test_grid_backend_draws_dropout_and_trains():
    bag = make_bag(60, 12, seed=5)
    _, grid = twin_models(12, 2)
    grid.train()
    torch.manual_seed(0)
    a = grid.loss(bag, 1)["total"]
    b = grid.loss(bag, 1)["total"]
    assert torch.isfinite(a) and a != b  # fresh mask and dropout draws per step
    opt = torch.optim.AdamW(grid.parameters(), lr=1e-3)
    first = None
    for _ in range(30):
        torch.manual_seed(1)  # same mask and draws every step: the loss must fall
        loss = grid.loss(bag, 1)["total"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.8 * first


def test_dropout_linear_from_sources_matches_its_masks():
    """The first layer's fused dropout + projection: forward equals dropping out with the same
    masks and projecting the stacked copy; its gradients equal autograd's of that (it is
    linear in the weights and the sources, so this is exact)."""
    from srmil.models.neighbour_gat import DropoutLinear

    torch.manual_seed(3)
    a = torch.randn(30, 16, requires_grad=True)
    b = torch.randn(30, 16, requires_grad=True)
    w = torch.randn(9, 16, requires_grad=True)
    which, p = (0, 0, 1), 0.3
    torch.manual_seed(11)
    out = torch.cat(DropoutLinear.apply(w, p, which, (4, 5), a, b), dim=1)  # (90, 9)
    torch.manual_seed(11)  # the same draws, in the same order: one bool mask per graph
    masks = [torch.empty(30, 16, dtype=torch.bool).bernoulli_(1 - p) for _ in which]
    src = (a, b)
    ref = torch.cat([src[s] * m / (1 - p) for s, m in zip(which, masks, strict=True)]) @ w.t()
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert 0.15 < 1 - float(torch.stack(masks).double().mean()) < 0.45
    g = torch.randn_like(ref)
    assert_close_all(grads(out, [w, a, b], g), grads(ref, [w, a, b], g))


# ---- the sampled product's kernels -------------------------------------------------------


def sddmm_inputs(m: int = 40, k: int = 6, h: int = 2, f: int = 5):
    g = torch.Generator().manual_seed(0)
    index = torch.randint(0, m, (m, k), generator=g)
    return index, torch.randn(h, m, f, generator=g), torch.randn(h, m, f, generator=g)


def test_sddmm_kernels_agree_with_the_definition():
    from srmil.models.neighbour_gat import _sddmm

    index, a, b = sddmm_inputs()
    want = torch.einsum("hmf,hmkf->mkh", a, b[:, index])  # (M, K, H)
    torch.testing.assert_close(_sddmm(index, a, b, "eager"), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_sddmm(index, a, b, "compiled"), want, rtol=1e-10, atol=1e-10)


def test_auto_kernels_fall_back_to_eager_when_compiling_fails(monkeypatch, caplog):
    import srmil.models.neighbour_gat as ng

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(ng, "_compiled", {})
    monkeypatch.setattr(ng, "COMPILE_FROM", 1)
    monkeypatch.setattr(torch, "compile", broken)
    index, a, b = sddmm_inputs()
    with caplog.at_level("WARNING", logger="srmil.models.neighbour_gat"):
        got = ng._sddmm(index, a, b, "auto")
    torch.testing.assert_close(got, ng._sddmm(index, a, b, "eager"))
    assert "no C++ compiler found" in caplog.text and "eager" in caplog.text
    with pytest.raises(RuntimeError, match="no C"):  # asked for explicitly: no silent fallback
        ng._compiled.clear()
        ng._sddmm(index, a, b, "compiled")
