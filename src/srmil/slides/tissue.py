"""Tissue segmentation on a low-resolution image, and its contours as QuPath-ready GeoJSON.

The method is the classical one (CLAM, TRIDENT's ``otsu`` model): HSV saturation of an image at
``TissueConfig.seg_mpp`` µm/px, median filter, Otsu threshold (floored so a blank slide has no
tissue), closing, holes smaller than ``min_hole_mm2`` filled (bigger ones stay holes), components
smaller than ``min_tissue_mm2`` dropped. Each component becomes a polygon with its holes as
interior rings, in level-0 pixels.

GeoJSON: a FeatureCollection of Polygon features with QuPath's annotation properties
(``objectType: annotation``, ``classification: {name: Tissue}``) and TRIDENT's ``tissue_id``;
QuPath imports it as tissue annotations, and a file edited there (Polygon or MultiPolygon
features, any class) is read back by ``read_geojson``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srmil.config import TissueConfig
from srmil.errors import SrmilError, first_line
from srmil.slides.readers import Slide

TISSUE_COLOR = (0, 200, 0)  # QC drawing and QuPath class colour
HOLE_COLOR = (0, 90, 255)


@dataclass(frozen=True)
class TissuePolygon:
    """One piece of tissue: ``exterior`` (K, 2) float (x, y) level-0 px, closed; ``holes`` alike."""

    exterior: np.ndarray
    holes: tuple[np.ndarray, ...] = ()

    @property
    def area(self) -> float:
        """Area in level-0 px², holes subtracted."""
        return abs(_signed_area(self.exterior)) - sum(abs(_signed_area(h)) for h in self.holes)


@dataclass(frozen=True)
class Tissue:
    """Segmentation of one slide: polygons, and the mask (h, w) bool at ``downsample``."""

    polygons: list[TissuePolygon]
    mask: np.ndarray
    downsample: float  # level-0 px per mask px

    @property
    def fraction(self) -> float:
        """Share of the slide covered by tissue (from the mask)."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _closed(ring: np.ndarray, positive: bool) -> np.ndarray:
    """Ring with first == last point and the requested orientation (sign of the shoelace area)."""
    if not np.array_equal(ring[0], ring[-1]):
        ring = np.vstack([ring, ring[:1]])
    if (_signed_area(ring) > 0) != positive:
        ring = ring[::-1]
    return ring


def saturation(rgb: np.ndarray, rows: int = 1024) -> np.ndarray:
    """HSV saturation of an RGB image, scaled to 0-255: ⌊255·(max - min) / max⌋, 0 where max is 0.

    ``skimage.color.rgb2hsv``'s S channel without its float64 H and V (it needs ~100 bytes per
    pixel); integer arithmetic, a block of ``rows`` rows at a time.

    Args:
        rgb: (h, w, 3) uint8.

    Returns:
        (h, w) uint8.
    """
    out = np.empty(rgb.shape[:2], dtype=np.uint8)
    for r in range(0, rgb.shape[0], rows):
        c0, c1, c2 = (rgb[r:r + rows, :, i] for i in range(3))  # (b, w) uint8 each
        hi = np.maximum(np.maximum(c0, c1), c2).astype(np.uint16)  # (b, w)
        delta = hi - np.minimum(np.minimum(c0, c1), c2)  # (b, w) uint16
        delta *= 255
        delta //= np.maximum(hi, 1)
        out[r:r + rows] = delta
    return out


def tissue_mask(rgb: np.ndarray, px_um: float, cfg: TissueConfig = TissueConfig()) -> np.ndarray:
    """Tissue mask of an RGB image whose pixels are ``px_um`` µm wide.

    Args:
        rgb: (h, w, 3) uint8.
        px_um: µm per pixel of ``rgb``.
        cfg: thresholds and morphology sizes (µm, mm²).

    Returns:
        (h, w) bool.
    """
    from scipy.ndimage import binary_closing
    from skimage.filters import median, threshold_otsu
    from skimage.morphology import disk, remove_small_holes, remove_small_objects

    sat = saturation(rgb)  # (h, w) uint8
    r_med = max(1, round(cfg.median_um / px_um / 2))
    sat = median(sat, disk(r_med))
    thr = cfg.min_saturation * 255
    lo, hi = int(sat.min()), int(sat.max())
    if hi > lo:  # Otsu on the 256-bin histogram, as threshold_otsu(sat) bins a uint8 image
        counts = np.bincount(sat.ravel(), minlength=256)[lo:hi + 1]
        thr = max(thr, float(threshold_otsu(hist=(counts, np.arange(lo, hi + 1)))))
    mask = sat > thr  # (h, w)
    r_close = max(1, round(cfg.close_um / px_um))
    padded = np.pad(mask, r_close)  # closing must not erode at the image border
    mask = binary_closing(padded, disk(r_close))[r_close:-r_close, r_close:-r_close]
    px_mm2 = (px_um / 1000.0) ** 2
    hole_px = int(cfg.min_hole_mm2 / px_mm2)
    if hole_px > 0:
        mask = remove_small_holes(mask, max_size=hole_px)
    tissue_px = int(cfg.min_tissue_mm2 / px_mm2)
    if tissue_px > 0:
        mask = remove_small_objects(mask, max_size=tissue_px, connectivity=2)
    return mask


def _longest(contours: list[np.ndarray]) -> np.ndarray | None:
    return max(contours, key=len) if contours else None


def mask_to_polygons(mask: np.ndarray, downsample: float,
                     simplify_px: float = 1.0) -> list[TissuePolygon]:
    """Polygons (holes as interior rings) of the 8-connected components of ``mask``.

    Args:
        mask: (h, w) bool.
        downsample: level-0 px per mask px; mask pixel (i, j) covers level-0
            [j·ds, (j+1)·ds) × [i·ds, (i+1)·ds).
        simplify_px: Douglas-Peucker tolerance in mask pixels (0: none).

    Returns:
        Polygons in level-0 px, largest first.
    """
    from skimage.measure import approximate_polygon, find_contours, label, regionprops

    def ring(binary: np.ndarray, r0: int, c0: int, high: str) -> np.ndarray | None:
        c = _longest(find_contours(np.pad(binary, 1).astype(np.uint8), 0.5,
                                   fully_connected=high))
        if c is None:
            return None
        if simplify_px > 0:
            c = approximate_polygon(c, tolerance=simplify_px)
        if len(c) < 4:  # closed ring: at least a triangle plus the repeated first point
            return None
        # padded (row, col) -> level-0 (x, y): a contour at col c sits on pixel edge c + 0.5
        xy = np.stack([c[:, 1] - 1 + c0 + 0.5, c[:, 0] - 1 + r0 + 0.5], axis=1) * downsample
        return np.round(xy, 2)

    polys = []
    for region in regionprops(label(mask, connectivity=2)):
        r0, c0, _, _ = region.bbox
        ext = ring(region.image_filled, r0, c0, "high")
        if ext is None:
            continue
        holes = []
        hole_mask = region.image_filled & ~region.image
        if hole_mask.any():
            for hole in regionprops(label(hole_mask, connectivity=1)):
                hr0, hc0, _, _ = hole.bbox
                h = ring(hole.image, r0 + hr0, c0 + hc0, "low")
                if h is not None:
                    holes.append(_closed(h, positive=False))
        polys.append(TissuePolygon(_closed(ext, positive=True), tuple(holes)))
    polys.sort(key=lambda p: -p.area)
    return polys


def segment_tissue(slide: Slide, cfg: TissueConfig = TissueConfig()) -> Tissue:
    """Segment ``slide`` on an image at ``cfg.seg_mpp`` µm/px (coarser on huge slides)."""
    w, h = slide.dimensions
    ds = max(1.0, cfg.seg_mpp / slide.mpp, max(w, h) / cfg.max_side)
    rgb, ds = slide.thumbnail(max(1, round(max(w, h) / ds)))  # (h', w', 3)
    mask = tissue_mask(rgb, ds * slide.mpp, cfg)
    return Tissue(mask_to_polygons(mask, ds, cfg.simplify_px), mask, ds)


def polygons_to_geojson(polygons: list[TissuePolygon]) -> dict[str, Any]:
    """GeoJSON FeatureCollection, level-0 px; QuPath annotations, TRIDENT ``tissue_id``."""
    features = []
    for i, p in enumerate(polygons):
        rings = [p.exterior, *p.holes]
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [r.tolist() for r in rings]},
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Tissue", "color": list(TISSUE_COLOR)},
                "tissue_id": i,
            },
        })
    return {"type": "FeatureCollection", "features": features}


def _ring(value: Any, path: Path) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SrmilError("a polygon ring is not a list of [x, y] numbers", path) from None
    if arr.ndim != 2 or arr.shape[1] < 2 or len(arr) < 3:
        raise SrmilError(f"a polygon ring has shape {arr.shape}, expected (K>=3, 2)", path)
    if not np.isfinite(arr).all():
        raise SrmilError("a polygon ring holds NaN/Inf", path)
    return arr[:, :2]


def _geometries(obj: Any) -> list[dict]:
    if isinstance(obj, list):
        return [g for o in obj for g in _geometries(o)]
    if not isinstance(obj, dict):
        return []
    t = obj.get("type")
    if t == "FeatureCollection":
        return _geometries(obj.get("features", []))
    if t == "Feature":
        return _geometries(obj.get("geometry"))
    if t == "GeometryCollection":
        return _geometries(obj.get("geometries", []))
    if t in ("Polygon", "MultiPolygon"):
        return [obj]
    return []  # points, lines: not tissue


def read_geojson(path: str | os.PathLike) -> list[TissuePolygon]:
    """Polygons of a GeoJSON file (ours, TRIDENT's or a QuPath export), level-0 px.

    Polygon and MultiPolygon geometries of every feature are read (any classification); points
    and lines are ignored. May be empty.

    Raises:
        SrmilError: missing file, not JSON, malformed polygon.
    """
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SrmilError("no such GeoJSON file", p) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SrmilError(f"not valid JSON: {first_line(str(exc))}", p) from None
    if not isinstance(obj, (dict, list)):
        raise SrmilError("not a GeoJSON object", p)
    out = []
    for g in _geometries(obj):
        coords = g.get("coordinates")
        polys = [coords] if g["type"] == "Polygon" else coords
        if not isinstance(polys, list):
            raise SrmilError(f"{g['type']} without a coordinates list", p)
        for rings in polys:
            if not isinstance(rings, list) or not rings:
                raise SrmilError("a polygon without rings", p)
            ext = _ring(rings[0], p)
            out.append(TissuePolygon(ext, tuple(_ring(r, p) for r in rings[1:])))
    return out


def rasterize(polygons: list[TissuePolygon], shape: tuple[int, int],
              downsample: float) -> np.ndarray:
    """Mask (h, w) bool of the polygons (holes cleared) at ``downsample`` level-0 px per px.

    Each polygon is drawn on its own (exterior filled, holes cleared) and OR-ed in, so a piece
    of tissue lying inside another's hole stays tissue. PIL's scan-line fill (fast, little
    memory on huge masks) counts pixels on an edge as inside: edges are exact to one pixel.
    """
    from PIL import Image, ImageDraw

    h, w = shape
    mask = np.zeros((h, w), dtype=bool)
    for poly in polygons:
        ext = poly.exterior / downsample - 0.5  # pixel-centre coordinates
        x0 = max(0, int(np.floor(ext[:, 0].min())))
        y0 = max(0, int(np.floor(ext[:, 1].min())))
        x1 = min(w, int(np.ceil(ext[:, 0].max())) + 1)
        y1 = min(h, int(np.ceil(ext[:, 1].max())) + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        img = Image.new("L", (x1 - x0, y1 - y0), 0)
        draw = ImageDraw.Draw(img)
        off = np.array([x0, y0], dtype=np.float64)
        draw.polygon([tuple(v) for v in (ext - off).tolist()], fill=1)
        for hole in poly.holes:
            draw.polygon([tuple(v) for v in (hole / downsample - 0.5 - off).tolist()], fill=0)
        mask[y0:y1, x0:x1] |= np.asarray(img, dtype=bool)
    return mask


def draw_contours(rgb: np.ndarray, polygons: list[TissuePolygon], downsample: float,
                  width: int = 2) -> np.ndarray:
    """Copy of ``rgb`` (h, w, 3) with tissue outlines in green and holes in blue."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(rgb))
    draw = ImageDraw.Draw(img)
    for poly in polygons:
        for ring, color in [(poly.exterior, TISSUE_COLOR)] + [(h, HOLE_COLOR) for h in poly.holes]:
            pts = [tuple(v) for v in (ring / downsample).tolist()]
            draw.line(pts, fill=color, width=width, joint="curve")
    return np.asarray(img)
