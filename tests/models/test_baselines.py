"""Focused behaviour of the MIL baselines: CLAM-SB, TransMIL, DSMIL, DTFD-MIL, Patch-GCN."""

import math

import pytest
import torch
import torch.nn.functional as F
from test_all_models import SMALL, make_bag

from srmil.graphs.graph_bag import GraphBag
from srmil.models import create_model
from srmil.models.transmil import TransMIL


def build(name: str, c: int = 2, d: int = 6, **over):
    torch.manual_seed(0)
    return create_model(name, d, c, {**SMALL[name], **over})


# --- CLAM-SB -----------------------------------------------------------------------------


def test_clam_bag_weight_one_zero_weights_the_instance_loss():
    m = build("clam_sb", bag_weight=1.0).train()
    parts = m.loss(make_bag(20, 6, 1, 0), torch.tensor(1))
    assert float(parts["instance"].detach()) > 0  # still computed and logged
    assert torch.equal(parts["total"], parts["ce"])
    parts["total"].backward()
    assert all(float(p.grad.abs().max()) == 0.0 for p in m.inst_heads.parameters())


def test_clam_total_mixes_bag_and_instance_losses():
    m = build("clam_sb", bag_weight=0.7).train()
    parts = m.loss(make_bag(20, 6, 0, 1), torch.tensor(0))
    want = 0.7 * parts["ce"] + 0.3 * parts["instance"]
    assert torch.allclose(parts["total"], want)


@pytest.mark.parametrize("n,k", [(1, 8), (3, 8), (20, 8), (20, 3)])
def test_clam_k_is_capped_at_the_bag_size(n, k):
    m = build("clam_sb", k_sample=k).eval()
    with torch.no_grad():
        w = m.attention(make_bag(n, 6, 0, 2))
    top, bottom = m.select_instances(w)
    kk = min(k, n)
    assert top.shape == bottom.shape == (kk,)
    order = w.argsort(descending=True)
    assert set(top.tolist()) == set(order[:kk].tolist())
    assert set(bottom.tolist()) == set(order[-kk:].tolist())
    assert torch.isfinite(m.loss(make_bag(n, 6, 1, 2), torch.tensor(1))["total"])


def test_clam_instance_loss_is_top_k_positive_bottom_k_negative_for_the_true_class():
    m = build("clam_sb", subtyping=False, k_sample=4).eval()  # eval: no dropout
    bag = make_bag(12, 6, 1, 3)
    with torch.no_grad():
        h = m.embed(bag.x)
        _, w = m.pool(h)
        top, bottom = m.select_instances(w)
        logits = m.inst_heads[1](h[torch.cat([top, bottom])])
        want = F.cross_entropy(logits, torch.tensor([1] * 4 + [0] * 4))
        got = m.loss(bag, torch.tensor(1))["instance"]
    assert torch.allclose(got, want)


def test_clam_subtyping_decides_which_instance_classifiers_learn():
    bag = make_bag(12, 6, 0, 4)
    for subtyping, want in ((False, [True, False, False]), (True, [True, True, True])):
        m = build("clam_sb", c=3, subtyping=subtyping).train()
        m.loss(bag, torch.tensor(0))["total"].backward()
        assert [clf.weight.grad is not None for clf in m.inst_heads] == want


# --- TransMIL ----------------------------------------------------------------------------


@pytest.mark.parametrize("n,side", [(1, 1), (2, 2), (4, 2), (5, 3), (10, 4), (17, 5)])
def test_transmil_pads_to_the_next_square_by_repeating_the_first_patches(n, side):
    s, idx = TransMIL.square_index(n)
    assert s == side == math.ceil(math.sqrt(n))
    assert idx.tolist() == list(range(n)) + list(range(side * side - n))


def test_transmil_padded_bag_equals_the_bag_written_out_square():
    m = build("transmil", c=3).eval()
    bag = make_bag(5, 6, 0, 5)  # 5 patches → 3×3: patches 0..4 then copies of 0..3
    square = GraphBag(torch.cat([bag.x, bag.x[:4]]), bag.edge_index, "sq", 0)
    with torch.no_grad():
        assert torch.allclose(m(bag), m(square), atol=1e-6)
        a = m.attention(bag)
    assert a.shape == (5,) and float(a.sum()) == pytest.approx(1.0, abs=1e-5)


def test_transmil_one_patch_and_eval_determinism():
    m = build("transmil").eval()
    bag = make_bag(1, 6, 1, 6)
    with torch.no_grad():
        out = m(bag)
        assert torch.isfinite(out).all() and torch.equal(out, m(bag))
        assert m.attention(bag).tolist() == [1.0]


# --- DSMIL -------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [2, 3])
def test_dsmil_critical_instance_is_the_argmax_of_instance_scores(c):
    m = build("dsmil", c=c).eval()
    with torch.no_grad():
        s = m.streams(make_bag(15, 6, 0, 7))
    assert torch.equal(s["critical"], s["inst"].argmax(dim=0))
    assert s["attn"].shape == (15, c)
    assert torch.allclose(s["attn"].sum(0), torch.ones(c))
    assert torch.equal(s["max"], s["inst"][s["critical"], torch.arange(c)])


def test_dsmil_attention_peaks_at_the_critical_instance():
    m = build("dsmil", d=4, nonlinear_q=False, q_dim=4).eval()
    with torch.no_grad():  # queries = features; class 1 scores feature 0
        m.q.weight.copy_(torch.eye(4))
        m.q.bias.zero_()
        m.inst_head.weight.copy_(torch.tensor([[-1.0, 0, 0, 0], [1.0, 0, 0, 0]]))
        m.inst_head.bias.zero_()
        x = 0.1 * torch.randn(10, 4)
        x[6, 0] = 5.0  # the one strongly class-1 patch
        bag = GraphBag(x, torch.zeros((2, 0), dtype=torch.long), "p", 1)
        s = m.streams(bag)
        assert int(s["critical"][1]) == 6
        assert int(s["attn"][:, 1].argmax()) == 6
        pred = int(m(bag).argmax())  # attention() is the predicted class's column
        assert torch.equal(m.attention(bag), s["attn"][:, pred])


def test_dsmil_loss_and_prediction_combine_both_streams():
    bag = make_bag(10, 6, 1, 8)
    m = build("dsmil").eval()
    with torch.no_grad():
        s = m.streams(bag)
        parts = m.loss(bag, torch.tensor(1))
        want = 0.5 * (s["bag"].softmax(-1) + s["max"].softmax(-1))
        assert torch.allclose(m(bag).softmax(-1), want, atol=1e-6)
    assert torch.allclose(parts["total"], 0.5 * (parts["ce_bag"] + parts["ce_max"]))
    plain = build("dsmil", average=False).eval()
    with torch.no_grad():
        assert torch.equal(plain(bag), plain.streams(bag)["bag"])


# --- DTFD-MIL ----------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 20])
def test_dtfd_pseudo_bags_partition_the_patches(n, training):
    m = build("dtfd", pseudo_bags=3).train(training)
    groups = m.pseudo_bags(n)
    assert len(groups) == min(3, n)
    assert sorted(torch.cat(groups).tolist()) == list(range(n))  # each patch exactly once
    sizes = [len(g) for g in groups]
    assert max(sizes) - min(sizes) <= 1


def test_dtfd_eval_is_deterministic_and_ignores_the_global_rng():
    m = build("dtfd").eval()
    bag = make_bag(20, 6, 0, 9)
    with torch.no_grad():
        torch.manual_seed(1)
        a = m(bag)
        torch.manual_seed(2)
        b = m(bag)
    assert torch.equal(a, b)
    m.train()  # training splits do follow the global RNG
    torch.manual_seed(1)
    g1 = m.pseudo_bags(20)
    torch.manual_seed(2)
    g2 = m.pseudo_bags(20)
    assert any(not torch.equal(x, y) for x, y in zip(g1, g2, strict=True))


def test_dtfd_afs_attention_is_each_patchs_weight_in_the_bag_embedding():
    m = build("dtfd").eval()
    bag = make_bag(17, 6, 1, 10)
    with torch.no_grad():
        t = m.tiers(bag)
        h = m.reduce(bag.x)
        d = torch.stack([a @ h[g] for g, a in zip(t["groups"], t["alpha"], strict=True)])
        z = t["beta"] @ d
        w = m.attention(bag)
    assert torch.allclose(w @ h, z, atol=1e-5)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-5)


def test_dtfd_loss_parts_and_maxmin_distillation():
    bag = make_bag(20, 6, 1, 11)
    m = build("dtfd", c=3, distill="maxmin", instances_per_group=2).eval()
    with torch.no_grad():
        t = m.tiers(bag)
        parts = m.loss(bag, torch.tensor(1))
        w = m.attention(bag)
    assert t["tier1"].shape == (3, 3) and t["picked"].shape == (3 * 4,)
    assert torch.allclose(parts["total"], parts["tier1"] + parts["tier2"])
    assert set(w.nonzero().view(-1).tolist()) <= set(t["picked"].tolist())
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-5)


# --- Patch-GCN ---------------------------------------------------------------------------


def test_patchgcn_uses_the_graph_and_the_others_do_not():
    bag = make_bag(16, 6, 0, 12)
    loops = torch.arange(16).repeat(2, 1)  # self loops only
    lonely = GraphBag(bag.x, loops, bag.slide_id, bag.y)
    for name, uses in (("patchgcn", True), ("abmil", False), ("mean", False)):
        m = build(name).eval()
        assert m.uses_graph is uses
        with torch.no_grad():
            changed = not torch.allclose(m(bag), m(lonely), atol=1e-6)
        assert changed is uses, name


def test_patchgcn_is_permutation_equivariant_on_the_graph():
    m = build("patchgcn", c=3).eval()
    bag = make_bag(12, 6, 0, 13)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    inv = perm.argsort()
    moved = GraphBag(bag.x[perm], inv[bag.edge_index], "p", 0)
    with torch.no_grad():
        assert torch.allclose(m(bag), m(moved), atol=1e-5)
        assert torch.allclose(m.attention(bag)[perm], m.attention(moved), atol=1e-5)
