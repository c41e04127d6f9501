"""SRMIL model: graph, masking, losses, parameter count, inference path (METHOD.md)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import grid_coords
from srmil.bags.bag import FeatureBag
from srmil.config import SRMILConfig
from srmil.errors import ConfigError, SrmilError
from srmil.graphs.graph_bag import GraphBag, to_graph_bag
from srmil.models.base import MODELS, create_model
from srmil.models.layers import GatedAttentionPool, GATLayer, sce_loss
from srmil.models.srmil import SRMIL, supernode_edge_index

STEP = 448  # level-0 step of a 40× scan patched at 20×/224 px


def make_bag(n: int = 24, d: int = 16, seed: int = 0) -> GraphBag:
    """A bag on a ragged grid, its graph built by the real builder (step from attrs + coords)."""
    rng = np.random.default_rng(seed)
    coords = grid_coords(n, STEP, seed)
    fb = FeatureBag(
        features=rng.standard_normal((n, d)).astype(np.float32),
        coords=coords,
        slide_id=f"s{seed}",
        source=Path(f"s{seed}.h5"),
        reader="test",
        patch_size_level0=STEP,
        step=STEP,
    )
    return to_graph_bag(fb, y=0)


def make_model(d: int = 16, c: int = 3, **overrides) -> SRMIL:
    torch.manual_seed(0)
    return SRMIL(d, c, dataclasses.replace(SRMILConfig(), **overrides))


def edge_set(ei: torch.Tensor) -> set[tuple[int, int]]:
    pairs = list(zip(ei[0].tolist(), ei[1].tolist(), strict=True))
    assert len(pairs) == len(set(pairs)), "duplicate edges"
    return set(pairs)


# ---- graph -------------------------------------------------------------------------------


def test_supernode_edges_exact_set():
    bag = make_bag(30)
    n = bag.num_nodes
    patch = edge_set(bag.edge_index)
    assert {(i, i) for i in range(n)} <= patch  # the patch graph's own self loops
    got = edge_set(supernode_edge_index(bag.edge_index, n))
    want = patch | {(i, n) for i in range(n)} | {(n, i) for i in range(n)}
    assert got == want
    assert (n, n) not in got
    assert len(got) == bag.edge_index.shape[1] + 2 * n


# ---- masking -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 10, 37])
def test_mask_count_distinct_and_seeded(n):
    model = make_model()
    torch.manual_seed(5)
    m1 = model.mask_nodes(n)
    torch.manual_seed(5)
    m2 = model.mask_nodes(n)
    assert m1.dtype == torch.long
    assert len(m1) == math.floor(0.7 * n)
    assert len(set(m1.tolist())) == len(m1)
    assert all(0 <= i < n for i in m1.tolist())
    assert torch.equal(m1, m2)


def test_masked_features_replaced_by_token_and_reformer_shared():
    model = make_model()
    bag = make_bag(20)
    mask = torch.tensor([0, 3, 7, 19])
    xm = model.mask_features(bag.x, mask)
    keep = torch.ones(20, dtype=torch.bool)
    keep[mask] = False
    assert torch.equal(xm[mask], model.enc_mask_token.detach().expand(4, -1))
    assert torch.equal(xm[keep], bag.x[keep])
    # the shared-reformer path is the same maths as reforming the masked features
    r_full, r_masked = model.reform_inputs(bag.x, mask)
    with torch.no_grad():
        torch.testing.assert_close(r_full, model.reformer(bag.x))
        torch.testing.assert_close(r_masked, model.reformer(xm))


# ---- losses ------------------------------------------------------------------------------


def test_sce_worked_example():
    x_hat = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    # cosines 1, 1/√2, 0, −1 → errors 0, 1 − 1/√2 = 0.29289322, 1, 2
    # α=1: (0 + 0.29289322 + 1 + 2) / 4 = 0.82322330
    # α=2: (0 + (1 − 1/√2)² = 1.5 − √2 = 0.08578644 + 1 + 4) / 4 = 1.27144661
    assert sce_loss(x_hat, x, 1.0).item() == pytest.approx(0.82322330, abs=1e-6)
    assert sce_loss(x_hat, x, 2.0).item() == pytest.approx(1.27144661, abs=1e-6)
    # scale invariant in both arguments
    assert sce_loss(3 * x_hat, 0.5 * x, 2.0).item() == pytest.approx(1.27144661, abs=1e-6)
    assert sce_loss(x, x, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    empty = sce_loss(torch.zeros(0, 2, requires_grad=True), torch.zeros(0, 2), 1.0)
    assert empty.item() == 0.0 and not torch.isnan(empty)


def manual_logits(model: SRMIL, x_in: torch.Tensor, ei: torch.Tensor) -> torch.Tensor:
    """Supernode logits written out step by step (eval mode)."""
    n = x_in.shape[0]
    inputs = torch.cat([x_in, model.supernode])  # supernode token in input space
    h = model.reformer(inputs)
    idx = torch.arange(n)
    sup = torch.full((n,), n)
    ei_s = torch.cat([ei, torch.stack([idx, sup]), torch.stack([sup, idx])], dim=1)
    for layer in model.encoder:
        h = layer(h, ei_s)
    emb = h[n].view(model.cfg.heads, model.cfg.hidden).mean(0)  # mean over heads
    return model.classifier(emb)


def test_loss_parts_and_combination_match_hand_computation():
    w_gen, w_ce = 1.3, 0.6
    model = make_model(w_gen=w_gen, w_ce=w_ce, alpha=2.0).eval()  # eval: dropout off
    bag = make_bag(25)
    ei, x = bag.edge_index, bag.x
    mask = torch.tensor([1, 4, 5, 9, 12, 20, 24])
    target = torch.tensor(2)
    out = model.loss(bag, target, mask=mask)
    assert set(out) == {"total", "ce_masked", "ce_full", "rec"}

    with torch.no_grad():
        xm = x.clone()
        xm[mask] = model.enc_mask_token
        # reconstruction: masked patch graph WITHOUT supernode
        h = model.reformer(xm)
        for layer in model.encoder:
            h = layer(h, ei)
        z = model.encoder_to_decoder(h)
        z[mask] = model.dec_mask_token
        for layer in model.decoder:
            z = layer(z, ei)
        cos = F.cosine_similarity(z[mask], x[mask], dim=-1)
        rec = ((1 - cos) ** 2).mean()
        ce_m = F.cross_entropy(manual_logits(model, xm, ei)[None], target.view(1))
        ce_f = F.cross_entropy(manual_logits(model, x, ei)[None], target.view(1))
        torch.testing.assert_close(out["rec"], rec)
        torch.testing.assert_close(out["ce_masked"], ce_m)
        torch.testing.assert_close(out["ce_full"], ce_f)
        torch.testing.assert_close(F.cross_entropy(model(bag)[None], target.view(1)), ce_f)

    parts = {k: v.item() for k, v in out.items()}
    want = (2 - w_gen) * (
        (2 - w_ce) * parts["ce_masked"] + w_ce * parts["ce_full"]
    ) + w_gen * parts["rec"]
    assert parts["total"] == pytest.approx(want, rel=1e-6)
    assert parts["ce_masked"] != pytest.approx(parts["ce_full"])  # the mask did something


def test_default_loss_weights():
    model = make_model().eval()
    out = model.loss(make_bag(12), torch.tensor(0), mask=torch.tensor([0, 1, 2]))
    p = {k: v.item() for k, v in out.items()}
    # METHOD.md: 0.2·(CE_masked + CE_full) + 1.8·L_rec
    assert p["total"] == pytest.approx(
        0.2 * (p["ce_masked"] + p["ce_full"]) + 1.8 * p["rec"], rel=1e-6
    )


# ---- structure ---------------------------------------------------------------------------


def test_parameter_count_matches_method_formula():
    d, c = 32, 3
    heads, hid, cls_hidden = 4, 64, 128
    w = heads * hid  # 256
    model = SRMIL(d, c, SRMILConfig())
    expected = (
        (d * d + d)  # reformer Linear(D, D) with bias
        + d  # supernode token (1, D)
        + d  # encoder mask token (1, D)
        + w  # decoder mask token (1, 256)
        # encoder layer 1 (D -> 4×64): GAT lin, att_src, att_dst, bias, residual projection
        # (D != 256), LayerNorm weight+bias, PReLU
        + (d * w + w + w + w + d * w + 2 * w + 1)
        # encoder layer 2 (256 -> 256): no residual (faithful: equal dims)
        + (w * w + w + w + w + 0 + 2 * w + 1)
        + w * w  # encoder_to_decoder Linear(256, 256, bias=False)
        + (w * w + w + w + w + 0 + 2 * w + 1)  # decoder layer 1 = encoder layer 2
        # decoder layer 2 (256 -> D, 1 head): lin, att_src, att_dst, bias; no res/norm/act
        + (w * d + d + d + d)
        + (hid * cls_hidden + cls_hidden)
        + (cls_hidden * c + c)  # classifier
    )
    assert expected == 235206
    assert sum(p.numel() for p in model.parameters()) == expected


def test_faithful_and_identity_residuals():
    faithful = make_model(d=32)
    assert isinstance(faithful.encoder[0].res, nn.Linear)  # 32 -> 256 projection
    assert faithful.encoder[0].res.bias is None
    assert faithful.encoder[1].res is None  # equal dims: no residual (reference quirk)
    assert faithful.decoder[0].res is None
    last = faithful.decoder[-1]
    assert last.res is None and last.norm is None and last.act is None
    assert last.conv.heads == 1 and last.conv.out_channels == 32

    ident = make_model(d=32, residual="identity")
    assert isinstance(ident.encoder[0].res, nn.Linear)
    assert isinstance(ident.encoder[1].res, nn.Identity)
    assert isinstance(ident.decoder[0].res, nn.Identity)
    assert ident.decoder[-1].res is None
    n_params = sum(p.numel() for p in ident.parameters())
    assert n_params == sum(p.numel() for p in faithful.parameters())


@pytest.mark.parametrize("residual", ["faithful", "identity"])
@pytest.mark.parametrize("in_dim", [8, 12])
def test_gat_layer_order(residual, in_dim):
    """aggregation + bias + residual(dropped-out input) -> LayerNorm -> PReLU."""
    torch.manual_seed(0)
    layer = GATLayer(in_dim, 3, 4, feat_drop=0.3, attn_drop=0.2, residual=residual).eval()
    nn.init.normal_(layer.bias)
    x = torch.randn(6, in_dim)
    ei = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1, 2], [0, 1, 2, 3, 4, 5, 1, 2, 0]])
    out, (ei_out, alpha) = layer(x, ei, return_attention_weights=True)
    agg = layer.conv(x, ei) + layer.bias
    if in_dim != 12:
        agg = agg + layer.res(x)  # projection either way
    elif residual == "identity":
        agg = agg + x
    want = layer.act(layer.norm(agg))
    torch.testing.assert_close(out, want)
    assert torch.equal(ei_out, ei) and alpha.shape == (9, 4)
    assert (in_dim == 12 and residual == "faithful") == (layer.res is None)


def test_gat_layer_residual_takes_dropped_out_input():
    torch.manual_seed(0)
    layer = GATLayer(8, 3, 4, feat_drop=0.5, attn_drop=0.0).train()
    x = torch.randn(5, 8)
    ei = torch.tensor([[0, 1, 2, 3, 4, 0], [0, 1, 2, 3, 4, 1]])
    torch.manual_seed(7)
    out = layer(x, ei)
    torch.manual_seed(7)
    h = F.dropout(x, 0.5, training=True)  # the same draw as the layer's feature dropout
    want = layer.act(layer.norm(layer.conv(h, ei) + layer.bias + layer.res(h)))
    torch.testing.assert_close(out, want)


def test_initialisation():
    model = make_model(d=32)
    assert torch.count_nonzero(model.reformer.bias) == 0
    for layer in [*model.encoder, *model.decoder]:
        assert torch.count_nonzero(layer.bias) == 0
        if layer.act is not None:
            assert layer.act.weight.numel() == 1 and layer.act.weight.item() == 0.25
    # xavier-normal gain √2 on the 256×256 GAT projection: std = √2·√(2/(256+256))
    std = model.encoder[1].conv.lin.weight.std().item()
    assert std == pytest.approx(math.sqrt(2) * math.sqrt(2 / 512), rel=0.05)
    assert model.supernode.std().item() == pytest.approx(0.01, rel=0.5)


# ---- inference path ----------------------------------------------------------------------


def test_inference_ignores_decoder_and_is_deterministic():
    model = make_model().eval()
    bag = make_bag(20)
    with torch.no_grad():
        a = model(bag)
        b = model(bag)
        assert a.shape == (3,)
        assert torch.equal(a, b)
        for p in [
            *model.decoder.parameters(),
            *model.encoder_to_decoder.parameters(),
            model.dec_mask_token,
            model.enc_mask_token,
        ]:
            p.add_(torch.randn_like(p))
        assert torch.equal(model(bag), a)


def test_gradients_reach_tokens_and_supernode():
    model = make_model().train()
    torch.manual_seed(1)
    model.loss(make_bag(20), torch.tensor(1))["total"].backward()
    for name in ("enc_mask_token", "dec_mask_token", "supernode"):
        g = getattr(model, name).grad
        assert g is not None and torch.count_nonzero(g) > 0, name
    assert model.encoder[0].conv.lin.weight.grad is not None


def test_single_patch_bag():
    model = make_model().train()
    bag = make_bag(1)
    assert edge_set(bag.edge_index) == {(0, 0)}
    out = model.loss(bag, torch.tensor(0))
    assert out["rec"].item() == 0.0
    assert all(torch.isfinite(v) for v in out.values())
    out["total"].backward()
    model.eval()
    assert model(bag).shape == (3,)
    torch.testing.assert_close(model.attention(bag), torch.ones(1))


def test_attention_supernode_scores():
    model = make_model().eval()
    bag = make_bag(18)
    with torch.no_grad():
        att = model.attention(bag)
    assert att.shape == (18,)
    assert (att >= 0).all()
    # softmax over the supernode's incoming edges: patches only (no supernode self loop)
    assert att.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_gated_pooling():
    model = make_model(pooling="gated")
    assert model.supernode is None and isinstance(model.pool, GatedAttentionPool)
    bag = make_bag(15)
    out = model.train().loss(bag, torch.tensor(2))
    out["total"].backward()
    assert all(torch.isfinite(v) for v in out.values())
    assert torch.count_nonzero(model.pool.score.weight.grad) > 0
    model.eval()
    with torch.no_grad():
        att = model.attention(bag)
        assert model(bag).shape == (3,)
    assert att.shape == (15,) and (att >= 0).all()
    assert att.sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("reformer", ["identity", "mlp"])
def test_reformer_options(reformer):
    model = make_model(reformer=reformer)
    bag = make_bag(10)
    out = model.loss(bag, torch.tensor(0))
    out["total"].backward()
    assert torch.isfinite(out["total"])
    if reformer == "identity":
        assert not any(p.requires_grad for p in model.reformer.parameters())


# ---- config, registry, round trip ---------------------------------------------------------


@pytest.mark.parametrize(
    "key, value", [("reformer", "conv"), ("residual", "full"), ("pooling", "max")]
)
def test_bad_options_list_choices(key, value):
    with pytest.raises(ConfigError, match="choose from"):
        make_model(**{key: value})


def test_registry_and_bad_bags():
    assert "srmil" in MODELS.names()
    model = create_model("srmil", 16, 2, {"w_gen": 1.0, "layers": 3})
    assert isinstance(model, SRMIL) and len(model.encoder) == 3
    bag = make_bag(8)
    with pytest.raises(SrmilError, match="expects"):
        SRMIL(4, 2)(bag)
    no_graph = GraphBag(x=bag.x, edge_index=torch.zeros((2, 0), dtype=torch.long), slide_id="g")
    with pytest.raises(SrmilError, match="graph"):
        model(no_graph)


def test_state_dict_round_trip_and_learns():
    torch.manual_seed(0)
    model = make_model(d=8, c=2)
    bags = [make_bag(12, d=8, seed=s) for s in range(2)]
    bags[1].x.add_(2.0)  # class 1: shifted features
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = None
    for _ in range(15):
        for y, bag in enumerate(bags):
            opt.zero_grad()
            out = model.loss(bag, torch.tensor(y))
            out["total"].backward()
            opt.step()
            first = out["ce_full"].item() if first is None else first
    model.eval()
    with torch.no_grad():
        ce = sum(F.cross_entropy(model(b)[None], torch.tensor([y])) for y, b in enumerate(bags))
    assert ce.item() / 2 < first
    clone = make_model(d=8, c=2)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    with torch.no_grad():
        assert torch.equal(clone(bags[0]), model(bags[0]))


def test_the_lowmask_preset_is_srmil_with_mask_rate_0_3():
    """srmil_lowmask: its own name, the faithful srmil untouched (0.7), and the same model,
    step for step, as srmil:mask_rate=0.3."""
    assert create_model("srmil", 16, 2).cfg.mask_rate == 0.7
    torch.manual_seed(3)
    preset = create_model("srmil_lowmask", 16, 2, {"heads": 2, "hidden": 8})
    torch.manual_seed(3)
    spec = create_model("srmil", 16, 2, {"heads": 2, "hidden": 8, "mask_rate": 0.3})
    assert isinstance(preset, SRMIL) and preset.cfg.mask_rate == 0.3
    assert preset.state_dict().keys() == spec.state_dict().keys()
    for k, v in spec.state_dict().items():
        torch.testing.assert_close(preset.state_dict()[k], v)
    bag = make_bag(30)
    torch.manual_seed(5)
    a = preset.loss(bag, 1)
    torch.manual_seed(5)
    b = spec.loss(bag, 1)
    for k in b:
        torch.testing.assert_close(a[k], b[k])
    torch.manual_seed(5)
    c = create_model("srmil", 16, 2, {"heads": 2, "hidden": 8}).loss(bag, 1)  # 0.7: other masks
    assert not torch.allclose(c["rec"], b["rec"])
