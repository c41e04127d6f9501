"""Registration of the heatmaps: one hot patch lands on its level-0 position in the image.

The figures are drawn (Agg), then the patch's level-0 rectangle is mapped to image pixels
with the axes' data → display transform; the hottest colour must fill that rectangle and
appear nowhere else, with y pointing down (a patch near the slide's top is near the top).
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.image as mpimg
import numpy as np

from srmil.reports.heatmaps import heatmap_figure, overlay_figure, render_overlay

W, H, STEP = 4096, 2048, 256  # level-0 slide size and patch side
HOT = (3072, 256)  # level-0 top-left of the one hot patch: right, near the top
GREY = 128


class GreySlide:
    """A uniform grey slide following the ``srmil.slides`` Slide contract (the parts used here)."""

    dimensions = (W, H)
    level_downsamples = (1.0,)

    def read_region(self, xy, level, size):
        return np.full((size[1], size[0], 3), GREY, np.uint8)

    def thumbnail(self, max_side):
        scale = max(self.dimensions) / max_side
        w, h = round(W / scale), round(H / scale)
        return np.full((h, w, 3), GREY, np.uint8), W / w


def _bag() -> tuple[np.ndarray, np.ndarray]:
    cells = np.stack(np.meshgrid(np.arange(W // STEP), np.arange(H // STEP)), -1).reshape(-1, 2)
    coords = cells * STEP  # (N, 2) every patch of the slide
    scores = np.all(coords == HOT, axis=1).astype(np.float64)  # (N,) one 1, all others 0
    assert scores.sum() == 1
    return coords, scores


def _pixels(fig) -> np.ndarray:
    """(h, w, 3) float RGB in [0, 1] of the drawn figure, row 0 at the top."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(np.float64) / 255


def _image_box(fig, ax, x0, y0, x1, y1) -> tuple[float, float, float, float]:
    """Level-0 rectangle → (col0, row0, col1, row1) in image pixels (row 0 at the top)."""
    h = fig.canvas.get_width_height()[1]
    (c0, ya), (c1, yb) = ax.transData.transform([(x0, y0), (x1, y1)])
    r0, r1 = sorted((h - ya, h - yb))
    return min(c0, c1), r0, max(c0, c1), r1


def _assert_only_at(fig, img: np.ndarray, colour: np.ndarray, box, tol_px: float = 1.5) -> None:
    """Pixels of ``colour`` fill ``box`` (image px) and lie nowhere else but the colour bar."""
    hit = np.abs(img - colour).max(axis=-1) < 0.03  # (h, w)
    h = img.shape[0]
    for cb in fig.axes[-1:]:  # the colour bar, added last, shows every colour of the map
        e = cb.get_window_extent()
        hit[int(h - e.y1) - 1:int(h - e.y0) + 2, int(e.x0) - 1:int(e.x1) + 2] = False
    rows, cols = np.nonzero(hit)
    assert len(rows), "the hot colour is nowhere in the image"
    c0, r0, c1, r1 = box
    assert abs(cols.min() - c0) <= tol_px and abs(cols.max() + 1 - c1) <= tol_px, (cols, box)
    assert abs(rows.min() - r0) <= tol_px and abs(rows.max() + 1 - r1) <= tol_px, (rows, box)
    # filled: nearly every pixel of the box (less a 1 px border) is hot
    inner = hit[int(np.ceil(r0)) + 1:int(r1) - 1, int(np.ceil(c0)) + 1:int(c1) - 1]
    assert inner.size > 100 and inner.mean() > 0.99


def _centre_pixel(img, fig, ax, x, y) -> np.ndarray:
    c0, r0, c1, r1 = _image_box(fig, ax, x, y, x + STEP, y + STEP)
    return img[int((r0 + r1) / 2), int((c0 + c1) / 2)]


def test_overlay_puts_the_hot_patch_at_its_slide_position_y_down(tmp_path):
    slide = GreySlide()
    thumb, scale = slide.thumbnail(512)
    coords, scores = _bag()
    alpha = 0.5
    fig, (ax_slide, ax_scores) = overlay_figure(thumb, scale, coords, scores, STEP,
                                                norm="minmax", alpha=alpha, max_side=512)
    img = _pixels(fig)
    viridis = mpl.colormaps["viridis"]
    grey = GREY / 255
    hot = alpha * np.array(viridis(1.0)[:3]) + (1 - alpha) * grey  # score 1 over the slide
    cold = alpha * np.array(viridis(0.0)[:3]) + (1 - alpha) * grey
    box = _image_box(fig, ax_scores, HOT[0], HOT[1], HOT[0] + STEP, HOT[1] + STEP)
    _assert_only_at(fig, img, hot, box)
    # y down: the patch 256 px below the slide's top edge sits in the top eighth of the panel
    panel = ax_scores.get_window_extent()  # display frame, y up
    top_row = fig.canvas.get_width_height()[1] - panel.y1
    assert 0 < box[1] - top_row < panel.height / 8 + 2
    # the other patches are the cold colour; the slide panel shows the slide alone
    assert np.abs(_centre_pixel(img, fig, ax_scores, 0, H - STEP) - cold).max() < 0.03
    assert np.abs(_centre_pixel(img, fig, ax_slide, *HOT) - grey).max() < 0.03
    # the PNG written is the figure measured here
    mpl.pyplot.close(fig)
    p = render_overlay(tmp_path / "o.png", thumb, scale, coords, scores, STEP, norm="minmax",
                       alpha=alpha, max_side=512)
    png = mpimg.imread(p)[..., :3]
    assert png.shape == img.shape and np.abs(png - img).max() < 1.5 / 255


def test_bag_heatmap_puts_the_hot_patch_at_its_position_y_down():
    coords, scores = _bag()
    fig, ax = heatmap_figure(coords, scores, STEP, norm="minmax", max_side=512)
    img = _pixels(fig)
    viridis = mpl.colormaps["viridis"]
    box = _image_box(fig, ax, HOT[0], HOT[1], HOT[0] + STEP, HOT[1] + STEP)
    _assert_only_at(fig, img, np.array(viridis(1.0)[:3]), box)
    panel = ax.get_window_extent()
    top_row = fig.canvas.get_width_height()[1] - panel.y1
    assert 0 < box[1] - top_row < panel.height / 4
    assert box[0] - panel.x0 > panel.width / 2  # and on the right, where x = 3072 of 4096 is
    assert np.abs(_centre_pixel(img, fig, ax, 0, H - STEP) - viridis(0.0)[:3]).max() < 0.03
    mpl.pyplot.close(fig)
