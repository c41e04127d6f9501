"""Explaining a run: ``heatmap`` (per-patch scores drawn per slide) and ``report`` (HTML)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from srmil.api.results import HeatmapResult, ReportResult
from srmil.config import HeatmapConfig
from srmil.errors import SrmilError

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def check_heatmap_config(cfg: HeatmapConfig) -> None:
    """Refuse settings that cannot draw (one line each)."""
    import matplotlib

    if cfg.method not in ("auto", "attention", "gradient"):
        raise SrmilError(f"unknown score method {cfg.method!r}; choose from: auto, attention, "
                         "gradient")
    if cfg.norm not in ("rank", "minmax"):
        raise SrmilError(f"unknown colour scale {cfg.norm!r}; choose from: rank, minmax")
    if cfg.top_k < 0 or cfg.max_side < 100:
        raise SrmilError("--top-k must be >= 0 and --max-side >= 100")
    if cfg.cmap not in matplotlib.colormaps:
        raise SrmilError(f"unknown colour map {cfg.cmap!r} (see matplotlib's colormaps)")


def heatmap(run: PathLike, bags: PathLike, out: PathLike, cfg: HeatmapConfig = HeatmapConfig(),
            slides: PathLike | Mapping[str, Path] | None = None,
            slide_ids: list[str] | None = None, fold: int | None = None,
            overwrite: bool = False, mpp: PathLike | Mapping[str, float] | None = None,
            ) -> HeatmapResult:
    """Score every patch of each slide with a run's model and draw it.

    Each slide is scored by the fold model whose test split held it; slides outside every
    test split by the mean over the folds; ``fold`` picks one. Finished slides are skipped
    (resume) unless ``overwrite``; one bad slide fails alone (logged, in the result).

    Args:
        run: the run directory.
        bags: directory of bags, or one bag file.
        out: output directory (``index.csv``, one folder per slide).
        cfg: score method, colour scale, sizes.
        slides: slide files for overlays and patch crops: a directory, a slide list (as for
            :func:`extract`) or {slide_id: path}.
        slide_ids: only these slides (default: every bag).
        fold: score every slide with this fold's model.
        overwrite: redo slides that are already done.
        mpp: ``slide_id,mpp`` CSV or {slide_id: µm/px} for slides whose files lack a pixel size.

    Returns:
        One result per slide and the output directory.
    """
    from srmil.reports.slide_heatmaps import heatmap_run

    check_heatmap_config(cfg)
    if mpp is not None and not isinstance(mpp, Mapping):
        from srmil.slides.readers import read_mpp_overrides

        mpp = read_mpp_overrides(mpp)
    results = heatmap_run(run, bags, out, slides, slide_ids, fold, cfg, overwrite=overwrite,
                          mpp=dict(mpp) if mpp is not None else None)
    return HeatmapResult(results, Path(out))


def report(run: PathLike, out: PathLike | None = None, bags: PathLike | None = None,
           gallery: int = 3, overwrite: bool = False) -> ReportResult:
    """One self-contained HTML page about a run: metrics, curves, heatmap gallery.

    Args:
        run: the run directory.
        out: report directory (default ``RUN/report``).
        bags: bags for the gallery (default: the run's recorded bag directory).
        gallery: slides at each end of the confidence ranking (0: no gallery).
        overwrite: replace an existing report.

    Returns:
        The ``index.html`` written.
    """
    from srmil.reports.report import write_report

    return ReportResult(write_report(run, out, bags=bags, gallery=gallery, overwrite=overwrite))
