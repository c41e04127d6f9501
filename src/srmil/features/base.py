"""Encoder base classes: preprocessing, the ``Encoder`` contract, timm backbones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision / timm IMAGENET_DEFAULT_MEAN
IMAGENET_STD = (0.229, 0.224, 0.225)


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
