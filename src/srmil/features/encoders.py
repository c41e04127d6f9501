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
import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from srmil.errors import ConfigError, SrmilError, first_line
from srmil.registry import Registry

ENCODERS: Registry[Callable[..., Encoder]] = Registry("encoder")

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision / timm IMAGENET_DEFAULT_MEAN
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
WEIGHTS_DIR_ENV = "SRMIL_WEIGHTS_DIR"


def weights_dir() -> Path:
    """Where presets look for weights when none are passed: ``$SRMIL_WEIGHTS_DIR`` or
    ``~/.cache/srmil/weights`` (one sub-folder per preset)."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "srmil" / "weights"


@functools.lru_cache(maxsize=8)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(path: str | os.PathLike | None) -> str:
    """Identity of a weights file, stored as the ``weights_sha256`` attr of ``features``.

    The SHA-256 of the file's bytes (``"none"`` without a file: weight-free or random init).
    Hashed once per process for a given (path, size, mtime): ~1 s for a 1.2 GB ViT-L file, once
    per ``srmil extract`` run, so a resumed job tells other weights of the same architecture and
    file name apart (a name, size or mtime would not: fine-tuned copies share the first two, a
    copy changes the last).
    """
    if path is None:
        return "none"
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise SrmilError(f"cannot read weights file: {exc.strerror or exc}", p) from None
    return _sha256_of(os.fspath(p.resolve()), st.st_size, st.st_mtime_ns)


# --------------------------------------------------------------------------------------------
# Preprocessing (picklable: runs in DataLoader workers or on the device)


@dataclass(frozen=True)
class Preprocess:
    """uint8 RGB patches -> normalised float tensor.

    The patch is resized to ``read_size`` (when it is not that size already), centre-cropped to
    ``input_size`` and normalised with ``mean``/``std`` (none for ``None``).
    """

    input_size: int
    read_size: int
    mean: tuple[float, float, float] | None = IMAGENET_MEAN
    std: tuple[float, float, float] | None = IMAGENET_STD

    def __call__(self, patches: np.ndarray | Tensor) -> Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, input_size, input_size) float32, on the input's device."""
        x = torch.as_tensor(patches)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"patches must be (B, H, W, 3) RGB, got {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)
        if x.shape[-2:] != (self.read_size, self.read_size):
            x = nn.functional.interpolate(x, size=(self.read_size, self.read_size),
                                          mode="bilinear", antialias=True, align_corners=False)
            x = x.clamp_(0.0, 1.0)
        if self.input_size != self.read_size:
            top = (self.read_size - self.input_size) // 2
            x = x[..., top:top + self.input_size, top:top + self.input_size]
        if self.mean is not None and self.std is not None:
            mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x.contiguous()  # (B, 3, S, S)


class Encoder(nn.Module):
    """A patch encoder: ``preprocess`` uint8 patches, then ``forward`` to (B, dim) features.

    Attributes:
        name: registry name; also the ``features_<name>`` folder and the ``encoder`` attr.
        dim: feature dimension D.
        input_size: side in pixels of the square the network sees.
        read_size: side the patch is read at before the centre crop to ``input_size``.
        mean, std: RGB normalisation (``None``: none).
        weights: the weights file loaded, or ``None`` (weight-free or random init).
    """

    def __init__(self, name: str, dim: int, input_size: int,
                 mean: tuple[float, float, float] | None = IMAGENET_MEAN,
                 std: tuple[float, float, float] | None = IMAGENET_STD,
                 read_size: int | None = None, weights: str | None = None) -> None:
        super().__init__()
        self.name = name
        self.dim = int(dim)
        self.input_size = int(input_size)
        self.read_size = int(read_size or input_size)
        self.mean = mean
        self.std = std
        self.weights = weights
        # a buffer, so that ``.to(device)`` tells extract_slide where the encoder lives
        self.register_buffer("_device_probe", torch.zeros(()), persistent=False)

    @property
    def transform(self) -> Preprocess:
        return Preprocess(self.input_size, self.read_size, self.mean, self.std)

    @property
    def device(self) -> torch.device:
        return self._device_probe.device

    def preprocess(self, patches: np.ndarray | Tensor) -> Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, input_size, input_size) float."""
        return self.transform(patches)

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, dim={self.dim}, input_size={self.input_size}, "
                f"read_size={self.read_size}, weights={self.weights!r}")


# --------------------------------------------------------------------------------------------
# timm encoders


class TimmEncoder(Encoder):
    """A timm network as a patch encoder.

    Pooling:
        ``head``: the model's own pooled output (``num_classes=0``), e.g. the class token.
        ``cls_mean``: class token concatenated with the mean of the patch tokens (register and
        class tokens excluded), Virchow's embedding: (B, 2·C).
    """

    def __init__(self, model: nn.Module, pool: str = "head", channels_last: bool | None = None,
                 **kw: Any) -> None:
        super().__init__(**kw)
        if pool not in ("head", "cls_mean"):
            raise ValueError(f"unknown pooling {pool!r}")
        self.model = model
        self.pool = pool
        # CNNs run ~1.7× faster on the CPU (oneDNN) in channels-last layout; ViTs gain nothing
        self.channels_last = (not hasattr(model, "patch_embed")) if channels_last is None \
            else channels_last
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) -> (B, dim)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self.model(x)
        if self.pool == "cls_mean":  # y: (B, T, C) tokens
            n_prefix = int(getattr(self.model, "num_prefix_tokens", 1))
            y = torch.cat([y[:, 0], y[:, n_prefix:].mean(1)], dim=-1)  # (B, 2C)
        return y.flatten(1)  # (B, dim)


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
    """A timm model without weights; ``HF_HUB_OFFLINE=1`` only while timm builds it (belt and
    braces: ``pretrained=False``), the caller's environment is restored afterwards."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import timm

        base = arch.split(".")[0]
        if not timm.is_model(base):
            raise ConfigError(f"unknown timm architecture {arch!r} (see timm.list_models())")
        try:
            return timm.create_model(arch, pretrained=False, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"timm {arch!r} does not accept these options: {exc}") from None
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


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


# --------------------------------------------------------------------------------------------
# Weights files


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of a weights file, unwrapped from ``state_dict``/``model`` and ``module.``.

    Raises:
        SrmilError: unknown suffix, unreadable file, a pickle that ``weights_only`` refuses, or
            no tensors.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise SrmilError(f"cannot read as safetensors: {exc}", path) from None
    elif suffix in TORCH_SUFFIXES:
        from pickle import UnpicklingError  # only the exception weights_only raises: no unpickling

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except UnpicklingError as exc:
            first = first_line(str(exc)) or "refused"
            raise SrmilError("refused by torch.load(weights_only=True) (a pickled object, not "
                             f"a state dict): {first}", path) from None
        except (RuntimeError, OSError, EOFError) as exc:
            first = first_line(str(exc)) or type(exc).__name__
            raise SrmilError(f"cannot read as a torch file: {first}", path) from None
    else:
        raise SrmilError(f"unknown weights file type {suffix!r}; use .safetensors or "
                         f"{'/'.join(TORCH_SUFFIXES)}", path)
    for key in ("state_dict", "model_state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise SrmilError(f"holds a {type(obj).__name__}, not a state dict", path)
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not sd:
        raise SrmilError("holds no tensors", path)
    if all(k.startswith("module.") for k in sd):  # DataParallel / DDP
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _strip_common_prefix(sd: dict[str, Tensor], model_keys: set[str]) -> dict[str, Tensor]:
    """Drop a wrapper prefix (``model.``, ``backbone.``, ``encoder.``) shared by every key,
    when that makes the keys fit and the model itself has no such prefix."""
    for prefix in ("model.", "backbone.", "encoder.", "trunk."):
        if all(k.startswith(prefix) for k in sd) and not any(
                k.startswith(prefix) for k in model_keys):
            return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the classifier timm would drop for ``num_classes=0``."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    if isinstance(names, str):
        names = (names,)
    return tuple(f"{n}." for n in names)


def _few(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", … ({len(keys) - n} more)" if len(keys) > n else "")


def load_weights(model: nn.Module, path: str | os.PathLike, *,
                 ignore_keys: tuple[str, ...] = (), what: str = "encoder") -> None:
    """Load a local weights file into ``model`` strictly.

    Keys under ``ignore_keys`` prefixes (and classifier keys the head-less model lacks) are
    dropped on purpose; everything else must match by name and shape.

    Raises:
        SrmilError: one line naming up to five missing, unexpected and mis-shaped keys.
    """
    path = Path(path)
    sd = read_state_dict(path)
    own = model.state_dict()
    sd = _strip_common_prefix(sd, set(own))
    drop = tuple(ignore_keys) + _classifier_prefixes(model)
    sd = {k: v for k, v in sd.items()
          if not (k not in own and any(k.startswith(p) for p in drop))
          and not any(k.startswith(p) for p in ignore_keys)}
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own)
    shapes = sorted(
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_few(unexpected)})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape ({_few(shapes)})")
        raise SrmilError(f"weights do not fit {what}: {'; '.join(parts)}", path)
    model.load_state_dict(sd, strict=True)


# --------------------------------------------------------------------------------------------
# stain_stats: weight-free H&E features


def _stain_feature_names() -> tuple[str, ...]:
    names = []
    for ch in ("h", "e", "d", "od"):
        names += [f"{ch}_{s}" for s in ("mean", "std", "p10", "p50", "p90")]
    names.append("tissue_fraction")
    names += [f"rgb_{c}_{s}" for s in ("mean", "std") for c in "rgb"]
    for d in StainStats.GLCM_DISTANCES:
        names += [f"glcm_h_d{d}_{p}" for p in StainStats.GLCM_PROPS]
    names += ["grad_h_mean", "grad_e_mean"]
    return tuple(names)


class StainStats(Encoder):
    """Weight-free H&E patch features: stain densities, colour, and haematoxylin texture.

    Colour deconvolution as ``skimage.color.rgb2hed`` (Ruifrok & Johnston 2001; the same
    matrix), computed in torch for whole batches. Tissue pixels are those with OD > 0.15 (the
    usual background threshold); every feature but the tissue fraction is computed over them
    only, so that it describes the tissue and not how much background the patch holds (a patch
    with under ``MIN_TISSUE`` tissue uses all its pixels). For each of haematoxylin (H), eosin
    (E), DAB residual (D) and mean optical density over RGB (OD = -log10((I·255 + 1) / 256)):
    mean, std and the 10/50/90th percentiles (20); the tissue fraction (1); RGB mean and std (6);
    grey-level co-occurrence texture of the H channel quantised to 8 fixed levels over
    [0, H_MAX], at distances 1 and 4, angles 0° and 90° averaged, symmetric and normalised as
    ``skimage.feature.graycomatrix``, counting pairs of two tissue pixels: contrast,
    dissimilarity, homogeneity, energy, correlation (10); mean gradient magnitude of H and E
    (2). 39 features, deterministic, in ``FEATURE_NAMES`` order.
    """

    GLCM_LEVELS = 8
    GLCM_DISTANCES = (1, 4)
    GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
    H_MAX = 0.3  # ~99th percentile of rgb2hed H over tissue of the CMU-1 H&E fixture slide
    OD_TISSUE = 0.15
    MIN_TISSUE = 0.05  # below this tissue fraction (~2500 px of 224²) stats use every pixel
    HIST_BINS = 4096

    def __init__(self, input_size: int = 224) -> None:
        super().__init__(name="stain_stats", dim=len(FEATURE_NAMES), input_size=input_size,
                         mean=None, std=None)
        from skimage.color.colorconv import hed_from_rgb

        m = torch.tensor(hed_from_rgb, dtype=torch.float32)
        self.register_buffer("hed_from_rgb", m, persistent=False)
        # largest possible H, E, D (optical densities in [0, 1] for uint8 input) and OD
        hed_max = m.clamp_min(0).sum(0)
        od_max = torch.tensor([math.log10(256.0)])
        self.register_buffer("channel_max", torch.cat([hed_max, od_max]), persistent=False)

    def hed(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) RGB in [0, 1] -> (B, 3, S, S) H, E, D as ``skimage.color.rgb2hed``."""
        log_rgb = torch.log(x.clamp_min(1e-6))  # (B, 3, S, S)
        m = self.hed_from_rgb / math.log(1e-6)  # skimage divides by log(1e-6) first
        return torch.einsum("bchw,cd->bdhw", log_rgb, m).clamp_min_(0.0)

    @staticmethod
    def _mean_std(v: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, P) values, (B, P) 0/1 pixel weights -> mean and std (B, C) over the pixels."""
        n = w.sum(-1).clamp_min(1.0).view(-1, 1)  # (B, 1)
        w = w.unsqueeze(1)  # (B, 1, P)
        mean = (v * w).sum(-1) / n  # (B, C)
        var = ((v - mean.unsqueeze(-1)) ** 2 * w).sum(-1) / n
        return mean, var.sqrt()

    def _stats(self, v: Tensor, w: Tensor | None = None) -> Tensor:
        """(B, 4, P) H, E, D, OD values -> (B, 4, 5) mean, std, p10, p50, p90 over the pixels of
        weight 1 in ``w`` (B, P) (``None``: all).

        Percentiles from a fixed 4096-bin histogram over each channel's full range (bin
        centres, so within half a bin of the exact nearest-rank value): one pass, no sort.
        """
        b, c, p = v.shape
        if w is None:
            w = torch.ones(b, p, device=v.device)
        bins = self.HIST_BINS
        hi = self.channel_max.view(1, c, 1)
        idx = (v * (bins / hi)).long().clamp_(0, bins - 1)  # (B, C, P)
        idx += torch.arange(b * c, device=v.device).view(b, c, 1) * bins
        weights = w.unsqueeze(1).expand(b, c, p).flatten()  # (B·C·P,)
        counts = torch.bincount(idx.flatten(), weights=weights, minlength=b * c * bins)
        cdf = counts.view(b, c, bins).cumsum(-1)  # (B, C, bins)
        n = w.sum(-1).round().view(b, 1, 1)  # (B, 1, 1) pixels counted
        q = []
        for f in (0.1, 0.5, 0.9):
            rank = (f * (n - 1)).round().clamp(min=0) + 1  # nearest rank, 1-based
            first = (cdf < rank - 0.5).sum(-1)  # (B, C) first bin holding that rank
            q.append((first.float() + 0.5) / bins * hi.squeeze(-1))
        mean, std = self._mean_std(v, w)
        return torch.stack([mean, std, *q], dim=-1)

    def glcm(self, q: Tensor, distance: int, w: Tensor | None = None) -> Tensor:
        """(B, S, S) int levels -> (B, 2, L, L) symmetric normalised co-occurrence matrices for
        angles 0 (horizontal) and 90° (vertical) at ``distance``, counting the pairs of two
        pixels of weight 1 in ``w`` (B, S, S) (``None``: all pairs)."""
        b, levels = q.shape[0], self.GLCM_LEVELS
        mats = []
        for a, c, wa, wc in (
                (q[:, :, :-distance], q[:, :, distance:], (slice(None), slice(None, -distance)),
                 (slice(None), slice(distance, None))),
                (q[:, :-distance, :], q[:, distance:, :], (slice(None, -distance), slice(None)),
                 (slice(distance, None), slice(None)))):
            idx = (a * levels + c).reshape(b, -1)  # (B, P)
            idx = idx + torch.arange(b, device=q.device).unsqueeze(1) * levels * levels
            pair_w = None if w is None else (w[:, wa[0], wa[1]] * w[:, wc[0], wc[1]]).flatten()
            m = torch.bincount(idx.flatten(), weights=pair_w,
                               minlength=b * levels * levels).float()
            m = m.view(b, levels, levels)
            m = m + m.transpose(1, 2)  # symmetric
            mats.append(m / m.sum((1, 2), keepdim=True).clamp_min(1.0))
        return torch.stack(mats, dim=1)  # (B, 2, L, L)

    def glcm_props(self, p: Tensor) -> Tensor:
        """(B, A, L, L) normalised GLCMs -> (B, 5) props averaged over angles (skimage's
        ``graycoprops`` definitions)."""
        levels = p.shape[-1]
        i = torch.arange(levels, device=p.device, dtype=p.dtype).view(levels, 1)
        j = i.view(1, levels)
        contrast = (p * (i - j) ** 2).sum((-2, -1))
        dissimilarity = (p * (i - j).abs()).sum((-2, -1))
        homogeneity = (p / (1.0 + (i - j) ** 2)).sum((-2, -1))
        energy = (p ** 2).sum((-2, -1)).sqrt()
        mu_i = (p * i).sum((-2, -1), keepdim=True)
        mu_j = (p * j).sum((-2, -1), keepdim=True)
        sd_i = (p * (i - mu_i) ** 2).sum((-2, -1)).sqrt()
        sd_j = (p * (j - mu_j) ** 2).sum((-2, -1)).sqrt()
        cov = (p * (i - mu_i) * (j - mu_j)).sum((-2, -1))
        flat = (sd_i < 1e-15) | (sd_j < 1e-15)  # skimage: correlation 1 for a flat patch
        correlation = torch.where(flat, torch.ones_like(cov), cov / (sd_i * sd_j).clamp_min(
            1e-30))
        props = torch.stack([contrast, dissimilarity, homogeneity, energy, correlation], -1)
        return props.mean(1)  # (B, 5)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) RGB in [0, 1] (``preprocess`` output) -> (B, 39)."""
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            b = x.shape[0]
            hed = self.hed(x)  # (B, 3, S, S)
            # mean over RGB of -log10((I·255 + 1) / 256)
            od = math.log10(256.0) - torch.log10(x * 255.0 + 1.0).mean(1, keepdim=True)
            dens = torch.cat([hed, od], 1).flatten(2)  # (B, 4, P)
            is_tissue = od.flatten(1) > self.OD_TISSUE  # (B, P)
            tissue = is_tissue.float().mean(1, keepdim=True)  # (B, 1)
            # pixels the statistics are over: tissue, or all where there is almost none
            w = (is_tissue | (tissue < self.MIN_TISSUE)).float()  # (B, P)
            stats = self._stats(dens, w).flatten(1)  # (B, 20)
            colour = torch.cat(self._mean_std(x.flatten(2), w), 1)  # (B, 6)
            h = hed[:, 0]  # (B, S, S)
            w_img = w.view_as(h)  # (B, S, S)
            q = (h / self.H_MAX * self.GLCM_LEVELS).floor().clamp(0, self.GLCM_LEVELS - 1).long()
            texture = torch.cat([self.glcm_props(self.glcm(q, d, w_img))
                                 for d in self.GLCM_DISTANCES], 1)  # (B, 10)
            he = hed[:, :2]  # (B, 2, S, S)
            gx = he[..., :, 1:] - he[..., :, :-1]
            gy = he[..., 1:, :] - he[..., :-1, :]
            mag = (gx[..., :-1, :] ** 2 + gy[..., :, :-1] ** 2).sqrt().flatten(2)  # (B, 2, P')
            grad = self._mean_std(mag, w_img[:, :-1, :-1].flatten(1))[0]  # (B, 2)
            out = torch.cat([stats, tissue, colour, texture, grad], 1)  # (B, 39)
        return out.reshape(b, -1)


FEATURE_NAMES = _stain_feature_names()


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


__all__ = [
    "ENCODERS", "Encoder", "EncoderPreset", "FEATURE_NAMES", "PRESETS", "Preprocess",
    "StainStats", "TimmEncoder", "build_timm_encoder", "create_encoder", "describe_encoders",
    "load_weights", "read_state_dict", "weights_dir", "weights_sha256",
]
