"""Training recipes (optimiser, schedule, paper presets, early stopping) and feature
standardisation fitted on the training split, saved with the run and applied at predict."""

import copy
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from srmil import api
from srmil.bags.readers import read_bag
from srmil.bags.synth import write_cohort
from srmil.config import RunConfig, SplitConfig, SynthConfig, TrainConfig
from srmil.errors import ConfigError
from srmil.graphs.graph_bag import GraphBag
from srmil.models.base import create_model
from srmil.training.inference import load_fold_model
from srmil.training.loop import stop_early
from srmil.training.optim import RECIPES, LookaheadRAdam, build_optimizer, resolve_recipe
from srmil.training.standardise import StandardisedModel, Standardiser


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3),
                               torch.nn.Linear(3, 1))


def _steps(net, opt, n: int, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(8, 4, generator=g)
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()


def test_default_optimizer_is_the_faithful_adamw_and_cosine():
    cfg = TrainConfig(epochs=4)
    a, b = _net(), _net()
    opt, sched = build_optimizer(cfg, a)
    ref = torch.optim.AdamW(b.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ref_s = torch.optim.lr_scheduler.CosineAnnealingLR(ref, T_max=4, eta_min=0.0)
    for _ in range(3):
        _steps(a, opt, 2)
        _steps(b, ref, 2)
        sched.step()
        ref_s.step()
    assert isinstance(opt, torch.optim.AdamW)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    assert opt.param_groups[0]["lr"] == ref.param_groups[0]["lr"] < cfg.lr


def test_paper_recipes_build_the_stated_optimisers():
    shared = TrainConfig(epochs=5)
    assert resolve_recipe(shared, "transmil") is shared  # recipe shared: untouched
    paper = TrainConfig(epochs=5, recipe="paper", lr=9e-3)
    tm = resolve_recipe(paper, "transmil")
    opt, sched = build_optimizer(tm, _net())
    assert isinstance(opt, LookaheadRAdam) and tm.early_stopping == 10
    by_decay = {g["weight_decay"]: g["params"] for g in opt.param_groups}
    assert set(by_decay) == {0.0, 1e-5}  # no decay on biases and 1-D (LayerNorm) parameters
    assert all(p.dim() == 1 for p in by_decay[0.0]) and all(p.dim() == 2 for p in by_decay[1e-5])
    assert {g["lr"] for g in opt.param_groups} == {2e-4}
    for _ in range(3):
        sched.step()
    assert {g["lr"] for g in opt.param_groups} == {2e-4}  # constant lr
    clam = resolve_recipe(paper, "clam_sb")
    opt, _ = build_optimizer(clam, _net())
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["lr"] == 2e-4
    assert opt.param_groups[0]["weight_decay"] == 1e-5 and clam.early_stopping == 20
    ab = resolve_recipe(paper, "abmil")
    opt, _ = build_optimizer(ab, _net())
    assert type(opt) is torch.optim.Adam and (ab.lr, ab.weight_decay) == (5e-4, 1e-4)
    assert resolve_recipe(paper, "mean") == paper  # no paper recipe: the shared settings
    assert resolve_recipe(paper, "srmil").lr == TrainConfig().lr  # METHOD.md's = the default
    assert set(RECIPES.names()) >= {"abmil", "clam_sb", "transmil", "srmil"}
    with pytest.raises(ConfigError, match="train.optimizer must be one of"):
        TrainConfig(optimizer="sgd")


def test_lookahead_moves_slow_weights_half_way_every_k_steps():
    a, b = _net(), _net()
    p0 = [p.detach().clone() for p in a.parameters()]
    look = LookaheadRAdam(a.parameters(), lr=1e-2, alpha=0.5, k=3)
    plain = torch.optim.RAdam(b.parameters(), lr=1e-2)
    _steps(a, look, 3)
    _steps(b, plain, 3)  # the fast weights before the sync
    for p, q, s in zip(a.parameters(), b.parameters(), p0, strict=True):
        torch.testing.assert_close(p, s + 0.5 * (q - s))
    buf = io.BytesIO()
    torch.save(look.state_dict(), buf)
    buf.seek(0)
    again = LookaheadRAdam(_net().parameters(), lr=1e-2, alpha=0.5, k=3)
    again.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(again.state_dict()["state"][0]["lookahead_slow"],
                       look.state_dict()["state"][0]["lookahead_slow"])


def test_stop_early_after_patience_epochs_without_a_lower_val_loss():
    cfg = TrainConfig(early_stopping=2)
    h = [{"val_loss": v} for v in (0.9, 0.5, 0.6, 0.7)]
    assert stop_early(cfg, h, {"epoch": 3})
    assert not stop_early(cfg, h[:3], {"epoch": 2})  # one epoch since the minimum
    assert not stop_early(cfg, h, None)  # nothing selected yet: keep going
    assert not stop_early(TrainConfig(), h, {"epoch": 3})  # off by default


def test_standardiser_matches_numpy_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    xs = [rng.normal(3.0, 2.0, (n, 5)).astype(np.float32) for n in (7, 30, 1)]
    bags = [GraphBag(torch.from_numpy(x), torch.zeros(2, 0, dtype=torch.long), f"s{i}")
            for i, x in enumerate(xs)]
    st = Standardiser.fit(bags)
    allx = np.concatenate(xs).astype(np.float64)
    np.testing.assert_allclose(st.mean, allx.mean(0), rtol=1e-10)
    np.testing.assert_allclose(st.std, allx.std(0), rtol=1e-10)
    z = torch.cat([st.apply(b).x for b in bags]).double().numpy()
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-5)
    st.save(tmp_path)
    back = Standardiser.load(tmp_path)
    np.testing.assert_array_equal(back.mean, st.mean)
    assert Standardiser.load(tmp_path / "none") is None


@pytest.fixture(scope="module")
def shifted_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    s = write_cohort(SynthConfig(variant="instance", slides=18, dim=6, min_patches=30,
                                 max_patches=60, seed=2, float16=False), out)
    return s["labels_csv"], s["features_dir"]


def test_cv_standardises_on_train_only_and_predict_applies_the_same(tmp_path, shifted_cohort):
    labels, feats = shifted_cohort
    cfg = RunConfig(model="abmil", train=TrainConfig(epochs=2, accelerator="cpu", bootstrap=20,
                                                     standardise=True, recipe="paper"),
                    split=SplitConfig(folds=3))
    run = tmp_path / "run"
    api.cv(labels, feats, run, cfg)
    saved = json.loads((run / "config.json").read_text())["train"]
    assert (saved["optimizer"], saved["lr"], saved["weight_decay"]) == ("adam", 5e-4, 1e-4)
    splits = pd.read_csv(run / "splits.csv")
    every = np.concatenate([read_bag(p).features for p in sorted(Path(feats).glob("*.h5"))])
    for k in range(3):
        ids = splits[(splits.fold == k) & (splits.split == "train")].slide_id
        x = np.concatenate([read_bag(f"{feats}/{s}.h5").features for s in ids]).astype(float)
        st = json.loads((run / f"fold_{k}" / "standardise.json").read_text())
        np.testing.assert_allclose(st["mean"], x.mean(0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(st["std"], x.std(0), rtol=1e-6)
        assert not np.allclose(st["mean"], every.mean(0), rtol=1e-3)  # val/test left out
    net = load_fold_model(run / "fold_0", "abmil", ["normal", "tumour"])
    assert isinstance(net, StandardisedModel)
    raw = create_model("abmil", 6, 2, json.loads((run / "config.json").read_text())[
        "model_config"])
    raw.load_state_dict(copy.deepcopy(net.net.state_dict()))
    raw.eval()
    table = api.predict(run, feats, fold=0).table.set_index("slide_id")
    st = Standardiser.load(run / "fold_0")
    sid = table.index[0]
    bag = read_bag(f"{feats}/{sid}.h5")
    gb = GraphBag(torch.from_numpy(bag.features.astype(np.float32)),
                  torch.zeros(2, 0, dtype=torch.long), sid)
    with torch.no_grad():
        p_std = raw(st.apply(gb)).softmax(-1)[1].item()
        p_raw = raw(gb).softmax(-1)[1].item()
    assert table.loc[sid, "prob_tumour"] == pytest.approx(p_std, abs=1e-6)
    assert abs(p_std - p_raw) > 1e-6  # the statistics do change the prediction


def test_a_fold_stops_early_and_still_selects_and_tests(tmp_path, shifted_cohort):
    labels, feats = shifted_cohort
    cfg = RunConfig(model="mean", split=SplitConfig(folds=3),
                    train=TrainConfig(epochs=10, accelerator="cpu", bootstrap=20, lr=0.05,
                                      early_stopping=2, select_after=0.0))
    api.cv(labels, feats, tmp_path / "run", cfg)
    lengths = []
    for k in range(3):
        fold = tmp_path / "run" / f"fold_{k}"
        h = pd.read_csv(fold / "history.csv")
        lengths.append(len(h))
        if len(h) < 10:  # stopped: the minimum is exactly `patience` epochs back
            assert len(h) - 1 - int(h.val_loss.idxmin()) == 2
        m = json.loads((fold / "metrics.json").read_text())
        assert m["best_epoch"] in h.epoch.tolist() and "auc" in m["test"]
    assert min(lengths) < 10  # at least one fold stopped (seeded: fold 1 after 8 epochs)
    k = lengths.index(min(lengths))  # killed after stopping, before DONE: resume adds nothing
    fold = tmp_path / "run" / f"fold_{k}"
    before = pd.read_csv(fold / "history.csv")
    for name in ("DONE", "metrics.json", "predictions.csv"):
        (fold / name).unlink()
    (tmp_path / "run" / "DONE").unlink()
    api.cv(labels, feats, tmp_path / "run", cfg, resume=True)
    pd.testing.assert_frame_equal(pd.read_csv(fold / "history.csv"), before)
    assert (fold / "DONE").exists()
