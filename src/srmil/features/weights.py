"""Encoder weights: only ever local files, read without unpickling, identified by SHA-256."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from srmil.errors import SrmilError, exc_line

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
            first = exc_line(exc)
            raise SrmilError("refused by torch.load(weights_only=True) (a pickled object, not "
                             f"a state dict): {first}", path) from None
        except (RuntimeError, OSError, EOFError) as exc:
            first = exc_line(exc)
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
