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


def field_descriptions(cls: type) -> dict[str, str]:
    """One-line description of each field of a config dataclass, from its source.

    The comments beside the fields in :mod:`srmil.config` are the descriptions (one source of
    truth): the comment on a field's line, joined with the comment-only lines right below it
    (the aligned continuation lines); a field without one takes its entry of the class
    docstring's ``Attributes:`` section. Base classes are read first, so a subclass that
    redefines a field redefines its description.

    Parsing the source (``ast`` for the fields, ``tokenize`` for the comments) keeps
    ``config.py`` as it reads today; ``field(metadata=...)`` would have rewritten every field.

    Returns:
        field name → description ("" when the field has none).
    """
    import ast
    import inspect
    import io
    import textwrap
    import tokenize

    out: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        try:
            src = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # defined where there is no source (a REPL)
            continue
        lines = src.splitlines()
        comments = {tok.start[0]: tok.string.lstrip("#").strip()
                    for tok in tokenize.generate_tokens(io.StringIO(src).readline)
                    if tok.type == tokenize.COMMENT}
        node = ast.parse(src).body[0]
        attrs = _docstring_attributes(ast.get_docstring(node) or "")  # type: ignore[arg-type]
        for item in node.body:  # type: ignore[attr-defined]
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            name = item.target.id
            text = [comments[r] for r in range(item.lineno, item.end_lineno + 1)
                    if r in comments]
            row = item.end_lineno + 1
            while row in comments and lines[row - 1].lstrip().startswith("#"):
                text.append(comments[row])  # an aligned continuation line
                row += 1
            desc = " ".join(t for t in text if t) or attrs.get(name, "")
            if desc or name not in out:
                out[name] = desc
    return out


def _docstring_attributes(doc: str) -> dict[str, str]:
    """``name: text`` entries of a Google-style ``Attributes:`` section (continuations
    joined)."""
    out: dict[str, str] = {}
    inside, current = False, None
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        if not stripped or (not line.startswith(" ") and stripped.endswith(":")):
            if not stripped and current is None:
                continue
            break
        head, sep, rest = stripped.partition(":")
        if sep and head.isidentifier() and line.startswith("    ") and not line.startswith(
                "        "):
            current = head
            out[head] = rest.strip()
        elif current is not None:
            out[current] += " " + stripped
    return out


def _yaml_value(value: Any) -> str:
    import yaml

    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6)
    return text.strip().removesuffix("...").strip()


def commented_yaml(cfg: Any, indent: int = 0,
                   nested: dict[str, Any] | None = None) -> list[str]:
    """YAML lines of a config dataclass: each field under a comment with its description.

    Args:
        cfg: a config dataclass instance (nested dataclasses become indented sections).
        indent: spaces before each line.
        nested: field name → a config dataclass instance to write for a ``dict`` field (the
            run config's ``model_config`` is the model's own config).

    Returns:
        The lines; ``yaml.safe_load`` of them and :func:`from_dict` give ``cfg`` back.
    """
    pad = " " * indent
    docs = field_descriptions(type(cfg))
    lines: list[str] = []
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        sub = (nested or {}).get(f.name)
        desc = docs.get(f.name, "")
        if sub is not None:
            desc = f"{desc} ({type(sub).__name__})" if desc else type(sub).__name__
        if desc:
            lines.append(f"{pad}# {desc}")
        if dataclasses.is_dataclass(value) or sub is not None:
            section = value if sub is None else sub
            head = (type(section).__doc__ or "").strip().splitlines()
            lines.append(f"{pad}{f.name}:" + (f"  # {head[0]}" if head and not desc else ""))
            lines += commented_yaml(section, indent + 2)
        else:
            lines.append(f"{pad}{f.name}: {_yaml_value(value)}")
    return lines
