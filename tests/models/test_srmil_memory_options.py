"""SRMIL's memory options: gradient checkpointing (exact) and contiguous training crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import grid_coords
from srmil.bags.bag import FeatureBag
from srmil.config import GraphConfig, SRMILConfig
from srmil.errors import ConfigError
from srmil.graphs.crop import contiguous_crop, crop_nodes
from srmil.graphs.graph_bag import GraphBag, to_graph_bag
from srmil.graphs.grid import build_edge_index
from srmil.models.srmil import SRMIL

STEP = 448


def make_bag(n: int = 150, d: int = 10, seed: int = 0) -> GraphBag:
    rng = np.random.default_rng(seed)
    c = grid_coords(n, STEP, seed)
    fb = FeatureBag(features=rng.standard_normal((len(c), d)).astype(np.float32), coords=c,
                    slide_id="s", source=Path("s.h5"), reader="test", patch_size_level0=STEP,
                    step=STEP)
    return to_graph_bag(fb, GraphConfig(), y=1)


def loss_and_grads(cfg: SRMILConfig, bag: GraphBag, seed: int = 3):
    torch.manual_seed(0)
    net = SRMIL(bag.x.shape[1], 2, cfg).train()
    torch.manual_seed(seed)  # the same mask and dropout draws for both runs
    parts = net.loss(bag, 1)
    parts["total"].backward()
    grads = {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in parts.items()}, grads, torch.get_rng_state()


@pytest.mark.parametrize("pooling", ["supernode", "gated"])
def test_checkpointing_is_exact(pooling):
    """Recomputing the layers in backward replays the dropout draws: same loss, same grads,
    and the global RNG ends where it ends without checkpointing (resume stays exact)."""
    bag = make_bag()
    plain = loss_and_grads(SRMILConfig(pooling=pooling), bag)
    ckpt = loss_and_grads(SRMILConfig(pooling=pooling, checkpoint=True), bag)
    assert plain[0] == pytest.approx(ckpt[0], rel=1e-6)
    assert plain[1].keys() == ckpt[1].keys() and len(plain[1]) > 10
    for k in plain[1]:
        torch.testing.assert_close(ckpt[1][k], plain[1][k], rtol=1e-5, atol=1e-7, msg=k)
    assert torch.equal(plain[2], ckpt[2])


def test_checkpointing_only_in_training():
    bag = make_bag()
    net = SRMIL(bag.x.shape[1], 2, SRMILConfig(checkpoint=True)).eval()
    with torch.no_grad():
        a = net(bag)
    net.cfg = SRMILConfig()
    with torch.no_grad():
        assert torch.equal(a, net(bag))


def test_crop_is_a_contiguous_block_with_its_induced_graph():
    bag = make_bag(n=400)
    torch.manual_seed(1)
    crop = contiguous_crop(bag, 60)
    assert crop.num_nodes == 60
    # which rows of the bag were kept: match features
    kept = [int(torch.nonzero((bag.x == r).all(1))[0]) for r in crop.x]
    assert kept == sorted(kept)
    # the induced graph is the grid graph of the kept coordinates, rebuilt from scratch
    ei, _ = build_edge_index(bag.coords[kept].numpy().astype(np.float64), STEP)
    got = sorted(zip(*crop.edge_index.tolist(), strict=True))
    assert got == sorted(zip(*ei.tolist(), strict=True))
    # contiguous: one connected component
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components
    adj = sp.coo_matrix((np.ones(ei.shape[1]), (ei[0], ei[1])), shape=(60, 60))
    assert connected_components(adj, directed=False)[0] == 1
    # compact: a BFS block spans far less of the slide than 60 random patches would
    span = lambda c: float(np.ptp(c.numpy(), axis=0).max())  # noqa: E731
    assert span(crop.coords) < 0.6 * span(bag.coords)
    # the neighbour table matches the new graph
    t = crop.neighbour_table()
    rows, cols = torch.nonzero(t.valid, as_tuple=True)
    assert sorted(zip(t.index[rows, cols].tolist(), rows.tolist(), strict=True)) == got


def test_crop_of_small_bag_and_small_fragment():
    bag = make_bag(n=40)
    assert contiguous_crop(bag, 100) is bag
    # two fragments (a 3-node path and a 2-node path): a seed in the small one gives all of it
    ei = np.array([[0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]])
    assert sorted(crop_nodes(ei, 5, 4, 3).tolist()) == [3, 4]
    assert crop_nodes(ei, 5, 2, 1)[0] == 1


def test_train_crop_trains_on_crops_and_infers_on_the_whole_bag(monkeypatch):
    bag = make_bag(n=300)
    net = SRMIL(bag.x.shape[1], 2, SRMILConfig(train_crop=64)).train()
    seen = []
    real = net._grid_loss
    monkeypatch.setattr(net, "_grid_loss",
                        lambda b, y, m: seen.append(b.num_nodes) or real(b, y, m))
    parts = net.loss(bag, 1)
    assert seen == [64] and torch.isfinite(parts["total"])
    parts["total"].backward()
    net.eval()
    with torch.no_grad():
        assert net.attention(bag).shape == (300,)
    with pytest.raises(ConfigError, match="train_crop"):
        SRMIL(10, 2, SRMILConfig(train_crop=-1))


# ---- shared first-layer projection (an approximation: one dropout mask for all passes) ------


def test_shared_dropout_linear_equals_autograd_with_the_same_mask():
    from srmil.models.neighbour_gat import SharedDropoutLinear

    torch.manual_seed(0)
    n, d, o, p = 30, 7, 5, 0.3
    full = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    token = torch.randn(1, d, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(o + 2, d, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([1, 4, 5, 17, 29])
    which = (0, 0, 1)
    torch.manual_seed(5)
    outs = SharedDropoutLinear.apply(weight, p, which, (o, 2), full, token, mask)
    up = [torch.randn_like(t) for t in outs]
    got = torch.autograd.grad(sum((t * u).sum() for t, u in zip(outs, up, strict=True)),
                              (weight, full, token))
    # the reference: the same Bernoulli draw, every pass built and projected explicitly
    torch.manual_seed(5)
    m = torch.empty(n, d, dtype=torch.bool).bernoulli_(1 - p)
    keep = torch.ones(n, dtype=torch.bool)
    keep[mask] = False
    masked = torch.where(keep[:, None], full, token)
    x = torch.cat([(masked, full)[s] for s in which]) * m.repeat(3, 1) / (1 - p)
    ref = x @ weight.t()
    ref_outs = (ref[:, :o], ref[:, o:])
    for a, b in zip(outs, ref_outs, strict=True):
        torch.testing.assert_close(a, b)
    want = torch.autograd.grad(sum((t * u).sum() for t, u in zip(ref_outs, up, strict=True)),
                               (weight, full, token))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(outs[0][:n], outs[0][n:2 * n])  # one mask: the masked passes agree


def test_share_projection_is_exact_without_dropout():
    """With no dropout there is nothing to share: the loss and every gradient are the
    unshared path's (so the option changes only the dropout draws)."""
    bag = make_bag()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        bag.x = bag.x.double()
        zero = {"feat_drop": 0.0, "attn_drop": 0.0, "cls_dropout": 0.0}
        plain = loss_and_grads(SRMILConfig(**zero), bag)
        shared = loss_and_grads(SRMILConfig(**zero, share_projection=True), bag)
    finally:
        torch.set_default_dtype(old)
    assert plain[0] == pytest.approx(shared[0], rel=1e-12)
    for k in plain[1]:
        torch.testing.assert_close(shared[1][k], plain[1][k], rtol=1e-10, atol=1e-12, msg=k)


def test_share_projection_trains():
    bag = make_bag()
    torch.manual_seed(0)
    net = SRMIL(bag.x.shape[1], 2, SRMILConfig(share_projection=True)).train()
    parts = net.loss(bag, 1)
    parts["total"].backward()
    assert torch.isfinite(parts["total"])
    assert net.enc_mask_token.grad is not None and net.enc_mask_token.grad.abs().sum() > 0
