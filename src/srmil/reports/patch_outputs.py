"""Per-patch outputs of a heatmap: the score table, QuPath GeoJSON, top/bottom lists, crops.

GeoJSON: a FeatureCollection of patch squares in level-0 pixels, each a QuPath *detection*
(``properties.objectType = "detection"``) carrying the scores as ``measurements`` (QuPath's
map form), so File > Import objects in QuPath shows them and colours them by measurement.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from srmil.errors import SrmilError
from srmil.storage import atomic_path


def scores_table(coords: np.ndarray, scores: np.ndarray, percentile: np.ndarray) -> pd.DataFrame:
    """``patch`` (row in the bag), ``x``, ``y``, ``score``, ``percentile``."""
    if not len(coords) == len(scores) == len(percentile):
        raise SrmilError(f"{len(scores)} scores for {len(coords)} coordinates: they must pair "
                         "up one to one")
    c = np.asarray(coords)
    return pd.DataFrame({"patch": np.arange(len(c)), "x": c[:, 0], "y": c[:, 1],
                         "score": np.asarray(scores, dtype=np.float64),
                         "percentile": np.asarray(percentile, dtype=np.float64)})


def top_bottom(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` highest- and ``k`` lowest-scoring patches: ``group`` (top|bottom), ``rank``
    (1 = most extreme), then the columns of ``table``. Ties keep the bag's row order."""
    k = min(k, len(table))
    order = np.argsort(-table["score"].to_numpy(), kind="stable")
    top = table.iloc[order[:k]].assign(group="top", rank=np.arange(1, k + 1))
    order = np.argsort(table["score"].to_numpy(), kind="stable")
    bottom = table.iloc[order[:k]].assign(group="bottom", rank=np.arange(1, k + 1))
    out = pd.concat([top, bottom], ignore_index=True)
    return out[["group", "rank", *table.columns]]


def write_geojson(path: str | os.PathLike, coords_px: np.ndarray, size_px: float,
                  measurements: dict[str, np.ndarray], name: str = "patch",
                  overwrite: bool = False) -> Path:
    """Patch squares as a GeoJSON FeatureCollection of QuPath detections.

    Args:
        path: file to write (atomically).
        coords_px: (N, 2) level-0 top-left (x, y).
        size_px: patch side at level 0.
        measurements: name → (N,) values, stored per feature as ``measurements``.
        name: prefix of each feature's ``name`` (followed by the row index).
    """
    c = np.asarray(coords_px, dtype=np.float64)
    cols = {k: np.asarray(v, dtype=np.float64) for k, v in measurements.items()}
    for k, v in cols.items():
        if len(v) != len(c):
            raise SrmilError(f"{len(v)} values of {k!r} for {len(c)} patches")
    s = float(size_px)
    # one template for every feature: json.dumps per feature is 10× slower on 10^5 patches
    keys = [json.dumps(k) for k in cols]
    head = ('{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": '
            '[[[%s, %s], [%s, %s], [%s, %s], [%s, %s], [%s, %s]]]}, "properties": '
            '{"objectType": "detection", "name": %s, "measurements": {')
    prefix = json.dumps(str(name))[:-1]  # '"name' without the closing quote
    values = [np.asarray(v, dtype=np.float64) for v in cols.values()]
    if any(not np.isfinite(v).all() for v in values):
        raise SrmilError("scores contain NaN/Inf: not valid in GeoJSON", path)

    def num(v: float) -> str:
        return str(int(v)) if float(v).is_integer() else repr(round(float(v), 3))

    dest = Path(path)
    with atomic_path(dest, overwrite) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write('{"type": "FeatureCollection", "features": [\n')
        for i, (x, y) in enumerate(c.tolist()):
            x0, y0, x1, y1 = num(x), num(y), num(x + s), num(y + s)
            meas = ", ".join(f"{k}: {float(v[i])!r}" for k, v in zip(keys, values, strict=True))
            fh.write(("" if i == 0 else ",\n")
                     + head % (x0, y0, x1, y0, x1, y1, x0, y1, x0, y0, f'{prefix} {i}"')
                     + meas + "}}}")
        fh.write("\n]}\n")
    return dest


def check_fits_slide(coords_px: np.ndarray, dimensions: tuple[int, int],
                     slide_path: str | os.PathLike, bag_path: str | os.PathLike) -> None:
    """Refuse a bag whose patches do not lie on the slide (wrong slide for the bag).

    Raises:
        SrmilError: a patch's top-left corner is negative or outside the slide's level-0
            ``dimensions`` (width, height).
    """
    c = np.asarray(coords_px, dtype=np.float64)
    w, h = dimensions
    lo, hi = c.min(axis=0), c.max(axis=0)
    if lo[0] < 0 or lo[1] < 0 or hi[0] >= w or hi[1] >= h:
        bad = (hi[0], hi[1]) if hi[0] >= w or hi[1] >= h else (lo[0], lo[1])
        raise SrmilError(
            f"patch coordinates reach ({bad[0]:g}, {bad[1]:g}) but the slide is {w} × {h} at "
            f"level 0: wrong slide for bag {Path(bag_path).name}?", slide_path)
