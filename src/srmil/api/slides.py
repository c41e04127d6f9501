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


def _resolve_job_slides(slides: PathLike | Mapping[str, Path],
                        mpp: PathLike | Mapping[str, float] | None
                        ) -> tuple[dict[str, Path], dict[str, float]]:
    from srmil.slides.job import resolve_slides
    from srmil.slides.readers import read_mpp_overrides

    if isinstance(slides, Mapping):
        found, overrides = {str(k): Path(v) for k, v in slides.items()}, {}
    else:
        found, overrides = resolve_slides(slides)
    if isinstance(mpp, Mapping):
        overrides.update(mpp)
    elif mpp is not None:
        overrides.update(read_mpp_overrides(mpp))
    return found, overrides


def _run_stages(slides: PathLike | Mapping[str, Path], out: PathLike, stages: list[str],
                tissue: TissueConfig, patch: PatchConfig, geojson: PathLike | None,
                mpp: PathLike | Mapping[str, float] | None, shard: str | None,
                overwrite: bool, progress: bool | None, features=None, lock: str = "auto",
                order: list[str] | None = None) -> JobResult:
    from srmil.slides.job import select_shard
    from srmil.slides.pipeline import Pipeline

    if not 0.0 <= patch.min_tissue <= 1.0:
        raise SrmilError(f"--min-tissue must be in [0, 1], got {patch.min_tissue}")
    found, overrides = _resolve_job_slides(slides, mpp)
    if progress is None and not log.isEnabledFor(logging.INFO):
        progress = False
    pipe = Pipeline(out, found, tissue=tissue, patch=patch, mpp=overrides, geojson_dir=geojson,
                    overwrite=overwrite, progress=progress, lock=lock)
    ids = select_shard(list(found), shard) if order is None else order
    results = pipe.run(ids, stages, features)
    return JobResult(results, pipe.layout, features.encoder if features is not None else None)


def segment(slides: PathLike | Mapping[str, Path], out: PathLike,
            tissue: TissueConfig = TissueConfig(), geojson: PathLike | None = None,
            mpp: PathLike | Mapping[str, float] | None = None, shard: str | None = None,
            overwrite: bool = False, progress: bool | None = None,
            lock: str = "auto") -> JobResult:
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
        lock: how processes claim outputs: ``auto`` | ``flock`` | ``file`` (:mod:`srmil.locks`).

    Returns:
        Per-stage status rows and the job layout.
    """
    return _run_stages(slides, out, ["segment"], tissue, PatchConfig(), geojson, mpp, shard,
                       overwrite, progress, lock=lock)


def patch(slides: PathLike | Mapping[str, Path], out: PathLike,
          patch: PatchConfig = PatchConfig(), tissue: TissueConfig = TissueConfig(),
          geojson: PathLike | None = None, mpp: PathLike | Mapping[str, float] | None = None,
          shard: str | None = None, overwrite: bool = False,
          progress: bool | None = None, lock: str = "auto") -> JobResult:
    """Patch coordinates on tissue (segmenting first where needed). Arguments as
    :func:`segment`, plus ``patch``: the grid (magnification, size, overlap, tissue share)."""
    return _run_stages(slides, out, ["segment", "patch"], tissue, patch, geojson, mpp, shard,
                       overwrite, progress, lock=lock)


def extract(slides: PathLike | Mapping[str, Path], out: PathLike, encoder: ExtractConfig,
            patch: PatchConfig = PatchConfig(), tissue: TissueConfig = TissueConfig(),
            geojson: PathLike | None = None, mpp: PathLike | Mapping[str, float] | None = None,
            shard: str | None = None, overwrite: bool = False,
            progress: bool | None = None, lock: str = "auto", devices: int = 1) -> JobResult:
    """Segment, patch and encode slides into feature bags (TRIDENT's layout, resumable).

    Arguments as :func:`patch`, plus ``encoder``: the patch encoder, its local weights, batch
    size, DataLoader workers, device and the storage precision of the features; ``devices``:
    one worker process per device (``cuda:0`` … ``cuda:N-1``, or N CPU processes when
    ``encoder.device`` is ``cpu``), each claiming slides through the per-output claims, so no
    slide is done twice and none is left out; combines with ``shard`` across nodes.

    Returns:
        Per-stage status rows; the bags are ``layout.features(slide_id, encoder)``.
    """
    e = encoder
    if e.batch_size < 1 or e.workers < 0:
        raise SrmilError(f"need --batch-size >= 1 and --workers >= 0, got {e.batch_size}, "
                         f"{e.workers}")
    if e.precision not in ("fp32", "fp16"):
        raise SrmilError(f"precision must be fp32 or fp16, got {e.precision!r}")
    if devices < 1:
        raise SrmilError(f"--devices must be >= 1, got {devices}")
    if devices > 1:
        return _extract_on_devices(slides, out, e, patch, tissue, geojson, mpp, shard,
                                   overwrite, lock, devices)
    return _extract_here(slides, out, e, patch, tissue, geojson, mpp, shard, overwrite,
                         progress, lock)


def _extract_here(slides, out, e: ExtractConfig, patch: PatchConfig, tissue: TissueConfig,
                  geojson, mpp, shard, overwrite: bool, progress: bool | None, lock: str,
                  order: list[str] | None = None) -> JobResult:
    from srmil.features.encoders import create_encoder, weights_sha256
    from srmil.features.extract import extract_slide
    from srmil.slides.pipeline import FeaturesStage

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
                       mpp, shard, overwrite, progress, stage, lock=lock, order=order)


def device_list(device: str, n: int) -> list[str]:
    """The ``n`` devices of ``--devices n``: ``cuda:0`` … ``cuda:n-1``, or ``cpu`` n times.

    Raises:
        SrmilError: fewer GPUs than ``n``, or one named GPU (``cuda:1``) with ``n`` > 1.
    """
    import torch

    kind = resolve_device(device).type
    if kind == "cpu":
        return ["cpu"] * n
    if kind != "cuda" or ":" in device:
        raise SrmilError(f"--devices {n} needs --device auto, cuda or cpu (one process per GPU "
                         f"from cuda:0), not {device!r}")
    have = torch.cuda.device_count()
    if have < n:
        raise SrmilError(f"--devices {n}: only {have} GPU(s) here")
    return [f"cuda:{i}" for i in range(n)]


_PRIORITY = {"done": 0, "failed": 1, "skipped": 2}


def _merge_rows(parts: list[JobResult]) -> dict[str, list]:
    """Per stage and slide, the row of the worker that did the work: done > failed > skipped
    > skipped because another worker was busy with it."""
    stages: dict[str, dict[str, object]] = {}
    for res in parts:
        for stage, rows in res.stages.items():
            best = stages.setdefault(stage, {})
            for r in rows:
                key = (_PRIORITY[r.status], r.reason.startswith(("busy:", "not run:")))
                old = best.get(r.slide_id)
                if old is None or key < old[0]:
                    best[r.slide_id] = (key, r)
    return {stage: [best[s][1] for s in sorted(best)] for stage, best in stages.items()}


def _extract_on_devices(slides, out, e: ExtractConfig, patch: PatchConfig,
                        tissue: TissueConfig, geojson, mpp, shard, overwrite: bool, lock: str,
                        n: int) -> JobResult:
    """One spawned worker process per device over the same slide list, each starting at its
    own share (slides ``i::n``) and then helping with the rest; claims keep them apart."""
    import dataclasses
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from srmil.slides.job import ensure_writable, select_shard

    if not 0.0 <= patch.min_tissue <= 1.0:
        raise SrmilError(f"--min-tissue must be in [0, 1], got {patch.min_tissue}")
    devs = device_list(e.device, n)
    found, overrides = _resolve_job_slides(slides, mpp)
    ensure_writable(out)
    ids = select_shard(list(found), shard)
    orders = [ids[i::n] + [s for j, s in enumerate(ids) if j % n != i] for i in range(n)]
    threads = max(1, (os.cpu_count() or 1) // n) if devs[0] == "cpu" else None
    level = logging.getLogger("srmil").getEffectiveLevel()
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    log.info("extracting %d slide(s) with %d worker processes on %s", len(ids), n,
             ", ".join(dict.fromkeys(devs)))
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        futures = [pool.submit(_device_worker, dict(found), out, dataclasses.replace(e, device=d),
                               patch, tissue, geojson, dict(overrides), overwrite, lock,
                               orders[i], f"worker {i} ({d})", threads, level)
                   for i, d in enumerate(devs)]
        parts = [f.result() for f in futures]
    layout = parts[0].layout
    return JobResult(_merge_rows(parts), layout, parts[0].encoder,
                     tuple(p.stages for p in parts))


def _device_worker(found: dict[str, Path], out: PathLike, e: ExtractConfig,
                   patch: PatchConfig, tissue: TissueConfig, geojson, mpp: dict[str, float],
                   overwrite: bool, lock: str, order: list[str], name: str,
                   threads: int | None, level: int) -> JobResult:
    """The body of one ``--devices`` worker process."""
    logger = logging.getLogger("srmil")
    if not logger.handlers:  # a fresh spawned process: its messages to stderr, marked
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"[{name}] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    if threads:
        import torch

        torch.set_num_threads(threads)
    res = _extract_here(found, out, e, patch, tissue, geojson, mpp, None, overwrite, False,
                        lock, order=order)
    done = sum(r.status == "done" for r in res.stages.get("features", []))
    log.info("%s: encoded %d slide(s)", name, done)
    return res


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
