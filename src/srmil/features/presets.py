"""Encoder presets: the field's common encoders as their model cards describe them, and
``timm:<architecture>`` built with local weights (``pretrained=False``: nothing asks the hub)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from srmil.errors import ConfigError, SrmilError
from srmil.features.base import IMAGENET_MEAN, IMAGENET_STD, TimmEncoder
from srmil.features.weights import load_weights, weights_dir


@dataclass(frozen=True)
class EncoderPreset:
    """A named encoder: its timm architecture and what its model card says about inputs.

    ``timm_kwargs`` name layers by string (``swiglu_packed``, ``silu``) so that listing presets
    never imports timm.
    """

    name: str
    arch: str
    dim: int
    input_size: int
    source: str  # model card the weights come from (user downloads them himself)
    files: tuple[str, ...]  # file names on the model card, looked up in weights_dir()/name/
    description: str
    timm_kwargs: tuple[tuple[str, Any], ...] = ()
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    read_size: int | None = None
    pool: str = "head"
    truncate: str | None = None  # "layer3": ResNet without layer4 (1024-D after pooling)
    ignore_keys: tuple[str, ...] = ()  # prefixes of checkpoint keys dropped on purpose
    licence: str = ""

    @property
    def normalisation(self) -> str:
        if self.mean == IMAGENET_MEAN and self.std == IMAGENET_STD:
            return "ImageNet"
        return f"mean {self.mean}, std {self.std}"


_LAYERS = {"swiglu_packed": ("timm.layers", "SwiGLUPacked"), "silu": ("torch.nn", "SiLU")}


def _resolve_kwargs(kwargs: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    import importlib

    out = {}
    for k, v in kwargs:
        if isinstance(v, str) and v in _LAYERS:
            mod, attr = _LAYERS[v]
            v = getattr(importlib.import_module(mod), attr)
        out[k] = v
    return out


# Sources: each public model card (and its config.json) named in ``source``; cross-checked with
# the parameter counts the cards state (tests/features/test_encoders.py builds each on the meta
# device and counts). Input size / resize / normalisation as the cards' eval transforms.
PRESETS: dict[str, EncoderPreset] = {p.name: p for p in (
    EncoderPreset(
        name="resnet50_trunc", arch="resnet50", dim=1024, input_size=224,
        source="https://huggingface.co/timm/resnet50.tv_in1k",
        files=("model.safetensors", "pytorch_model.bin"),
        description="ResNet-50 truncated after layer3, global average pool (CLAM's baseline); "
                    "any timm/torchvision ResNet-50 ImageNet state dict (layer4/fc ignored)",
        timm_kwargs=(("num_classes", 0),), truncate="layer3", ignore_keys=("layer4.", "fc."),
        licence="BSD-3-Clause (torchvision weights)",
    ),
    EncoderPreset(
        # MahmoodLab/UNI card: timm vit_large_patch16_224, img_size 224, patch_size 16,
        # init_values 1e-5, num_classes 0, dynamic_img_size; Resize(224), ImageNet mean/std
        name="uni", arch="vit_large_patch16_224", dim=1024, input_size=224,
        source="https://huggingface.co/MahmoodLab/UNI", files=("pytorch_model.bin",),
        description="UNI ViT-L/16, class token",
        timm_kwargs=(("img_size", 224), ("patch_size", 16), ("init_values", 1e-5),
                     ("num_classes", 0), ("dynamic_img_size", True)),
        licence="CC-BY-NC-ND-4.0, gated",
    ),
    EncoderPreset(
        # MahmoodLab/UNI2-h card: vit_giant_patch14_224 with depth 24, 24 heads, embed 1536,
        # SwiGLUPacked + SiLU, mlp_ratio 2.66667*2, 8 register tokens, no_embed_class
        name="uni2", arch="vit_giant_patch14_224", dim=1536, input_size=224,
        source="https://huggingface.co/MahmoodLab/UNI2-h", files=("pytorch_model.bin",),
        description="UNI2-h ViT-H/14 (SwiGLU, 8 registers), class token",
        timm_kwargs=(("img_size", 224), ("patch_size", 14), ("depth", 24), ("num_heads", 24),
                     ("init_values", 1e-5), ("embed_dim", 1536), ("mlp_ratio", 2.66667 * 2),
                     ("num_classes", 0), ("no_embed_class", True),
                     ("mlp_layer", "swiglu_packed"), ("act_layer", "silu"),
                     ("reg_tokens", 8), ("dynamic_img_size", True)),
        licence="CC-BY-NC-ND-4.0, gated",
    ),
    EncoderPreset(
        # paige-ai/Virchow card + config.json: vit_huge_patch14_224, init_values 1e-5,
        # mlp_ratio 5.3375, SwiGLUPacked + SiLU, global_pool ""; embedding = concat(class token,
        # mean of the 256 patch tokens) = 2560; Resize(224, bicubic), ImageNet mean/std
        name="virchow", arch="vit_huge_patch14_224", dim=2560, input_size=224,
        source="https://huggingface.co/paige-ai/Virchow",
        files=("model.safetensors", "pytorch_model.bin"),
        description="Virchow ViT-H/14 (SwiGLU), class token ⊕ mean patch token",
        timm_kwargs=(("img_size", 224), ("init_values", 1e-5), ("num_classes", 0),
                     ("mlp_ratio", 5.3375), ("global_pool", ""), ("dynamic_img_size", True),
                     ("mlp_layer", "swiglu_packed"), ("act_layer", "silu")),
        pool="cls_mean", licence="Apache-2.0, gated",
    ),
    EncoderPreset(
        # paige-ai/Virchow2 card: as Virchow plus reg_tokens 4; patch tokens are tokens 5: (the
        # 4 registers after the class token are left out of the mean)
        name="virchow2", arch="vit_huge_patch14_224", dim=2560, input_size=224,
        source="https://huggingface.co/paige-ai/Virchow2",
        files=("model.safetensors", "pytorch_model.bin"),
        description="Virchow2 ViT-H/14 (SwiGLU, 4 registers), class token ⊕ mean patch token",
        timm_kwargs=(("img_size", 224), ("init_values", 1e-5), ("num_classes", 0),
                     ("reg_tokens", 4), ("mlp_ratio", 5.3375), ("global_pool", ""),
                     ("dynamic_img_size", True), ("mlp_layer", "swiglu_packed"),
                     ("act_layer", "silu")),
        pool="cls_mean", licence="CC-BY-NC-ND-4.0, gated",
    ),
    EncoderPreset(
        # prov-gigapath/prov-gigapath config.json: vit_giant_patch14_dinov2 with patch_size 16,
        # img_size 224, embed 1536, depth 40, 24 heads, mlp_ratio 5.33334 (timm's DINOv2-g
        # SwiGLU), init_values 1e-5; Resize(256, bicubic) + CenterCrop(224), ImageNet mean/std
        name="gigapath", arch="vit_giant_patch14_dinov2", dim=1536, input_size=224,
        read_size=256, source="https://huggingface.co/prov-gigapath/prov-gigapath",
        files=("pytorch_model.bin",),
        description="Prov-GigaPath tile encoder ViT-g/16, class token",
        timm_kwargs=(("img_size", 224), ("in_chans", 3), ("patch_size", 16),
                     ("embed_dim", 1536), ("depth", 40), ("num_heads", 24),
                     ("init_values", 1e-5), ("mlp_ratio", 5.33334), ("num_classes", 0),
                     ("dynamic_img_size", True)),
        licence="Apache-2.0, gated",
    ),
    EncoderPreset(
        # bioptimus/H-optimus-0 card: vit_giant_patch14_reg4_dinov2, img_size 224,
        # init_values 1e-5, global_pool token; its own mean/std below
        name="hoptimus0", arch="vit_giant_patch14_reg4_dinov2", dim=1536, input_size=224,
        source="https://huggingface.co/bioptimus/H-optimus-0",
        files=("model.safetensors", "pytorch_model.bin"),
        description="H-optimus-0 ViT-g/14 (4 registers), class token",
        timm_kwargs=(("img_size", 224), ("init_values", 1e-5), ("global_pool", "token"),
                     ("num_classes", 0), ("dynamic_img_size", True)),
        mean=(0.707223, 0.578729, 0.703617), std=(0.211883, 0.230117, 0.177517),
        licence="Apache-2.0, gated",
    ),
)}


def _create_timm(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    """A timm model without weights. Offline by construction: ``pretrained=False`` means timm
    asks the hub for nothing (weights come from a local file afterwards), whatever
    ``HF_HUB_OFFLINE`` says; the data config is timm's built-in table for ``arch``."""
    import timm

    base = arch.split(".")[0]
    if not timm.is_model(base):
        raise ConfigError(f"unknown timm architecture {arch!r} (see timm.list_models())")
    try:
        return timm.create_model(arch, pretrained=False, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"timm {arch!r} does not accept these options: {exc}") from None


def _truncate(model: nn.Module, truncate: str | None) -> nn.Module:
    if truncate == "layer3":  # ResNet: drop layer4; the head's global average pool stays
        model.layer4 = nn.Identity()
    elif truncate is not None:
        raise ValueError(f"unknown truncation {truncate!r}")
    return model


def _missing_weights(preset: EncoderPreset) -> SrmilError:
    where = weights_dir() / preset.name / preset.files[0]
    gated = " (gated: request access there)" if "gated" in preset.licence else ""
    return SrmilError(
        f"encoder {preset.name!r} needs weights and srmil never downloads any: get "
        f"{preset.files[0]} from {preset.source}{gated} and put it at {where}, "
        "or pass --weights FILE"
    )


def _find_default_weights(preset: EncoderPreset) -> Path | None:
    folder = weights_dir() / preset.name
    for name in preset.files:
        if (folder / name).is_file():
            return folder / name
    return None


def _in_folder(path: Path, names: tuple[str, ...]) -> Path:
    """A weights file given as its folder (e.g. a downloaded model repository): the first of
    ``names`` in it, else the path as given."""
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
    return path


def _build_preset(preset: EncoderPreset, weights: str | os.PathLike | None = None, *,
                  allow_random: bool = False) -> TimmEncoder:
    """Build ``preset``; ``allow_random`` (tests, benchmarks) permits random weights."""
    path = (_in_folder(Path(weights).expanduser(), preset.files) if weights is not None
            else _find_default_weights(preset))
    if path is None and not allow_random:
        raise _missing_weights(preset)
    if path is not None and not path.is_file():
        raise SrmilError(f"weights file not found (encoder {preset.name!r} expects "
                         f"{preset.files[0]} from {preset.source})", path)
    model = _truncate(_create_timm(preset.arch, _resolve_kwargs(preset.timm_kwargs)),
                      preset.truncate)
    if path is not None:
        load_weights(model, path, ignore_keys=preset.ignore_keys,
                     what=f"encoder {preset.name!r} (timm {preset.arch})")
    model.eval()
    return TimmEncoder(model, pool=preset.pool, name=preset.name, dim=preset.dim,
                       input_size=preset.input_size, read_size=preset.read_size,
                       mean=preset.mean, std=preset.std,
                       weights=None if path is None else str(path))


def build_timm_encoder(arch: str, weights: str | os.PathLike | None, *,
                       allow_random: bool = False, input_size: int | None = None,
                       mean: tuple[float, float, float] | None = None,
                       std: tuple[float, float, float] | None = None,
                       **timm_kwargs: Any) -> TimmEncoder:
    """Any timm architecture (``timm:<arch>``) with the weights of a local file.

    Input size and normalisation come from timm's pretrained config for ``arch`` (no network)
    unless given. ``timm_kwargs`` go to ``timm.create_model`` (e.g. ``img_size``).
    Classifier weights in the file are ignored: the encoder has ``num_classes=0``.
    """
    name = f"timm-{arch}"
    if weights is None and not allow_random:
        raise SrmilError(f"encoder 'timm:{arch}' needs --weights FILE (a state dict in "
                         ".safetensors or .pt/.pth/.bin); srmil never downloads weights")
    path = None if weights is None else _in_folder(
        Path(weights).expanduser(), ("model.safetensors", "pytorch_model.bin"))
    if path is not None and not path.is_file():
        raise SrmilError(f"weights file not found (encoder 'timm:{arch}')", path)
    model = _create_timm(arch, {"num_classes": 0, **timm_kwargs})
    if path is not None:
        load_weights(model, path, what=f"encoder 'timm:{arch}'")
    model.eval()
    import timm

    cfg = timm.data.resolve_model_data_config(model)
    size = int(input_size or cfg["input_size"][-1])
    dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    return TimmEncoder(model, pool="head", name=name, dim=dim, input_size=size,
                       mean=tuple(mean or cfg["mean"]), std=tuple(std or cfg["std"]),
                       weights=None if path is None else str(path))
