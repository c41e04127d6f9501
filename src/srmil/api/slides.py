"""Slides to bags: ``segment`` → ``patch`` → ``extract``, in TRIDENT's job layout.

Each job is resumable and may be shared by several processes (``shard``); a slide that fails
is reported in the result and the others go on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from srmil.api.results import JobResult
from srmil.config import ExtractConfig, PatchConfig, TissueConfig
from srmil.errors import SrmilError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def _run_stages(slides: PathLike | Mapping[str, Path], out: PathLike, stages: list[str],
                tissue: TissueConfig, patch: PatchConfig, geojson: PathLike | None,
                mpp: PathLike | Mapping[str, float] | None, shard: str | None,
                overwrite: bool, progress: bool | None, features=None) -> JobResult:
    from srmil.slides.job import resolve_slides, select_shard
    from srmil.slides.pipeline import Pipeline
    from srmil.slides.readers import read_mpp_overrides

    if not 0.0 <= patch.min_tissue <= 1.0:
        raise SrmilError(f"--min-tissue must be in [0, 1], got {patch.min_tissue}")
    if isinstance(slides, Mapping):
        found, overrides = {str(k): Path(v) for k, v in slides.items()}, {}
    else:
        found, overrides = resolve_slides(slides)
    if isinstance(mpp, Mapping):
        overrides.update(mpp)
    elif mpp is not None:
        overrides.update(read_mpp_overrides(mpp))
    if progress is None and not log.isEnabledFor(logging.INFO):
        progress = False
    pipe = Pipeline(out, found, tissue=tissue, patch=patch, mpp=overrides, geojson_dir=geojson,
                    overwrite=overwrite, progress=progress)
    ids = select_shard(list(found), shard)
    results = pipe.run(ids, stages, features)
    return JobResult(results, pipe.layout, features.encoder if features is not None else None)


def segment(slides: PathLike | Mapping[str, Path], out: PathLike,
            tissue: TissueConfig = TissueConfig(), geojson: PathLike | None = None,
            mpp: PathLike | Mapping[str, float] | None = None, shard: str | None = None,
            overwrite: bool = False, progress: bool | None = None) -> JobResult:
    """Segment tissue: GeoJSON contours and QC thumbnails per slide.

    Args:
        slides: a directory of slide files, a slide list (text, or CSV with ``path`` and an
            optional ``mpp`` column) or {slide_id: path}.
        out: job directory.
        tissue: segmentation settings.
        geojson: directory of user contours ``<slide_id>.geojson`` used instead of segmenting.
        mpp: ``slide_id,mpp`` CSV or {slide_id: µm/px} overriding the files' pixel size.
        shard: ``"i/n"`` (0-based): only that shard of the slides.
        overwrite: redo outputs that are already complete.
        progress: bars on stderr (default: when it is a terminal and logging is at INFO).

    Returns:
        Per-stage status rows and the job layout.
    """
    return _run_stages(slides, out, ["segment"], tissue, PatchConfig(), geojson, mpp, shard,
                       overwrite, progress)


def patch(slides: PathLike | Mapping[str, Path], out: PathLike,
          patch: PatchConfig = PatchConfig(), tissue: TissueConfig = TissueConfig(),
          geojson: PathLike | None = None, mpp: PathLike | Mapping[str, float] | None = None,
          shard: str | None = None, overwrite: bool = False,
          progress: bool | None = None) -> JobResult:
    """Patch coordinates on tissue (segmenting first where needed). Arguments as
    :func:`segment`, plus ``patch``: the grid (magnification, size, overlap, tissue share)."""
    return _run_stages(slides, out, ["segment", "patch"], tissue, patch, geojson, mpp, shard,
                       overwrite, progress)


def extract(slides: PathLike | Mapping[str, Path], out: PathLike, encoder: ExtractConfig,
            patch: PatchConfig = PatchConfig(), tissue: TissueConfig = TissueConfig(),
            geojson: PathLike | None = None, mpp: PathLike | Mapping[str, float] | None = None,
            shard: str | None = None, overwrite: bool = False,
            progress: bool | None = None) -> JobResult:
    """Segment, patch and encode slides into feature bags (TRIDENT's layout, resumable).

    Arguments as :func:`patch`, plus ``encoder``: the patch encoder, its local weights, batch
    size, DataLoader workers, device and the storage precision of the features.

    Returns:
        Per-stage status rows; the bags are ``layout.features(slide_id, encoder)``.
    """
    from srmil.features.encoders import create_encoder, weights_sha256
    from srmil.features.extract import extract_slide
    from srmil.slides.pipeline import FeaturesStage

    e = encoder
    if e.batch_size < 1 or e.workers < 0:
        raise SrmilError(f"need --batch-size >= 1 and --workers >= 0, got {e.batch_size}, "
                         f"{e.workers}")
    if e.precision not in ("fp32", "fp16"):
        raise SrmilError(f"precision must be fp32 or fp16, got {e.precision!r}")
    device = resolve_device(e.device)
    net = create_encoder(e.encoder, e.weights).to(device)
    bars = progress if progress is not None else (None if log.isEnabledFor(logging.INFO)
                                                   else False)

    def encode(slide, patches_h5: Path, out_h5: Path, overwrite: bool) -> int:
        return extract_slide(slide, patches_h5, net, out_h5, batch_size=e.batch_size,
                             num_workers=e.workers, precision=e.precision,
                             progress=bars, overwrite=overwrite)

    stage = FeaturesStage(net.name, encode, precision=e.precision,
                          weights_sha256=weights_sha256(net.weights))
    return _run_stages(slides, out, ["segment", "patch", "features"], tissue, patch, geojson,
                       mpp, shard, overwrite, progress, stage)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present) | ``cpu`` | ``cuda`` | ``cuda:<i>`` | ``gpu`` → a torch
    device; one line when it is not one or not available."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device("cuda" if name == "gpu" else name)
    except RuntimeError:
        raise SrmilError(f"--device {name!r} is not a torch device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SrmilError(f"--device {name}: CUDA is not available here")
    return device
