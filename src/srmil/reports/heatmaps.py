"""Heatmap figures: scores drawn on the patch grid, from the bag alone or over a slide thumbnail.

Memory is bounded by the grid (one cell per patch position, ``H × W`` cells at the patch step)
and by the thumbnail, never by the slide: a 100,000-patch slide is a grid of about 400 × 400
cells. Both figures put the slide's level-0 pixel frame on the axes, y pointing down as on the
slide, with equal aspect.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srmil.errors import SrmilError
from srmil.reports.figures import save_figure, subplots
from srmil.reports.scores import rank_percentile

NORMS = ("rank", "minmax")
MAX_GRID_CELLS = 25_000_000  # 100 MB of float32; a 100,000-patch slide needs ~0.3 M cells
BACKGROUND = "white"  # glass: where the slide has no patch
OUTLINE = "#303030"
DEFAULT_CMAP = "viridis"


@dataclass
class ScoreGrid:
    """Values on the patch grid.

    Attributes:
        values: (H, W) float32, NaN where there is no patch (background).
        x0, y0: level-0 position of the grid's top-left corner.
        step: cell side in the coordinates' frame.
    """

    values: np.ndarray
    x0: float
    y0: float
    step: float

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``imshow`` extent (left, right, bottom, top) with y pointing down."""
        h, w = self.values.shape
        return (self.x0, self.x0 + w * self.step, self.y0 + h * self.step, self.y0)

    @property
    def tissue(self) -> np.ndarray:
        """(H, W) bool: cells holding a patch."""
        return np.isfinite(self.values)


def score_grid(coords: np.ndarray, values: np.ndarray, step: float) -> ScoreGrid:
    """Put per-patch values on a regular grid of side ``step`` (mean where patches share a cell).

    Args:
        coords: (N, 2) top-left (x, y) of the patches.
        values: (N,) values.
        step: grid step in the coordinates' frame (patch size minus overlap).

    Raises:
        SrmilError: lengths differ, or the grid would be absurdly large (wrong step).
    """
    coords = np.asarray(coords, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise SrmilError(f"coordinates have shape {coords.shape}, expected (N, 2)")
    if len(values) != len(coords):
        raise SrmilError(f"{len(values)} scores for {len(coords)} coordinates: they must pair "
                         "up one to one (scores from another bag?)")
    if len(coords) == 0:
        raise SrmilError("no patches to draw")
    if not step or step <= 0:
        raise SrmilError(f"grid step must be positive, got {step}")
    lo = coords.min(axis=0)
    cells = np.round((coords - lo) / step).astype(np.int64)  # (N, 2) (col, row)
    w, h = (cells.max(axis=0) + 1).tolist()
    if w * h > MAX_GRID_CELLS:
        raise SrmilError(f"a grid of {w} × {h} cells at step {step:g}: the step does not fit "
                         "the coordinates")
    flat = cells[:, 1] * w + cells[:, 0]  # (N,)
    total = np.bincount(flat, weights=values, minlength=w * h)
    count = np.bincount(flat, minlength=w * h)
    with np.errstate(invalid="ignore", divide="ignore"):
        grid = (total / count).astype(np.float32).reshape(h, w)  # NaN where count == 0
    return ScoreGrid(grid, float(lo[0]), float(lo[1]), float(step))


def normalise(scores: np.ndarray, norm: str = "rank", kind: str = "score"
              ) -> tuple[np.ndarray, float, float, str]:
    """Values to colour and the colour bar's range and label.

    Args:
        scores: (N,) raw scores.
        norm: ``rank`` (percentile of the patch's rank within the slide, 0-100) or ``minmax``
            (raw values between the slide's minimum and maximum; signed scores, such as
            gradient × input with both signs, get limits symmetric about 0).
        kind: what the scores are, for the label (``attention``, ``grad_x_input``).

    Returns:
        (values (N,), vmin, vmax, colour bar label).
    """
    s = np.asarray(scores, dtype=np.float64)
    if norm == "rank":
        return rank_percentile(s), 0.0, 100.0, f"{kind}: rank percentile within slide"
    if norm == "minmax":
        lo, hi = float(s.min()), float(s.max())
        if lo < 0 < hi:  # signed: 0 must sit at the colour map's centre
            a = max(-lo, hi)
            return s, -a, a, f"{kind}: raw value (signed, 0 at the centre)"
        if hi <= lo:
            hi = lo + 1e-12
        return s, lo, hi, f"{kind}: raw value (slide min to max)"
    raise SrmilError(f"unknown normalisation {norm!r}; choose from: {', '.join(NORMS)}")


def _diverging_if_signed(cmap: str, vmin: float) -> str:
    """Signed limits with the default sequential map: a diverging one, whose light grey centre
    (not white: white is glass) marks 0."""
    return "coolwarm" if vmin < 0 and cmap == DEFAULT_CMAP else cmap


def _figure_size(aspect: float, max_side: int, dpi: int) -> tuple[float, float]:
    """Inches for an image panel whose long side is ``max_side`` pixels; aspect = w / h."""
    long = max_side / dpi
    w, h = (long, long / aspect) if aspect >= 1 else (long * aspect, long)
    return max(w, 2.5), max(h, 2.0)


def outline_field(grid: ScoreGrid, max_cells: int = 16_000_000
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tissue mask, padded by one cell and upsampled, for a contour at level 0.5.

    A contour through cell centres cuts every corner diagonally; upsampling each cell to
    ``k × k`` (k ≤ 4, fewer on huge grids) shrinks the cut to 1/(2k) of a cell, so the outline
    follows the cell borders. (A line per cell border is 100× slower to draw on 10^5 patches.)

    Returns:
        xs (W',), ys (H',) sample positions in the coordinates' frame, mask (H', W') float32.
    """
    h, w = grid.tissue.shape
    k = int(max(1, min(4, np.sqrt(max_cells / ((h + 2) * (w + 2))))))
    m = np.pad(grid.tissue, 1).repeat(k, 0).repeat(k, 1).astype(np.float32)  # (H', W')
    xs = grid.x0 + ((np.arange(m.shape[1]) + 0.5) / k - 1) * grid.step
    ys = grid.y0 + ((np.arange(m.shape[0]) + 0.5) / k - 1) * grid.step
    return xs, ys, m


def _draw_grid(ax, grid: ScoreGrid, vmin: float, vmax: float, cmap: str, alpha: float = 1.0,
               outline: bool = True):
    import matplotlib as mpl

    # background cells: transparent, the axes (or the slide) shows through
    cm = mpl.colormaps[cmap].with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    im = ax.imshow(np.ma.masked_invalid(grid.values), cmap=cm, vmin=vmin, vmax=vmax,
                   extent=grid.extent, origin="upper", interpolation="nearest", alpha=alpha,
                   resample=False)
    if outline:
        xs, ys, m = outline_field(grid)
        ax.contour(xs, ys, m, levels=[0.5], colors=OUTLINE, linewidths=0.8)
    return im


def _frame(ax, extent: tuple[float, float, float, float], unit: str,
           margin: float = 0.0) -> None:
    left, right, bottom, top = extent
    left, right, bottom, top = left - margin, right + margin, bottom + margin, top - margin
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)  # y down, as on the slide
    ax.set_aspect("equal")
    ax.set_facecolor(BACKGROUND)
    frame = "level-0 px" if unit == "px" else "µm"
    ax.set_xlabel(f"x ({frame})", fontsize=8)
    ax.set_ylabel(f"y ({frame})", fontsize=8)
    ax.tick_params(labelsize=7)


def render_heatmap(
    path: str | os.PathLike, coords: np.ndarray, scores: np.ndarray, step: float, *,
    norm: str = "rank", kind: str = "score", title: str = "", cmap: str = DEFAULT_CMAP,
    max_side: int = 1200, dpi: int = 100, unit: str = "px", overwrite: bool = False,
) -> Path:
    """Write :func:`heatmap_figure` as a PNG (atomically; ``overwrite`` replaces ``path``)."""
    fig, _ = heatmap_figure(coords, scores, step, norm=norm, kind=kind, title=title, cmap=cmap,
                            max_side=max_side, dpi=dpi, unit=unit)
    return save_figure(fig, path, overwrite)


def heatmap_figure(
    coords: np.ndarray, scores: np.ndarray, step: float, *, norm: str = "rank",
    kind: str = "score", title: str = "", cmap: str = DEFAULT_CMAP, max_side: int = 1200,
    dpi: int = 100, unit: str = "px",
):
    """Draw the scores on the patch grid (bag alone: no slide needed): (figure, axes).

    Background (no patch) is white, the tissue outline (edge of the patched area, holes
    included) dark grey, y points down as on the slide, and the colour bar names the
    normalisation.

    Args:
        coords: (N, 2) top-left patch positions (level-0 px, or µm for ``unit="um"``).
        scores: (N,) raw scores, same order as ``coords``.
        step: grid step in the coordinates' frame.
        norm: ``rank`` (default) or ``minmax`` (see :func:`normalise`).
        kind: what the scores are (colour bar label).
        title: figure title.
        cmap: matplotlib colour map (signed min-max scores swap the default for ``coolwarm``).
        max_side: pixels of the grid panel's long side (the chosen resolution).
        unit: ``px`` or ``um`` (axis labels).

    Returns:
        The figure and its grid axes, whose data frame is the coordinates' frame (y down).
    """

    if len(scores) != len(coords):
        raise SrmilError(f"{len(scores)} scores for {len(coords)} coordinates: they must pair "
                         "up one to one (scores from another bag?)")
    values, vmin, vmax, label = normalise(scores, norm, kind)
    cmap = _diverging_if_signed(cmap, vmin)
    grid = score_grid(coords, values, step)
    h, w = grid.values.shape
    fw, fh = _figure_size(w / h, max_side, dpi)
    fig, ax = subplots(figsize=(fw + 1.4, fh + 0.9), dpi=dpi, layout="constrained")
    im = _draw_grid(ax, grid, vmin, vmax, cmap)
    _frame(ax, grid.extent, unit, margin=grid.step)
    cb = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02, shrink=0.9)
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return fig, ax


def render_overlay(
    path: str | os.PathLike, thumb: np.ndarray, scale: float, coords_px: np.ndarray,
    scores: np.ndarray, step_px: float, *, norm: str = "rank", kind: str = "score",
    title: str = "", cmap: str = DEFAULT_CMAP, alpha: float = 0.5, max_side: int = 1200,
    dpi: int = 100, overwrite: bool = False,
) -> Path:
    """Write :func:`overlay_figure` as a PNG (atomically; ``overwrite`` replaces ``path``)."""
    fig, _ = overlay_figure(thumb, scale, coords_px, scores, step_px, norm=norm, kind=kind,
                            title=title, cmap=cmap, alpha=alpha, max_side=max_side, dpi=dpi)
    return save_figure(fig, path, overwrite)


def overlay_figure(
    thumb: np.ndarray, scale: float, coords_px: np.ndarray, scores: np.ndarray,
    step_px: float, *, norm: str = "rank", kind: str = "score", title: str = "",
    cmap: str = DEFAULT_CMAP, alpha: float = 0.5, max_side: int = 1200, dpi: int = 100,
):
    """Two panels, the slide thumbnail and the scores over it: (figure, (slide axes, score axes)).

    Both axes' data frame is the slide's level-0 pixel frame, y down.

    Args:
        thumb: (h, w, 3) uint8 thumbnail of the whole slide.
        scale: level-0 pixels per thumbnail pixel.
        coords_px: (N, 2) level-0 top-left patch positions.
        scores: (N,) raw scores.
        step_px: grid step in level-0 pixels.
        alpha: opacity of the scores over the slide.
        max_side: pixels of each panel's long side (at most the thumbnail's).
    """

    values, vmin, vmax, label = normalise(scores, norm, kind)
    cmap = _diverging_if_signed(cmap, vmin)
    grid = score_grid(coords_px, values, step_px)
    th, tw = thumb.shape[:2]
    slide_extent = (0.0, tw * scale, th * scale, 0.0)
    pw, ph = _figure_size(tw / th, min(max(th, tw), max_side), dpi)
    wide = tw >= th  # side by side for tall slides, one above the other for wide ones
    rows, cols = (2, 1) if wide else (1, 2)
    fig, axes = subplots(rows, cols, dpi=dpi, layout="constrained",
                             figsize=(pw * cols + 1.4, ph * rows + 0.9))
    for ax in axes:
        ax.imshow(thumb, extent=slide_extent, origin="upper", interpolation="antialiased")
        _frame(ax, slide_extent, "px")
    axes[0].set_title("slide", fontsize=9)
    im = _draw_grid(axes[1], grid, vmin, vmax, cmap, alpha=alpha)
    axes[1].set_title("scores over the slide", fontsize=9)
    cb = fig.colorbar(im, ax=axes, fraction=0.04, pad=0.02, shrink=0.8)
    cb.solids.set_alpha(1.0)
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig, axes


def render_crops(path: str | os.PathLike, top: list[np.ndarray], bottom: list[np.ndarray],
                 top_labels: list[str], bottom_labels: list[str], kind: str = "score",
                 overwrite: bool = False) -> Path:
    """A montage of the highest- and lowest-scoring patches (one row each), as one PNG.

    Args:
        top, bottom: (h, w, 3) uint8 crops, most extreme first.
        top_labels, bottom_labels: a caption per crop (score and position).
    """

    k = max(len(top), len(bottom), 1)
    fig, axes = subplots(2, k, figsize=(1.6 * k + 0.6, 3.8), dpi=100, squeeze=False,
                             layout="constrained")
    for row, (crops, vals, name) in enumerate(((top, top_labels, "highest"),
                                               (bottom, bottom_labels, "lowest"))):
        for j in range(k):
            ax = axes[row, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(crops):
                ax.imshow(crops[j])
                ax.set_title(vals[j], fontsize=7)
            else:
                ax.set_axis_off()
        axes[row, 0].set_ylabel(f"{name} {kind}", fontsize=8)
    return save_figure(fig, path, overwrite)
