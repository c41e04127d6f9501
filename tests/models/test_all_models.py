"""Every registered model (after timm's tests/test_models.py): the MILModel contract holds."""

import numpy as np
import pytest
import torch

from srmil.graphs.graph_bag import GraphBag
from srmil.graphs.grid import build_edge_index
from srmil.models import MODELS, create_model

NAMES = MODELS.names()
NO_ATTENTION = {"mean", "max"}  # pooling without per-patch weights
SMALL = {"srmil": {"heads": 2, "hidden": 8, "cls_hidden": 16},
         "srmil_lowmask": {"heads": 2, "hidden": 8, "cls_hidden": 16},
         "abmil": {"hidden": 16, "attn_dim": 8}, "abmil_gated": {"hidden": 16, "attn_dim": 8},
         "mean": {"hidden": 16}, "max": {"hidden": 16},
         # subtyping: every instance classifier gets a gradient on every bag (without it the
         # classifiers of the other classes are unused by design, see test_baselines.py)
         "clam_sb": {"hidden": 16, "attn_dim": 8, "k_sample": 3, "subtyping": True},
         "transmil": {"dim": 16, "heads": 2, "landmarks": 8, "residual_kernel": 3,
                      "pinv_iterations": 2},
         "dsmil": {"q_dim": 8}, "dtfd": {"hidden": 16, "attn_dim": 8},
         "patchgcn": {"hidden": 8, "layers": 2}}


def make_bag(n: int, d: int, y: int, seed: int, shift: float = 0.0) -> GraphBag:
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n))) + 1
    cells = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n]
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[: max(1, n // 4), 0] += shift  # a quarter of the patches carry the signal
    ei, _ = build_edge_index(cells * 224, 224.0)
    return GraphBag(torch.from_numpy(x), torch.from_numpy(ei), f"s{seed}", y)


def model(name: str, d: int = 6, c: int = 2):
    torch.manual_seed(0)
    return create_model(name, d, c, SMALL.get(name, {}))


def test_every_model_is_covered_here():
    assert set(NAMES) <= set(SMALL), "add the new model's small config to SMALL"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("c", [2, 3])
def test_loss_finite_backward_reaches_every_parameter(name, c):
    m = model(name, c=c)
    m.train()
    parts = m.loss(make_bag(20, 6, c - 1, 0), torch.tensor(c - 1))
    assert "total" in parts and all(torch.isfinite(v) for v in parts.values())
    parts["total"].backward()
    # reached = has a gradient; a softmax's score bias gets an exact zero (shift invariance)
    missing = [k for k, p in m.named_parameters() if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    m.eval()
    assert m(make_bag(20, 6, 0, 1)).shape == (c,)


@pytest.mark.parametrize("name", NAMES)
def test_bag_of_one_patch(name):
    m = model(name)
    bag = make_bag(1, 6, 1, 2)
    m.train()
    assert torch.isfinite(m.loss(bag, torch.tensor(1))["total"])
    m.eval()
    assert torch.isfinite(m(bag)).all()


@pytest.mark.parametrize("name", NAMES)
def test_attention_is_a_distribution_when_the_model_has_one(name):
    m = model(name).eval()
    bag = make_bag(15, 6, 0, 3)
    with torch.no_grad():
        a = m.attention(bag)
    if a is None:
        assert name in NO_ATTENTION
        return
    assert a.shape == (15,) and (a >= 0).all()
    assert float(a.sum()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_gives_the_same_logits(name):
    a, b = model(name).eval(), create_model(name, 6, 2, SMALL.get(name, {})).eval()
    b.load_state_dict(a.state_dict())
    bag = make_bag(12, 6, 0, 4)
    with torch.no_grad():
        assert torch.allclose(a(bag), b(bag))


@pytest.mark.parametrize("name", NAMES)
def test_learns_a_tiny_separable_task(name):
    """Positive bags have a shifted first feature on a quarter of their patches."""
    m = model(name)
    bags = [make_bag(16, 6, i % 2, i, shift=4.0 * (i % 2)) for i in range(16)]
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(15):
        m.train()
        for bag in bags:
            opt.zero_grad()
            m.loss(bag, torch.tensor(bag.y))["total"].backward()
            opt.step()
    m.eval()
    with torch.no_grad():
        test = [make_bag(16, 6, i % 2, 100 + i, shift=4.0 * (i % 2)) for i in range(10)]
        acc = np.mean([int(m(b).argmax()) == b.y for b in test])
    assert acc >= 0.8, acc
