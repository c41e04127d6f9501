import pytest

from srmil.config import GraphConfig, SplitConfig, SynthConfig, from_dict, to_dict
from srmil.errors import ConfigError
from srmil.registry import Registry


def test_registry_register_create_and_names():
    reg = Registry("thing")

    @reg.register("B")
    def make_b(x):
        return ("b", x)

    @reg.register("a")
    def make_a():
        return "a"

    assert reg.names() == ["a", "b"]
    assert reg.create("b", 3) == ("b", 3)
    assert "A" in reg and "c" not in reg


def test_registry_duplicate_and_unknown():
    reg = Registry("MIL model")
    reg.register("abmil")(object)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("ABMIL")(object)
    with pytest.raises(ConfigError) as e:
        reg.get("abmill")
    assert str(e.value) == "unknown MIL model 'abmill'; choose from: abmil"


@pytest.mark.parametrize("cls", [GraphConfig, SplitConfig, SynthConfig])
def test_config_round_trip(cls):
    cfg = cls()
    assert from_dict(cls, to_dict(cfg)) == cfg


def test_config_rejects_unknown_and_bad_types():
    with pytest.raises(ConfigError, match="unknown GraphConfig key"):
        from_dict(GraphConfig, {"windw": 3})
    with pytest.raises(ConfigError, match="window"):
        from_dict(GraphConfig, {"window": "two"})
    assert from_dict(GraphConfig, {"step": 448}).step == 448.0
    assert from_dict(SynthConfig, {"tumour_fraction": [0.1, 0.2]}).tumour_fraction == (0.1, 0.2)


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"lr": 0.0}, {"select_after": 1.0}])
def test_impossible_training_settings_are_refused_before_anything_runs(bad):
    from srmil.config import TrainConfig

    with pytest.raises(ConfigError, match=next(iter(bad))):
        TrainConfig(**bad)
