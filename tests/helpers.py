"""Small bag writers for tests: every format srmil reads, built in the test."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from srmil.bags.writer import write_trident_bag


def grid_coords(n: int, step: int, seed: int = 0, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """(n, 2) distinct grid positions (a ragged region) at ``step``, plus ``offset``."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n / 0.5)))
    cells = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)
    cells = cells[rng.permutation(len(cells))[:n]]
    return cells * step + np.asarray(offset)


def trident_bag(path: Path, n: int = 50, d: int = 8, mag0: int = 40, ps: int = 224,
                dtype=np.float32, seed: int = 0, coords: np.ndarray | None = None,
                overlap: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    step = ps * mag0 // 20 - overlap * mag0 // 20
    c = grid_coords(n, step, seed) if coords is None else coords
    feats = rng.standard_normal((len(c), d)).astype(dtype)
    return write_trident_bag(path, feats, c, patch_size=ps, level0_magnification=mag0,
                             target_magnification=20, overlap=overlap, encoder="test")


def clam_h5(path: Path, n: int = 40, d: int = 8, ps: int = 256, downsample: float = 2.0,
            seed: int = 0, features: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    c = grid_coords(n, int(ps * downsample), seed)
    with h5py.File(path, "w") as h5:
        if features:
            h5["features"] = rng.standard_normal((n, d)).astype(np.float32)
        ds = h5.create_dataset("coords", data=c)
        ds.attrs["patch_size"] = ps
        ds.attrs["patch_level"] = 1
        ds.attrs["downsample"] = np.array([downsample, downsample])
        ds.attrs["name"] = path.stem
    return path


def stamp_h5(path: Path, n: int = 30, d: int = 8, tile_um: float = 256.0, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    c = grid_coords(n, 1, seed) * tile_um + 0.0001 * rng.standard_normal((n, 2))
    with h5py.File(path, "w") as h5:
        h5["feats"] = rng.standard_normal((n, d)).astype(np.float16)
        h5["coords"] = c
        h5.attrs["unit"] = "um"
        h5.attrs["tile_size_um"] = tile_um
        h5.attrs["tile_size_px"] = 224
        h5.attrs["extractor"] = "test"
    return path


def raw_h5(path: Path, **datasets) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        for k, v in datasets.items():
            h5[k] = v
    return path


def pt_bag(path: Path, n: int = 40, d: int = 8, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torch.from_numpy(np.random.default_rng(seed).standard_normal((n, d))).float(),
               path)
    return path


def labels_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.write_text("slide_id,case_id,label\n" + "".join(f"{s},{c},{y}\n" for s, c, y in rows))
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Run the srmil CLI in-process: (exit code, stdout, stderr)."""
    import pytest

    from srmil.cli.main import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err
