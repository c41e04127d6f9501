"""``FeatureBag``: the patch features and coordinates of one slide, as read from disk."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srmil.errors import Problem


@dataclass
class FeatureBag:
    """Features and coordinates of one slide.

    Attributes:
        features: (N, D) float16 or float32, as stored on disk.
        coords: (N, 2) top-left (x, y) in ``coord_unit`` (level-0 pixels for TRIDENT/CLAM,
            micrometres for STAMP), or ``None`` when the file has none (CLAM ``pt_files``).
        slide_id: file stem, read as a string (zero-padded ids stay as they are).
        source: the file the features came from.
        reader: name of the bag reader that read it.
        patch_size_level0: patch side in the coordinates' frame, when the attrs say it.
        step: grid step in the coordinates' frame from the attrs (patch size minus overlap),
            ``None`` when the attrs do not give it; cross-checked against the coordinates by
            :func:`srmil.graphs.grid.resolve_step`.
        coord_unit: ``"px"`` (level-0 pixels) or ``"um"``.
        attrs: the metadata the step came from, for reports.
    """

    features: np.ndarray
    coords: np.ndarray | None
    slide_id: str
    source: Path
    reader: str
    patch_size_level0: float | None = None
    step: float | None = None
    coord_unit: str = "px"
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_patches(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def problems(self) -> list[Problem]:
        """Content problems that the reader's shape checks do not catch.

        Returns:
            Errors for an empty bag, NaN/Inf features and exactly duplicated coordinates.
        """
        out: list[Problem] = []
        if self.n_patches == 0:
            out.append(Problem("error", "empty bag (0 patches)", self.source))
            return out
        bad_rows = ~np.isfinite(self.features).all(axis=1)
        if bad_rows.any():
            rows = np.flatnonzero(bad_rows)
            out.append(
                Problem(
                    "error",
                    f"features contain NaN/Inf in {rows.size} of {self.n_patches} rows "
                    f"(first row {rows[0]})",
                    self.source,
                )
            )
        if self.coords is not None:
            uniq, first, counts = np.unique(
                self.coords, axis=0, return_index=True, return_counts=True
            )
            if (counts > 1).any():
                dup = uniq[counts > 1]
                rows = np.flatnonzero((self.coords == dup[0]).all(axis=1))
                out.append(
                    Problem(
                        "error",
                        f"{int((counts - 1).sum())} duplicate coordinates, first "
                        f"{tuple(dup[0].tolist())} at rows {', '.join(map(str, rows[:3]))}",
                        self.source,
                    )
                )
        return out
