"""Per-patch scores: attention where a model has it, gradient × input otherwise."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from srmil.bags.bag import FeatureBag
from srmil.errors import SrmilError
from srmil.graphs.graph_bag import to_graph_bag
from srmil.models.base import MODELS, create_model
from srmil.reports.scores import (
    ATTENTION,
    GRADIENT,
    ensemble_scores,
    gradient_scores,
    patch_scores,
    rank_percentile,
)


def _bag(n: int = 30, d: int = 6, seed: int = 0, with_graph: bool = True):
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    cells = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n]
    fb = FeatureBag(rng.standard_normal((n, d)).astype(np.float32), cells * 256, "s",
                    Path("s.h5"), "test", 256.0, 256.0)
    return to_graph_bag(fb, with_graph=with_graph)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_gives_one_finite_score_per_patch(name):
    torch.manual_seed(0)
    net = create_model(name, 6, 3)
    bag = _bag(with_graph=net.uses_graph)
    s = patch_scores(net, bag)
    assert s.scores.shape == (30,) and np.isfinite(s.scores).all()
    assert s.kind == type(net).score_kind  # the class declares what its heatmaps show
    assert s.scores.std() > 0  # not a constant map
    if s.kind == GRADIENT:
        assert s.target == int(net(bag).argmax())


@pytest.mark.parametrize("name", ["abmil", "srmil"])
def test_attention_models_give_their_pooling_weights(name):
    torch.manual_seed(0)
    net = create_model(name, 6, 2)
    bag = _bag(with_graph=net.uses_graph)
    s = patch_scores(net, bag)
    assert s.kind == "attention" and s.target is None
    assert (s.scores >= 0).all() and s.scores.sum() == pytest.approx(1.0, abs=1e-5)
    net.eval()
    with torch.no_grad():
        assert np.allclose(s.scores, net.attention(bag).numpy(), atol=1e-7)


@pytest.mark.parametrize("name", MODELS.names())
def test_score_kind_is_declared_by_the_class_and_kept(name):
    """An attention model gives (N,) attention and the same logits from its one-pass
    ``forward_scores`` as from ``forward``; a gradient model gives no attention at all."""
    torch.manual_seed(0)
    net = create_model(name, 6, 3).eval()
    assert type(net).score_kind in (ATTENTION, GRADIENT)
    bag = _bag(with_graph=net.uses_graph)
    with torch.no_grad():
        logits, att = net.forward_scores(bag)
        assert torch.allclose(logits, net(bag), atol=1e-6)
        if net.score_kind == ATTENTION:
            assert att is not None and att.shape == (30,)
            assert torch.allclose(att, net.attention(bag), atol=1e-7)
        else:
            assert att is None and net.attention(bag) is None


def test_the_built_in_kinds():
    kinds = {n: MODELS.get(n).score_kind for n in MODELS.names()}
    assert {n for n, k in kinds.items() if k == GRADIENT} == {"mean", "max"}


def test_a_model_declaring_attention_without_scores_is_a_bug_not_a_gradient_map():
    from srmil.models.mean import MeanMIL

    class Liar(MeanMIL):
        score_kind = ATTENTION

    net = Liar(6, 2, MeanMIL.Config())
    with pytest.raises(RuntimeError, match="declares score_kind 'attention'"):
        patch_scores(net, _bag(with_graph=False))
    with pytest.raises(RuntimeError, match="declares score_kind 'attention'"):
        ensemble_scores([net], _bag(with_graph=False))


def test_gradient_times_input_matches_finite_differences():
    """s_i = d/dε f_c(x with row i scaled by 1+ε) at ε = 0, by central differences."""
    torch.manual_seed(1)
    net = create_model("mean", 6, 3).double().eval()
    bag = _bag(n=12)
    bag.x = bag.x.double()
    s, c = gradient_scores(net, bag)
    eps = 1e-6
    for i in range(12):
        xs = []
        for sign in (1, -1):
            x = bag.x.clone()
            x[i] *= 1 + sign * eps
            with torch.no_grad():
                xs.append(float(net(replace(bag, x=x))[c]))
        assert s[i] == pytest.approx((xs[0] - xs[1]) / (2 * eps), rel=1e-5, abs=1e-9)


def test_attention_is_refused_for_a_model_without_it():
    net = create_model("mean", 6, 2)
    with pytest.raises(SrmilError, match="has no attention"):
        patch_scores(net, _bag(with_graph=False), method="attention")
    assert patch_scores(create_model("abmil", 6, 2), _bag(with_graph=False),
                        method="gradient").kind == GRADIENT


def test_ensemble_averages_scores_and_probabilities():
    torch.manual_seed(2)
    nets = [create_model("abmil", 6, 2) for _ in range(2)]
    bag = _bag(with_graph=False)
    s, p = ensemble_scores(nets, bag)
    for n in nets:
        n.eval()
    with torch.no_grad():
        att = [n.attention(bag).numpy() for n in nets]
        probs = [n(bag).softmax(-1).numpy() for n in nets]
    assert np.allclose(s.scores, np.mean(att, axis=0), atol=1e-7)
    assert np.allclose(p, np.mean(probs, axis=0), atol=1e-6)


def test_rank_percentile_spans_the_slide_and_shares_ties():
    p = rank_percentile(np.array([0.001, 0.5, 0.002, 0.5, 1e-9]))
    assert p.tolist() == pytest.approx([40.0, 90.0, 60.0, 90.0, 20.0])
    assert rank_percentile(np.array([])).size == 0


def test_trained_attention_points_at_the_tumour_patches(tmp_path):
    """ABMIL trained on the built-in ``instance`` cohort: its top-k patches per tumour slide
    (k = the slide's number of tumour patches) are mostly the true tumour patches."""
    from srmil.bags.synth import generate, write_cohort
    from srmil.cli.main import main
    from srmil.config import SynthConfig
    from srmil.reports.slide_heatmaps import RunScorer

    cfg = SynthConfig(variant="instance", slides=24, dim=16, min_patches=60, max_patches=150,
                      seed=1)
    s = write_cohort(cfg, tmp_path / "cohort")
    with pytest.raises(SystemExit) as e:
        main(["train", "--labels", s["labels_csv"], "--features", s["features_dir"], "--out",
              str(tmp_path / "run"), "--model", "abmil", "--epochs", "8", "--accelerator",
              "cpu", "--set", "train.bootstrap=20"])
    assert e.value.code == 0
    scorer = RunScorer(tmp_path / "run")
    precision, chance = [], []
    for sl in generate(cfg)[0]:
        if sl.label != "tumour":
            continue
        scored = scorer.score(Path(s["features_dir"]) / f"{sl.slide_id}.h5")
        k = int(sl.tumour.sum())
        top = np.argsort(-scored.scores.scores)[:k]
        precision.append(sl.tumour[top].mean())
        chance.append(k / len(sl.tumour))
    assert np.mean(precision) > 3 * np.mean(chance)  # measured 0.61 against 0.12
