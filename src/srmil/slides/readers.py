"""Slide readers, one registry: open a whole-slide image, know its pixel size, read regions.

``openslide`` (``openslide-python`` with the ``openslide-bin`` wheel, no system package) reads
every format OpenSlide reads: Aperio .svs, Hamamatsu .ndpi/.vms, MIRAX .mrxs, Leica .scn,
Philips/Ventana/Trestle TIFF, Sakura .svslide, Zeiss .czi and generic tiled TIFF.

Pixel size (µm/px at level 0) comes, in this order, from the caller (a per-slide override,
``slide_id,mpp`` CSV), ``openslide.mpp-x``/``mpp-y``, or the objective power (mpp ≈ 10 / power).
The magnification is TRIDENT's bucket of the pixel size (``magnification_from_mpp``).

Example:
    >>> with open_slide("CMU-1-Small-Region.svs") as s:
    ...     s.dimensions, s.mpp, s.magnification
    ((2220, 2967), 0.499, 20)
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from srmil.errors import SrmilError, exc_line
from srmil.registry import Registry

# File suffixes OpenSlide reads (lower case). DICOM slides (a folder of .dcm files) are not listed.
SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs",
                    ".svslide", ".bif", ".czi")

# Thumbnails read the slide in tiles of at most this side (level px): ~16 MB RGBA each, so a
# thumbnail of a single-level 100,000 px TIFF needs tens of MB, not the 40 GB of the level.
THUMB_TILE = 2048

# TRIDENT's magnification buckets: mpp below the bound -> magnification
_MAG_BUCKETS = ((0.16, 80), (0.2, 60), (0.3, 40), (0.6, 20), (1.2, 10), (2.4, 5))


def magnification_from_mpp(mpp: float) -> int:
    """TRIDENT's objective magnification for a pixel size (µm/px): 0.25 → 40, 0.5 → 20.

    Raises:
        SrmilError: ``mpp`` is not positive or is coarser than 2.4 µm/px (below 5×).
    """
    if not mpp > 0:
        raise SrmilError(f"pixel size must be positive, got {mpp!r} µm/px")
    for bound, mag in _MAG_BUCKETS:
        if mpp < bound:
            return mag
    raise SrmilError(f"pixel size {mpp:g} µm/px is coarser than 5× (2.4 µm/px); not a WSI scan")


def slide_id_of(path: str | os.PathLike) -> str:
    """Slide id: the file name without its extension (``a.b.svs`` → ``a.b``)."""
    name = Path(path).name
    low = name.lower()
    for ext in SLIDE_EXTENSIONS:
        if low.endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def best_level(level_downsamples: tuple[float, ...], downsample: float) -> int:
    """Deepest level whose downsample is ≤ ``downsample`` (OpenSlide's rule, 1 % slack).

    A function of the pyramid alone, so it serves any object with ``level_downsamples``.
    """
    best = 0
    for level, ds in enumerate(level_downsamples):
        if ds <= downsample * 1.01:
            best = level
    return best


class Slide:
    """An open whole-slide image; a context manager.

    Attributes:
        path: the slide file.
        slide_id: file name without extension.
        dimensions: level-0 (width, height).
        level_count, level_dimensions, level_downsamples: the pyramid.
        mpp: µm per level-0 pixel.
        magnification: TRIDENT's bucket of ``mpp``.
        mpp_source: ``override``, ``mpp`` (from the file) or ``objective-power``.
    """

    path: Path
    slide_id: str
    dimensions: tuple[int, int]
    level_count: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float
    magnification: int
    mpp_source: str

    def read_region(self, xy: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB pixels (h, w, 3) uint8 of ``size`` (w, h) at ``level``; ``xy`` is level-0 top-left.

        Outside the slide (or transparent) reads as white.
        """
        raise NotImplementedError

    def thumbnail(self, max_side: int) -> tuple[np.ndarray, float]:
        """The whole slide, longer side ``max_side`` px: ((h, w, 3) uint8, level-0 px per px)."""
        raise NotImplementedError

    def best_level_for_downsample(self, downsample: float) -> int:
        """Deepest level whose downsample is ≤ ``downsample`` (OpenSlide's rule, 1 % slack)."""
        return best_level(self.level_downsamples, downsample)

    def close(self) -> None:
        """Release the file."""

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        return (f"{type(self).__name__}({self.slide_id!r}, {w}×{h}, {self.level_count} levels, "
                f"mpp {self.mpp:g}, {self.magnification}×)")


SLIDE_READERS: Registry[type[Slide]] = Registry("slide reader")


def _rgba_to_rgb(arr: np.ndarray) -> np.ndarray:
    """(h, w, 4) RGBA (OpenSlide: not premultiplied) composited on white → (h, w, 3) uint8."""
    rgb = arr[..., :3]
    alpha = arr[..., 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.uint16)
    out = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255  # (h, w, 3)
    return out.astype(np.uint8)


@SLIDE_READERS.register("openslide")
class OpenSlideSlide(Slide):
    """A slide read through OpenSlide.

    Opening reads a small region of the smallest level, so a slide whose tiles cannot be
    decoded (OpenSlide opens it, then fails on the first read) fails here, with one line.
    """

    def __init__(self, path: str | os.PathLike, mpp: float | None = None) -> None:
        import openslide

        self.path = Path(path)
        self.slide_id = slide_id_of(self.path)
        if not self.path.is_file():
            raise SrmilError("no such slide file", self.path)
        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError:
            raise SrmilError("not a slide OpenSlide can read (unsupported format, or truncated)",
                             self.path) from None
        except (openslide.OpenSlideError, OSError) as exc:
            why = exc_line(exc)
            raise SrmilError(f"cannot open slide: {why}", self.path) from None
        try:
            osr = self._osr
            self.dimensions = tuple(osr.dimensions)  # type: ignore[assignment]
            self.level_count = osr.level_count
            self.level_dimensions = tuple(tuple(d) for d in osr.level_dimensions)  # type: ignore[assignment]
            self.level_downsamples = tuple(float(d) for d in osr.level_downsamples)
            self.properties = dict(osr.properties)
            self.mpp, self.mpp_source = self._pixel_size(mpp)
            try:
                self.magnification = magnification_from_mpp(self.mpp)
            except SrmilError as exc:
                raise SrmilError(exc.problem, self.path) from None
            self._probe()
        except BaseException:
            self.close()
            raise

    def _pixel_size(self, override: float | None) -> tuple[float, str]:
        if override is not None:
            if not override > 0:
                raise SrmilError(f"mpp override must be positive, got {override!r}", self.path)
            return float(override), "override"
        props = self.properties
        values = []
        for key in ("openslide.mpp-x", "openslide.mpp-y"):
            try:
                v = float(props.get(key, "nan"))
            except ValueError:
                continue
            if np.isfinite(v) and v > 0:
                values.append(v)
        if values:
            return float(np.mean(values)), "mpp"
        try:
            power = float(props.get("openslide.objective-power", "nan"))
        except ValueError:
            power = float("nan")
        if np.isfinite(power) and power > 0:
            return 10.0 / power, "objective-power"
        raise SrmilError(
            "no pixel size (openslide.mpp-x) or objective power in the slide; give it in a "
            "CSV of slide_id,mpp (--mpp-csv)", self.path)

    def _probe(self) -> None:
        level = self.level_count - 1
        w, h = self.level_dimensions[level]
        ds = self.level_downsamples[level]
        size = (min(64, w), min(64, h))
        xy = (int((w - size[0]) // 2 * ds), int((h - size[1]) // 2 * ds))
        self.read_region(xy, level, size)

    def read_region(self, xy: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        try:
            img = self._osr.read_region((int(xy[0]), int(xy[1])), int(level),
                                        (int(size[0]), int(size[1])))
        except Exception as exc:  # openslide.OpenSlideError, or a closed/broken handle
            why = exc_line(exc)
            raise SrmilError(f"cannot read slide pixels: {why}", self.path) from None
        return _rgba_to_rgb(np.asarray(img))  # (h, w, 3)

    def thumbnail(self, max_side: int) -> tuple[np.ndarray, float]:
        """The whole slide, longer side ``max_side`` px, in memory bounded by the thumbnail.

        Reads the deepest pyramid level not coarser than the thumbnail in tiles of at most
        ``THUMB_TILE`` px a side, each reduced (box filter: the mean of the pixels a thumbnail
        pixel covers) and pasted into the thumbnail. OpenSlide's ``get_thumbnail`` reads that
        level whole: level 0 of a slide without a small level (a single-level TIFF), gigabytes.
        Transparent pixels show the slide's background colour (as ``get_thumbnail``).
        """
        from PIL import Image

        w, h = self.dimensions
        scale = max(w, h) / max_side
        tw, th = max(1, round(w / scale)), max(1, round(h / scale))
        level = self.best_level_for_downsample(scale)
        lw, lh = self.level_dimensions[level]
        ds = self.level_downsamples[level]
        fx, fy = lw / tw, lh / th  # level px per thumbnail px (≥ ~1)
        step_x = max(1, int(THUMB_TILE // fx))  # thumbnail px per tile
        step_y = max(1, int(THUMB_TILE // fy))
        bg = "#" + self.properties.get("openslide.background-color", "ffffff")
        out = Image.new("RGB", (tw, th))
        try:
            for ty in range(0, th, step_y):
                ty1 = min(th, ty + step_y)
                y0, y1 = int(ty * fy), min(lh, int(np.ceil(ty1 * fy)))  # level rows read
                for tx in range(0, tw, step_x):
                    tx1 = min(tw, tx + step_x)
                    x0, x1 = int(tx * fx), min(lw, int(np.ceil(tx1 * fx)))
                    rgba = self._osr.read_region((round(x0 * ds), round(y0 * ds)), level,
                                                 (x1 - x0, y1 - y0))
                    tile = Image.new("RGB", rgba.size, bg)
                    tile.paste(rgba, None, rgba)  # composite on the background
                    del rgba
                    box = (tx * fx - x0, ty * fy - y0, min(tx1 * fx, x1) - x0,
                           min(ty1 * fy, y1) - y0)
                    out.paste(tile.resize((tx1 - tx, ty1 - ty), Image.Resampling.BOX, box=box),
                              (tx, ty))
        except Exception as exc:
            why = exc_line(exc)
            raise SrmilError(f"cannot read slide pixels: {why}", self.path) from None
        return np.asarray(out), w / tw

    def close(self) -> None:
        osr = getattr(self, "_osr", None)
        if osr is not None:
            osr.close()
            self._osr = None


def open_slide(path: str | os.PathLike, mpp: float | None = None,
               reader: str = "openslide") -> Slide:
    """Open a slide with the named reader (default OpenSlide).

    Args:
        path: slide file.
        mpp: µm/px at level 0, overriding what the file says (for slides that lack it).
        reader: a name in ``SLIDE_READERS``.

    Raises:
        SrmilError: one line naming the slide: unreadable, unsupported, or no known pixel size.
    """
    return SLIDE_READERS.create(reader, path, mpp=mpp)


def read_mpp_overrides(path: str | os.PathLike) -> dict[str, float]:
    """Read a ``slide_id,mpp`` CSV (header required) into {slide_id: mpp}.

    Raises:
        SrmilError: missing file or columns, non-positive or non-numeric mpp, duplicate ids.
    """
    p = Path(path)
    if not p.is_file():
        raise SrmilError("no such mpp CSV", p)
    out: dict[str, float] = {}
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        if "slide_id" not in cols or "mpp" not in cols:
            raise SrmilError(f"expected columns slide_id,mpp, found {','.join(cols)}", p)
        for i, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            sid = row["slide_id"]
            try:
                mpp = float(row["mpp"])
            except ValueError:
                raise SrmilError(f"line {i}: mpp {row['mpp']!r} is not a number", p) from None
            if not mpp > 0:
                raise SrmilError(f"line {i}: mpp must be positive, got {mpp:g}", p)
            if sid in out:
                raise SrmilError(f"line {i}: slide_id {sid!r} given twice", p)
            out[sid] = mpp
    return out


def find_slides(directory: str | os.PathLike) -> dict[str, Path]:
    """Slide files directly in ``directory`` with a known extension: {slide_id: path}, sorted.

    Raises:
        SrmilError: not a directory, or two files share a slide id (``a.svs`` and ``a.tif``).
    """
    d = Path(directory)
    if not d.is_dir():
        raise SrmilError("not a directory of slides", d)
    out: dict[str, Path] = {}
    for p in sorted(d.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if not p.name.lower().endswith(SLIDE_EXTENSIONS):
            continue
        sid = slide_id_of(p)
        if sid in out:
            raise SrmilError(f"two slides with id {sid!r}: {out[sid].name} and {p.name}", d)
        out[sid] = p
    return dict(sorted(out.items()))


def read_slide_list(path: str | os.PathLike) -> tuple[dict[str, Path], dict[str, float]]:
    """Slides named in a list file: ({slide_id: path}, {slide_id: mpp} from an ``mpp`` column).

    A ``.csv`` needs a ``path`` column (or TRIDENT's ``wsi``) and may have ``mpp``; any other file
    holds one path per line (``#`` starts a comment). Relative paths are taken from the list's
    folder.

    Raises:
        SrmilError: missing file or column, a listed slide that does not exist, duplicate ids.
    """
    p = Path(path)
    if not p.is_file():
        raise SrmilError("no such slide list", p)
    entries: list[tuple[str, str]] = []  # (path text, mpp text)
    if p.suffix.lower() == ".csv":
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            col = "path" if "path" in cols else "wsi" if "wsi" in cols else None
            if col is None:
                raise SrmilError(f"expected a 'path' (or 'wsi') column, found {','.join(cols)}", p)
            for row in reader:
                row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
                if row[col]:
                    entries.append((row[col], row.get("mpp", "")))
    else:
        for line in p.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                entries.append((line, ""))
    slides: dict[str, Path] = {}
    mpps: dict[str, float] = {}
    for text, mpp in entries:
        sp = Path(text).expanduser()
        sp = sp if sp.is_absolute() else p.parent / sp
        if not sp.is_file():
            raise SrmilError(f"listed slide {text!r} does not exist", p)
        sid = slide_id_of(sp)
        if sid in slides:
            raise SrmilError(f"slide id {sid!r} listed twice", p)
        slides[sid] = sp
        if mpp:
            try:
                mpps[sid] = float(mpp)
            except ValueError:
                raise SrmilError(f"mpp {mpp!r} of {sid!r} is not a number", p) from None
    return dict(sorted(slides.items())), mpps
