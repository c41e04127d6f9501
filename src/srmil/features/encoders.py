"""Patch encoders: one registry, weights only ever from a local file.

``create_encoder(name, weights)`` builds one of

- a **preset** (``ENCODERS.names()``): the field's common encoders, each with the architecture,
  input size, normalisation and pooling of its public model card. srmil never downloads weights:
  the user fetches the file (most are gated: request access on the model card) and passes
  ``--weights FILE`` or puts it at ``$SRMIL_WEIGHTS_DIR/<preset>/<file>``
  (default ``~/.cache/srmil/weights``);
- ``timm:<architecture>``: any timm architecture (``pretrained=False``) with the weights of a
  local file (required), input size and normalisation from timm's config for that name;
- ``stain_stats``: weight-free, hand-crafted H&E features (stain densities and texture), so a
  run with no weights at hand still produces features that mean something.

Weights files: ``.safetensors`` (read with safetensors) or a torch file ``.pt/.pth/.bin/.ckpt``
read with ``torch.load(weights_only=True)``, never a pickle. Wrappers (``state_dict``, ``model``,
``module.`` prefixes) are unwrapped; a file of another architecture is one line naming the keys
that do not fit.

Example:
    >>> enc = create_encoder("stain_stats")
    >>> enc.dim, enc.input_size
    (39, 224)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from srmil.errors import ConfigError, SrmilError
from srmil.features.base import IMAGENET_MEAN, IMAGENET_STD, Encoder, Preprocess, TimmEncoder
from srmil.features.presets import PRESETS, EncoderPreset, _build_preset, build_timm_encoder
from srmil.features.stain import FEATURE_NAMES, StainStats
from srmil.features.weights import (
    TORCH_SUFFIXES,
    WEIGHTS_DIR_ENV,
    load_weights,
    read_state_dict,
    weights_dir,
    weights_sha256,
)
from srmil.registry import Registry

ENCODERS: Registry[Callable[..., Encoder]] = Registry("encoder")

# --------------------------------------------------------------------------------------------
# Registry and factory


def _register_presets() -> None:
    for name, preset in PRESETS.items():
        ENCODERS.register(name)(functools.partial(_build_preset, preset))


def _build_stain_stats(weights: str | os.PathLike | None = None, *, allow_random: bool = False,
                       input_size: int = 224) -> StainStats:
    if weights is not None:
        raise SrmilError("encoder 'stain_stats' is weight-free; drop --weights", weights)
    return StainStats(input_size=input_size)


_register_presets()
ENCODERS.register("stain_stats")(_build_stain_stats)


def create_encoder(name: str, weights: str | os.PathLike | None = None, *,
                   allow_random: bool = False, **kw: Any) -> Encoder:
    """Build an encoder by name, in eval mode, on the CPU.

    Args:
        name: a preset (``ENCODERS.names()``), ``stain_stats``, or ``timm:<architecture>``.
        weights: local weights file; presets also look in ``weights_dir()/<name>/``.
        allow_random: random weights when none are found (tests and benchmarks only; the CLI
            never sets it).
        **kw: ``timm:`` form only: ``input_size``, ``mean``, ``std`` and timm options.

    Raises:
        SrmilError: unknown name (lists the choices), weights missing (says where to put
            them), or weights of another architecture (names the keys).
    """
    if name.lower().startswith("timm:"):
        arch = name[len("timm:"):]
        if not arch:
            raise ConfigError("encoder 'timm:' needs an architecture, e.g. timm:resnet50")
        return build_timm_encoder(arch, weights, allow_random=allow_random, **kw)
    try:
        factory = ENCODERS.get(name)
    except ConfigError as exc:
        raise ConfigError(f"{exc}, or timm:<architecture> with --weights") from None
    if kw:
        raise ConfigError(f"encoder {name!r} takes no options ({', '.join(sorted(kw))}); "
                          "options are for timm:<architecture>")
    enc = factory(weights, allow_random=allow_random)
    return enc.eval()


def describe_encoders() -> list[dict[str, Any]]:
    """One row per registered encoder (for ``srmil`` listings and the README table)."""
    rows = []
    for name in ENCODERS.names():
        p = PRESETS.get(name)
        if p is None:
            rows.append({"name": name, "architecture": "hand-crafted (skimage rgb2hed, GLCM)",
                         "dim": len(FEATURE_NAMES), "input": 224, "normalisation": "none",
                         "weights": "none needed"})
        else:
            rows.append({"name": name, "architecture": f"timm {p.arch}", "dim": p.dim,
                         "input": p.input_size if p.read_size is None
                         else f"{p.read_size}→{p.input_size}",
                         "normalisation": p.normalisation, "weights": p.source})
    return rows


# the module split along its seams (base, presets, weights, stain); every name stays here
__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "TORCH_SUFFIXES", "WEIGHTS_DIR_ENV",
    "ENCODERS", "Encoder", "EncoderPreset", "FEATURE_NAMES", "PRESETS", "Preprocess",
    "StainStats", "TimmEncoder", "build_timm_encoder", "create_encoder", "describe_encoders",
    "load_weights", "read_state_dict", "weights_dir", "weights_sha256",
]
