"""Slide files → tissue contours → patch coordinates, in TRIDENT's job layout.

``readers`` (SLIDE_READERS, open_slide), ``tissue`` (segmentation, GeoJSON), ``patching``
(level-0 grid, patch files, read_patch), ``job`` (shards, claims, status tables) and
``pipeline`` (the resumable per-slide stages behind ``srmil segment | patch | extract``).
"""

from srmil.slides.patching import read_patch, read_patches
from srmil.slides.readers import SLIDE_READERS, Slide, find_slides, open_slide

__all__ = ["SLIDE_READERS", "Slide", "find_slides", "open_slide", "read_patch", "read_patches"]
