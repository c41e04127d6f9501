"""Per-slide feature extraction: patch file in, TRIDENT feature h5 out.

``extract_slide`` reads the patches of one slide with a ``DataLoader`` (each worker opens the
slide again by path: OpenSlide handles are not shared across processes), runs the encoder in
``torch.inference_mode`` (autocast on CUDA only) and writes, atomically,

    features  (N, D) float32 (float16 on request); attrs ``encoder``, ``name``, ``savetodir``
              and srmil's ``weights_sha256`` (``encoders.weights_sha256``: which weights made
              them, so a resumed job redoes features of other weights)
    coords    (N, 2) int64, level-0 top-left, same rows and order as the patch file; its attrs
              copied from the patch file (TRIDENT: patch_size, patch_size_level0,
              level0_magnification, target_magnification, overlap, name, ...)

so that ``srmil.bags.readers.read_bag`` and TRIDENT-based tools read it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from srmil.errors import SrmilError
from srmil.features.encoders import Encoder, weights_sha256
from srmil.slides.patching import read_patch, read_patches, write_trident_h5
from srmil.slides.readers import SLIDE_READERS, Slide, open_slide

PRECISIONS = {"fp32": np.float32, "fp16": np.float16}


class PatchDataset(Dataset):
    """The patches of one slide as uint8 (read_size, read_size, 3) tensors, with their row.

    Picklable (DataLoader workers under the ``spawn`` start method, the default on macOS and
    Windows): a slide read from a file travels as (path, mpp, reader name) and is opened again
    in the worker on its first read; a slide without a file (in memory) travels as it is.

    Args:
        slide: the open slide (used as is in the main process).
        coords: (N, 2) level-0 top-left (x, y).
        patch_size_level0: patch side at level 0.
        read_size: side the patch is resized to (the encoder's ``read_size``).
    """

    def __init__(self, slide: Slide, coords: np.ndarray, patch_size_level0: int,
                 read_size: int) -> None:
        self.slide: Slide | None = slide
        self.coords = np.asarray(coords, dtype=np.int64)
        self.patch_size_level0 = int(patch_size_level0)
        self.read_size = int(read_size)
        self._inherited: Slide | None = None
        self._source = _slide_source(slide)  # (path, mpp, reader) or None

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        if self.slide is None:  # unpickled or reopened in a worker: open the file now
            path, mpp, reader = self._source  # type: ignore[misc]
            self.slide = open_slide(path, mpp=mpp, reader=reader)
        x, y = self.coords[i]
        patch = read_patch(self.slide, (int(x), int(y)), self.patch_size_level0,
                           self.read_size)  # (S, S, 3) uint8
        return i, torch.from_numpy(np.require(patch, np.uint8, ['C', 'W']))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_inherited"] = None
        if self._source is not None:
            state["slide"] = None  # an OpenSlide handle cannot be pickled: reopen by path
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def reopen(self) -> None:
        """In a forked worker process: open the slide file again (lazily, on the first read),
        by path, with the same reader and pixel size.

        The handle forked from the parent is kept (never used, never closed here) so that its
        finaliser cannot run in the child. A slide of no registered reader or without a file
        (in memory) is shared as it is.
        """
        if self._source is None or self.slide is None:
            return
        self._inherited = self.slide
        self.slide = None


def _slide_source(slide: Slide) -> tuple[Path, float, str] | None:
    """(path, mpp, reader name) to open ``slide`` again, or None (in memory, unknown reader)."""
    path = getattr(slide, "path", None)
    reader = next((name for name, cls in SLIDE_READERS.items() if type(slide) is cls), None)
    if reader is None or path is None or not Path(path).is_file():
        return None
    return Path(path), float(slide.mpp), reader


def _worker_init(_: int) -> None:
    info = get_worker_info()
    if info is not None:
        info.dataset.reopen()


def _positive_int_attr(attrs: dict[str, Any], key: str, path: Path) -> int:
    v = attrs.get(key)
    try:
        out = int(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        out = 0
    if out <= 0:
        raise SrmilError(f"'coords' lacks a positive {key!r} attr (a TRIDENT/srmil patch "
                         "file has it)", path)
    return out


def _write(out_h5: Path, features: np.ndarray, coords: np.ndarray, coords_attrs: dict[str, Any],
           encoder_name: str, weights_id: str, slide_id: str, overwrite: bool) -> None:
    write_trident_h5(out_h5, coords, coords_attrs, features,
                     {"encoder": encoder_name, "name": slide_id,
                      "savetodir": os.fspath(out_h5.parent), "weights_sha256": weights_id},
                     overwrite=overwrite)


def extract_slide(slide: Slide, patches_h5: str | os.PathLike, encoder: Encoder,
                  out_h5: str | os.PathLike, *, batch_size: int = 64, num_workers: int = 2,
                  precision: str = "fp32", progress: bool | None = None, amp: bool = True,
                  overwrite: bool = False, overall: Any = None) -> int:
    """Encode every patch of ``patches_h5`` and write the feature file ``out_h5``.

    The encoder runs where it lives (``encoder.to(device)`` first); on CUDA under autocast
    (float16) unless ``amp`` is false. Features are stored as float32, or float16 with
    ``precision="fp16"``.

    Args:
        slide: the open slide the patch file was made from.
        patches_h5: TRIDENT patch file (``coords`` with ``patch_size_level0`` attrs).
        encoder: from ``create_encoder``.
        out_h5: destination, e.g. ``<job>/20x_256px_0px_overlap/features_uni/<slide>.h5``.
        batch_size: patches per forward pass.
        num_workers: DataLoader worker processes reading patches (0: read in this process).
        precision: ``fp32`` or ``fp16`` storage of the features.
        progress: a tqdm bar for this slide on stderr (``None``: when stderr is a terminal, so
            batch logs get no carriage-return lines).
        amp: autocast on CUDA.
        overwrite: replace an existing ``out_h5`` (otherwise refused).
        overall: a tqdm bar over all slides, advanced by the patches done here.

    Returns:
        N, the number of patches written (rows of ``features``).

    Raises:
        SrmilError: bad patch file, existing output, unreadable slide pixels, or non-finite
            features (nothing is written then).
    """
    if precision not in PRECISIONS:
        raise SrmilError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if batch_size < 1 or num_workers < 0:
        raise SrmilError(f"need batch_size >= 1 and num_workers >= 0, got {batch_size}, "
                         f"{num_workers}")
    patches_h5, out_h5 = Path(patches_h5), Path(out_h5)
    if out_h5.exists() and not overwrite:
        raise SrmilError("already exists; refusing to overwrite it", out_h5)
    coords, attrs = read_patches(patches_h5)
    n = len(coords)
    dtype = PRECISIONS[precision]
    feats = np.zeros((n, encoder.dim), dtype=dtype)  # (N, D)
    slide_id = getattr(slide, "slide_id", None) or patches_h5.name.removesuffix(
        "_patches.h5").removesuffix(".h5")
    if n:
        ps0 = _positive_int_attr(attrs, "patch_size_level0", patches_h5)
        encode_patches(slide, coords, ps0, encoder, feats, batch_size=batch_size,
                       num_workers=num_workers, progress=progress, amp=amp, desc=slide_id,
                       overall=overall)
    if not np.isfinite(feats).all():
        bad = int((~np.isfinite(feats)).any(1).sum())
        hint = " (float16 overflow? try precision fp32)" if dtype is np.float16 else ""
        raise SrmilError(f"encoder {encoder.name!r} gave non-finite features for {bad} of {n} "
                         f"patches{hint}", out_h5)
    _write(out_h5, feats, coords, attrs, encoder.name, weights_sha256(encoder.weights), slide_id,
           overwrite)
    return n


def encode_patches(slide: Slide, coords: np.ndarray, ps0: int, encoder: Encoder,
                   out: np.ndarray, *, batch_size: int = 64, num_workers: int = 2,
                   progress: bool | None = None, amp: bool = True, desc: str = "",
                   overall: Any = None) -> None:
    """Fill ``out`` (N, D) with the encoder's features of the patches at ``coords`` (level-0
    top-left, side ``ps0``), read by ``num_workers`` DataLoader workers; a progress bar as
    ``extract_slide``'s."""
    from tqdm import tqdm

    if progress is None:
        progress = sys.stderr.isatty()

    device = encoder.device
    dataset = PatchDataset(slide, coords, ps0, encoder.read_size)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        pin_memory=device.type == "cuda", prefetch_factor=2 if num_workers > 0 else None,
    )
    use_amp = amp and device.type == "cuda"
    encoder.eval()
    batches = iter(loader)
    try:
        with tqdm(total=len(coords), desc=desc, unit="patch", leave=False, file=sys.stderr,
                  disable=not progress, dynamic_ncols=True) as bar, torch.inference_mode():
            for idx, batch in batches:
                x = encoder.preprocess(batch.to(device, non_blocking=True))  # (B, 3, S, S)
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    y = encoder(x)  # (B, D)
                out[idx.numpy()] = y.float().cpu().numpy().astype(out.dtype, copy=False)
                bar.update(len(idx))
                if overall is not None:
                    overall.update(len(idx))
    finally:
        # a failed worker leaves the others running until garbage collection (~5 s each);
        # stop them now so one bad slide does not stall the cohort
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
