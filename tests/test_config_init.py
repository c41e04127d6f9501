"""``srmil init``: a commented YAML of every config field, read back unchanged by --config."""

import dataclasses

import pytest
import yaml

import srmil.config as config
from srmil import api
from srmil.cli.main import main
from srmil.config import RunConfig, commented_yaml, field_descriptions, from_dict, to_dict
from srmil.models import MODELS

CONFIGS = sorted((obj for name, obj in vars(config).items()
                  if name.endswith("Config") and dataclasses.is_dataclass(obj)),
                 key=lambda c: c.__name__)


def test_every_config_dataclass_is_covered():
    assert {"RunConfig", "TrainConfig", "SRMILConfig", "SynthConfig", "StepBenchConfig",
            "TissueConfig"} <= {c.__name__ for c in CONFIGS}


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_has_a_description_and_the_yaml_round_trips(cls):
    docs = field_descriptions(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    assert set(docs) == set(names)
    assert all(docs[n] for n in names), [n for n in names if not docs[n]]
    text = "\n".join(commented_yaml(cls()))
    for n in names:  # each field under its own comment line
        assert f"# {docs[n]}" in text
    assert from_dict(cls, yaml.safe_load(text) or {}) == cls()


def test_descriptions_join_continuation_lines_and_read_docstring_attributes():
    d = field_descriptions(config.TrainConfig)
    assert d["sampler"] == ("shuffle (every bag once per epoch) | balanced (classes drawn "
                            "equally often; the epoch stays len(train) bags)")
    assert d["epochs"] == "METHOD.md"
    assert field_descriptions(config.SRMILConfig)["residual"].endswith(
        "(reference quirk); identity: identity where dims are equal")
    assert field_descriptions(config.StepBenchConfig)["repeats"] == (
        "timed steps per config (after one warm-up step).")
    # a subclass keeps its base's descriptions and redefines what it redefines
    assert field_descriptions(config.GatedABMILConfig)["hidden"] == field_descriptions(
        config.ABMILConfig)["hidden"]


@pytest.mark.parametrize("model", MODELS.names())
def test_init_output_is_read_back_unchanged_by_config(model, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(api.init_config(model))
    cfg = api.resolve_run_config(config=path)
    assert cfg == RunConfig(model=model, model_config=to_dict(MODELS.get(model).Config()))


def test_init_cli_prints_the_config_and_refuses_unknown_models(capsys):
    with pytest.raises(SystemExit) as e:
        main(["init", "--model", "abmil"])
    out, _ = capsys.readouterr()
    assert e.value.code == 0 and out == api.init_config("abmil")
    assert "# none | balanced (inverse class frequency" in out and "model: abmil" in out
    with pytest.raises(SystemExit) as e:
        main(["init", "--model", "abmill"])
    _, err = capsys.readouterr()
    assert e.value.code == 2 and "unknown MIL model 'abmill'; choose from" in err


def test_init_for_a_task_fixes_the_task(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["init", "--model", "abmil", "--task", "survival"])
    out, _ = capsys.readouterr()
    assert e.value.code == 0 and "srmil init --model abmil --task survival" in out
    path = tmp_path / "config.yaml"
    path.write_text(out)
    cfg = api.resolve_run_config(config=path)
    assert cfg.task == "survival" and cfg.survival.bins == 4
    with pytest.raises(SystemExit) as e:
        main(["init", "--task", "survivl"])
    _, err = capsys.readouterr()
    assert e.value.code == 2 and "unknown task 'survivl'" in err and len(err.splitlines()) == 1

