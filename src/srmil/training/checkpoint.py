"""Checkpoints that never unpickle: safetensors for weights, ``weights_only=True`` for state.

- ``best.safetensors``: the selected model's weights; metadata holds the model name, input
  dimension, class count, epoch and resolved model config (JSON strings).
- ``last.pt``: model, optimiser, scheduler, RNG states, epoch and history; tensors and plain
  Python types only, so ``torch.load(..., weights_only=True)`` reads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from srmil.errors import SrmilError, exc_line
from srmil.storage import atomic_path, write_failure


def save_weights(path: str | os.PathLike, state: dict[str, torch.Tensor],
                 meta: dict[str, Any]) -> None:
    """Atomically write a state dict and ``meta`` (JSON-encoded values) as safetensors."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    try:
        with atomic_path(path, overwrite=True) as tmp:
            save_file(tensors, str(tmp), metadata={k: json.dumps(v) for k, v in meta.items()})
    except SafetensorError as exc:  # its writer wraps the OS error (disk full, I/O error)
        raise write_failure(path, exc) from None


def read_weights_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a weights file; one-line error when it is missing or corrupt."""
    p = Path(path)
    if not p.is_file():
        raise SrmilError("no such checkpoint", p)
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = f.metadata() or {}
        return {k: json.loads(v) for k, v in raw.items()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise SrmilError(f"not a readable safetensors checkpoint ({exc})", p) from None


def load_weights(path: str | os.PathLike, model: torch.nn.Module) -> dict[str, Any]:
    """Load weights into ``model`` (strict); returns the metadata."""
    meta = read_weights_meta(path)
    try:
        state = load_file(str(path))
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError) as exc:
        msg = exc_line(exc)
        raise SrmilError(f"weights do not fit the model: {msg}", path) from None
    return meta


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Atomically ``torch.save`` a dict of tensors and plain types.

    Raises:
        WriteError: the write failed; the previous file at ``path`` is untouched.
    """
    try:
        with atomic_path(path, overwrite=True) as tmp:
            torch.save(state, tmp)
    except RuntimeError as exc:
        # torch's zip writer reports a full disk as RuntimeError ("unexpected pos"); an object
        # that cannot be serialised is a bug and keeps its traceback
        raise write_failure(path, exc) from None


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(weights_only=True)``; one-line error when missing or corrupt."""
    p = Path(path)
    if not p.is_file():
        raise SrmilError("no such checkpoint", p)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means an unusable checkpoint
        msg = exc_line(exc)
        raise SrmilError(f"not a readable checkpoint ({msg})", p) from None
