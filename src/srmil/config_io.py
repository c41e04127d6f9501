"""Config values: dataclass ↔ JSON dicts, YAML/JSON files and ``--set key=value`` overrides.

The config dataclasses live in :mod:`srmil.config` (which re-exports these functions). Values
from JSON, YAML and the command line are coerced to each field's declared type; unknown keys
and ill-typed values are one-line :class:`~srmil.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import fields
from typing import Any, TypeVar

from srmil.errors import ConfigError, exc_line

C = TypeVar("C")


def _check_type(cls_name: str, name: str, value: Any, tp: Any) -> Any:
    """Coerce JSON values (lists, ints) to the declared field type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(cls_name, name, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{cls_name}.{name}: {value!r} is not {tp}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{cls_name}.{name}: expected a list, got {value!r}")
        inner = args[0] if args and (len(args) == 2 and args[1] is Ellipsis) else None
        if inner is not None:
            return tuple(_check_type(cls_name, name, v, inner) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{cls_name}.{name}: expected {len(args)} values, got {value!r}")
        return tuple(_check_type(cls_name, name, v, a) for v, a in zip(value, args, strict=True))
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value)
    if origin is dict and isinstance(value, dict):
        return dict(value)
    raise ConfigError(f"{cls_name}.{name}: {value!r} is not {getattr(tp, '__name__', tp)}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-ready dict of a config dataclass (tuples become lists)."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, dict):
            v = dict(v)
        out[f.name] = v
    return out


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build ``cls`` from a dict; unknown keys and ill-typed values raise ``ConfigError``."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    kwargs = {k: _check_type(cls.__name__, k, v, hints[k]) for k, v in data.items()}
    return cls(**kwargs)




def parse_value(text: str) -> Any:
    import yaml

    for conv in (int, float):  # YAML 1.1 reads "1e-4" as a string
        try:
            return conv(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_sets(
    data: dict[str, Any], sets: list[str], model_fields: set[str] | None = None
) -> dict[str, Any]:
    """Apply ``key=value`` overrides to a run-config dict (a copy is returned).

    Keys: ``model``, ``task``, ``section.field`` (sections ``train``, ``graph``, ``split``,
    ``survival``, ``regression``, ``model``
    for the model's own config), or a bare field name when exactly one section has it. Values
    are parsed as YAML scalars (``0.5``, ``true``, ``[1, 2]``).

    Raises:
        ConfigError: malformed item, unknown or ambiguous key.
    """
    from srmil.config import SECTIONS as sections

    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    model_fields = model_fields or set()
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = (s.strip() for s in item.split("=", 1))
        value = parse_value(text)
        if key in ("model", "task"):
            out[key] = str(value)
            continue
        section, _, name = key.rpartition(".")
        if not section:
            owners = [s for s, c in sections.items() if name in {f.name for f in fields(c)}]
            owners += ["model"] if name in model_fields else []
            if len(owners) != 1:
                why = "ambiguous, in " + ", ".join(owners) if owners else "unknown"
                raise ConfigError(f"--set {key}: {why}; write it as section.{name}")
            section = owners[0]
        if section == "model":
            out.setdefault("model_config", {})[name] = value
        elif section in sections:
            known = {f.name for f in fields(sections[section])}
            if name not in known:
                raise ConfigError(
                    f"--set {key}: unknown {section} key; known: {', '.join(sorted(known))}"
                )
            out.setdefault(section, {})[name] = value
        else:
            raise ConfigError(
                f"--set {key}: unknown section {section!r}; choose from: "
                f"{', '.join([*sections, 'model'])}"
            )
    return out


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML or JSON run config (the layout of a run's ``config.json``)."""
    import json
    from pathlib import Path

    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError("no such config file", p)
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse: {exc_line(exc)}", p) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", p)
    data.pop("version", None)
    return data
