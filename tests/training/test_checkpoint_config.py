import pytest
import torch

import srmil.models  # noqa: F401
from srmil.config import RunConfig, apply_sets, from_dict
from srmil.errors import ConfigError, SrmilError
from srmil.models.base import create_model
from srmil.training.checkpoint import (
    load_state,
    load_weights,
    read_weights_meta,
    save_state,
    save_weights,
)


def test_weights_round_trip_with_metadata(tmp_path):
    a = create_model("mean", 8, 3, {"hidden": 16})
    save_weights(tmp_path / "w.safetensors", a.state_dict(),
                 {"model": "mean", "classes": ["x", "y", "z"]})
    b = create_model("mean", 8, 3, {"hidden": 16})
    meta = load_weights(tmp_path / "w.safetensors", b)
    assert meta == {"model": "mean", "classes": ["x", "y", "z"]}
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(v, w), k


def test_weights_of_another_shape_or_corrupt_file(tmp_path):
    save_weights(tmp_path / "w.safetensors", create_model("mean", 8, 2).state_dict(),
                 {"model": "mean"})
    with pytest.raises(SrmilError, match="weights do not fit the model"):
        load_weights(tmp_path / "w.safetensors", create_model("mean", 12, 2))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(SrmilError, match="not a readable safetensors checkpoint"):
        read_weights_meta(bad)


def test_state_is_weights_only_loadable_and_pickles_are_refused(tmp_path):
    state = {"model": {"w": torch.ones(2)}, "epoch": 3, "history": [{"a": 1.0}],
             "rng": {"cpu": torch.get_rng_state()}}
    save_state(tmp_path / "last.pt", state)
    back = load_state(tmp_path / "last.pt")
    assert back["epoch"] == 3 and torch.equal(back["model"]["w"], torch.ones(2))
    torch.save({"x": object()}, tmp_path / "evil.pt")
    with pytest.raises(SrmilError, match="not a readable checkpoint"):
        load_state(tmp_path / "evil.pt")


def test_apply_sets_sections_bare_keys_and_errors():
    d = apply_sets({}, ["train.epochs=7", "lr=1e-4", "model.mask_rate=0.5", "window=3",
                        "model=mean"], model_fields={"mask_rate"})
    cfg = from_dict(RunConfig, d)
    assert cfg.train.epochs == 7 and cfg.train.lr == 1e-4 and cfg.graph.window == 3
    assert cfg.model == "mean" and cfg.model_config == {"mask_rate": 0.5}
    with pytest.raises(ConfigError, match="--set nope: unknown"):
        apply_sets({}, ["nope=1"])
    with pytest.raises(ConfigError, match="ambiguous, in train, split"):
        apply_sets({}, ["seed=1"])
    with pytest.raises(ConfigError, match="expects key=value"):
        apply_sets({}, ["epochs"])
    with pytest.raises(ConfigError, match="unknown train key"):
        apply_sets({}, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="TrainConfig.epochs"):
        from_dict(RunConfig, apply_sets({}, ["train.epochs=many"]))


def test_unknown_model_lists_choices():
    from srmil.models import MODELS

    with pytest.raises(ConfigError) as e:
        create_model("nope", 4, 2)
    assert str(e.value) == f"unknown MIL model 'nope'; choose from: {', '.join(MODELS.names())}"
    assert {"abmil", "abmil_gated", "max", "mean", "srmil"} <= set(MODELS.names())
