"""Benchmarks behind ``srmil bench``: they print figures, tests never time anything."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from srmil.graphs.grid import _edges_by_kdtree, build_edge_index

# where `make fixtures` puts the real test slides in a checkout (tests/fetch_fixtures.py's CACHE,
# which the tests use; that script is stdlib-only and outside the package, so not imported here)
FIXTURES_DIR = Path(__file__).resolve().parents[2] / ".cache" / "fixtures"


def tissue_like_coords(n: int, step: int = 448, seed: int = 0) -> np.ndarray:
    """(n, 2) level-0 coordinates of a ragged tissue region on a grid (60 % of a square)."""
    rng = np.random.default_rng(seed)
    side = int(math.ceil(math.sqrt(n / 0.6)))
    yy, xx = np.mgrid[0:side, 0:side]
    r = np.hypot(xx - side / 2, yy - side / 2) + rng.uniform(0, side / 4, (side, side))
    order = np.argsort(r.ravel(), kind="stable")[:n]
    cells = np.stack([order % side, order // side], axis=1)
    return cells[rng.permutation(n)] * step


def dense_radius_edges(coords: np.ndarray, step: float, window: int = 2,
                       chunk: int = 2048) -> int:
    """The reference's O(N²) radius graph (all pairwise distances, in row chunks); returns the
    edge count. For timing comparison only."""
    import torch

    u = torch.from_numpy(np.asarray(coords, dtype=np.float32) / step)
    r = window * math.sqrt(2) + 1e-4
    edges = 0
    for i in range(0, len(u), chunk):
        edges += int((torch.cdist(u[i:i + chunk], u) <= r).sum())
    return edges


def bench_graph(sizes: tuple[int, ...] = (10_000, 100_000), repeats: int = 5,
                dense_up_to: int = 20_000) -> list[dict]:
    """Median wall time of the graph build (table builder, and the KD-tree builder used for
    off-grid coordinates) on tissue-like grids of the given sizes, and once the O(N²) dense
    radius graph for sizes up to ``dense_up_to``."""
    out = []
    build_edge_index(tissue_like_coords(1000), 448.0)  # warm caches and imports
    for n in sizes:
        coords = tissue_like_coords(n)
        times, ktimes = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ei, facts = build_edge_index(coords, 448.0, window=2)
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _edges_by_kdtree(coords / 448.0, 2)
            ktimes.append(time.perf_counter() - t0)
        dense_s = None
        if n <= dense_up_to:
            t0 = time.perf_counter()
            dense_edges = dense_radius_edges(coords, 448.0)
            dense_s = time.perf_counter() - t0
            if dense_edges != ei.shape[1]:
                raise RuntimeError(f"dense ({dense_edges}) and table builders disagree")
        out.append({
            "patches": n, "edges": int(ei.shape[1]), "builder": facts["builder"],
            "median_s": float(np.median(times)), "min_s": float(np.min(times)),
            "kdtree_median_s": float(np.median(ktimes)), "dense_s": dense_s,
        })
    return out


def _synthetic_slide(side: int = 2048, seed: int = 0):
    """An in-memory H&E-like slide (stain densities through skimage's hed2rgb, 20×)."""
    from skimage.color import hed2rgb

    from srmil.slides.readers import Slide

    rng = np.random.default_rng(seed)
    hed = np.zeros((side, side, 3))
    blobs = rng.uniform(0, 1, (side // 32, side // 32))
    hed[..., 0] = 0.08 * np.kron(blobs, np.ones((32, 32))) * rng.uniform(0.5, 1.5, (side, side))
    hed[..., 1] = 0.04 * rng.uniform(0.5, 1.5, (side, side))
    image = (hed2rgb(hed) * 255).clip(0, 255).astype(np.uint8)  # (side, side, 3)

    class MemorySlide(Slide):
        def read_region(self, xy, level, size):
            x, y = int(xy[0]), int(xy[1])
            out = np.full((int(size[1]), int(size[0]), 3), 255, np.uint8)
            crop = image[y:y + out.shape[0], x:x + out.shape[1]]
            out[:crop.shape[0], :crop.shape[1]] = crop
            return out

    s = MemorySlide()
    s.path, s.slide_id = None, "synthetic"
    s.dimensions = (side, side)
    s.level_count, s.level_dimensions, s.level_downsamples = 1, ((side, side),), (1.0,)
    s.mpp, s.magnification = 0.5, 20
    return s


def write_bench_pyramid(source: str | Path, out: str | Path, reps: tuple[int, int] = (2, 2),
                        levels: int = 3) -> Path:
    """A 40× pyramid TIFF from a 20× slide, for reading benchmarks: the slide upsampled 2×
    (nearest), tiled ``reps`` (x, y) times (alternate copies mirrored), levels 40×, 20×, 10×.

    Tiles are 256 px, zlib (``imagecodecs``' JPEG is not a dependency); level 0 is written
    tile by tile from the 20× level, so memory holds the 20× level, not level 0. OpenSlide
    reads the file as ``generic-tiff`` with the pixel size from its resolution tags.
    """
    import tifffile
    from PIL import Image

    from srmil.slides.readers import open_slide

    with open_slide(source) as s:
        w, h = s.dimensions
        base = s.read_region((0, 0), 0, (w, h))  # (h, w, 3) at 20×
        mpp = s.mpp / 2
    row = [base if i % 2 == 0 else base[:, ::-1] for i in range(reps[0])]
    rows = [np.concatenate(row, 1) for _ in range(reps[1])]
    half = np.concatenate([r if j % 2 == 0 else r[::-1] for j, r in enumerate(rows)], 0)
    hh, hw = half.shape[:2]  # level 1 (20×); level 0 is (2 hh, 2 hw)
    t = 256

    def level0_tiles():
        for y in range(0, 2 * hh, t):
            for x in range(0, 2 * hw, t):
                blk = half[y // 2:(y + t) // 2, x // 2:(x + t) // 2].repeat(2, 0).repeat(2, 1)
                tile = np.full((t, t, 3), 255, np.uint8)
                tile[:blk.shape[0], :blk.shape[1]] = blk
                yield tile

    dest = Path(out)
    with tifffile.TiffWriter(dest, bigtiff=True) as tif:
        for lvl in range(levels):
            res = 1e4 / (mpp * 2**lvl)  # px per cm
            kw = {"resolution": (res, res), "resolutionunit": "CENTIMETER", "tile": (t, t),
                  "compression": "zlib", "photometric": "rgb", "metadata": None,
                  "subfiletype": 1 if lvl else 0}
            if lvl == 0:
                tif.write(level0_tiles(), shape=(2 * hh, 2 * hw, 3), dtype=np.uint8, **kw)
            else:
                tif.write(half, **kw)
                half = np.asarray(Image.fromarray(half).resize(
                    (half.shape[1] // 2, half.shape[0] // 2), Image.Resampling.BOX))
    return dest


def bench_extract(slide_path: str | None = None, n_patches: int = 128,
                  workers: tuple[int, ...] = (0, 2), batch_size: int = 32,
                  encoders: tuple[str, ...] = ("stain_stats", "resnet50_trunc"),
                  patch_size: int = 224) -> tuple[str, list[dict]]:
    """Patches per second on the CPU of reading alone, of each encoder alone (patches already
    in memory), and of read + encode through ``encode_patches`` (the ``extract_slide`` loop),
    for each DataLoader worker count. ResNet-50 runs with random weights (same cost).

    Patches: the first ``n_patches`` distinct tissue patches (20×, ``patch_size`` px, in
    grid order, as extraction reads them; fewer if the slide has fewer) of ``slide_path``.
    By default a 40× pyramid written to a temporary folder from the CMU-1 fixture (upsampled
    2×, tiled 2 × 2: :func:`write_bench_pyramid`), so patches are read from its 20× level as
    for a 40× scan and no patch is read twice; without the fixture an in-memory synthetic
    slide.

    Returns:
        (a line describing the input, rows of {stage, encoder, workers, patches, seconds,
        patches_per_s}).
    """
    from srmil.slides.readers import open_slide

    fixture = FIXTURES_DIR / "cmu_small_region.svs"
    with tempfile.TemporaryDirectory(prefix="srmil-bench-") as tmp:
        name = slide_path or "synthetic in-memory slide"
        if slide_path is None and fixture.is_file():
            slide_path = str(write_bench_pyramid(fixture, Path(tmp) / "cmu_40x_2x2.tif"))
            name = f"40× pyramid (zlib TIFF) of {fixture.name} upsampled 2×, tiled 2 × 2"
        slide = open_slide(slide_path) if slide_path else _synthetic_slide()
        try:
            return _bench_extract(slide, name, n_patches, workers, batch_size, encoders,
                                  patch_size)
        finally:
            slide.close()


def _bench_extract(slide, name: str, n_patches: int, workers: tuple[int, ...], batch_size: int,
                   encoders: tuple[str, ...], patch_size: int) -> tuple[str, list[dict]]:
    import torch

    from srmil.config import PatchConfig
    from srmil.features.encoders import create_encoder
    from srmil.features.extract import PatchDataset, _worker_init, encode_patches
    from srmil.slides.patching import patch_level, read_patch, select_patches
    from srmil.slides.tissue import segment_tissue

    cfg = PatchConfig(magnification=20, patch_size=patch_size)
    coords, _, grid = select_patches(slide, segment_tissue(slide).polygons, cfg)
    if len(coords) == 0:
        raise RuntimeError(f"no tissue patches on {name}")
    coords = coords[:n_patches]  # distinct patches only: no read is cache-warm by repetition
    n_patches = len(coords)
    ps0 = grid.patch_size_level0
    level, side = patch_level(slide, ps0, patch_size)
    source = (f"{name} ({slide.dimensions[0]}×{slide.dimensions[1]}, {slide.magnification}×, "
              f"{slide.level_count} levels): {n_patches} distinct tissue patches of "
              f"{patch_size} px at 20×, read as {side} px from level {level} "
              f"(downsample {slide.level_downsamples[level]:g})")
    rows: list[dict] = []

    def row(stage: str, enc: str | None, w: int | None, seconds: float) -> None:
        rows.append({"stage": stage, "encoder": enc, "workers": w, "patches": n_patches,
                     "seconds": seconds, "patches_per_s": n_patches / seconds})

    built = {name: create_encoder(name, allow_random=True) for name in encoders}
    for w in workers:
        ds = PatchDataset(slide, coords, ps0, patch_size)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=batch_size, num_workers=w,
            worker_init_fn=_worker_init if w else None)
        t0 = time.perf_counter()
        for _ in loader:
            pass
        row("read", None, w, time.perf_counter() - t0)
    sample = np.stack([read_patch(slide, xy, ps0, patch_size) for xy in coords[:batch_size]])
    for name, enc in built.items():
        with torch.inference_mode():
            enc(enc.preprocess(sample[:2]))  # warm-up
            t0 = time.perf_counter()
            done = 0
            while done < n_patches:
                enc(enc.preprocess(sample))
                done += len(sample)
            row("encode", name, None, (time.perf_counter() - t0) * n_patches / done)
        for w in workers:
            out = np.zeros((n_patches, enc.dim), np.float32)
            t0 = time.perf_counter()
            encode_patches(slide, coords, ps0, enc, out, batch_size=batch_size, num_workers=w,
                           progress=False, amp=False, desc="", overall=None)
            row("read+encode", name, w, time.perf_counter() - t0)
    return source, rows
