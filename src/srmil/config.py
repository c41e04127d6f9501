"""Every config dataclass and every default, in one place.

Defaults marked *METHOD.md* are the reference behaviour described in ``shared/METHOD.md``.
Configs are frozen; ``to_dict`` / ``from_dict`` give JSON round trips, and unknown keys are an
error (``ConfigError``) so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from srmil.errors import ConfigError

C = TypeVar("C")


@dataclass(frozen=True)
class GraphConfig:
    """Spatial grid graph over the patches of one slide (METHOD.md, Graph)."""

    window: int = 2  # METHOD.md: edge if grid distance <= window·√2 (the 5×5 neighbourhood)
    step: float | None = None  # None: from h5 attrs, cross-checked with coordinates; never 224
    self_loops: bool = True  # METHOD.md: a self loop on every patch node
    step_tolerance: float = 0.02  # relative disagreement allowed between attrs and coordinates
    off_grid_tolerance: float = 0.05  # fraction of a step a coordinate may sit off its grid


@dataclass(frozen=True)
class SplitConfig:
    """Patient-level stratified k-fold with a validation part carved from each training part."""

    folds: int = 5
    val_fraction: float = 0.2  # of the cases left for training in each fold
    seed: int = 0


@dataclass(frozen=True)
class SynthConfig:
    """Built-in synthetic cohort (``srmil synth``), calibrated to be learnable.

    Patch features are ``tissue prototype + noise (+ tumour shift)``. The ``spatial`` variant puts
    the same number of tumour-like patches in every slide, clustered in one class and scattered
    in the other, so only the arrangement tells the classes apart. ``instance`` puts them only in
    positive slides.
    """

    variant: str = "spatial"  # spatial | instance
    slides: int = 40
    dim: int = 32
    seed: int = 0
    min_patches: int = 200
    max_patches: int = 800
    tissue_types: int = 4
    tissue_spread: float = 1.0  # norm of the offsets between tissue-type prototypes
    noise: float = 1.0  # per-dimension std of patch noise
    tumour_shift: float = 3.0  # norm of the tumour direction added to tumour-like patches
    tumour_fraction: tuple[float, float] = (0.08, 0.15)  # range of tumour-like patch share
    slides_per_case: int = 2  # at most; about a third of the cases get a second slide
    mixed_magnification: bool = True  # half the slides "scanned at 40×" (level-0 step 448)
    patch_size: int = 224
    float16: bool = True


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
