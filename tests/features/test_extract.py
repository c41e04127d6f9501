"""extract_slide: patch file + slide + encoder -> TRIDENT feature h5 that read_bag reads."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from feature_fakes import ArraySlide, patch_file, tissue_image

from srmil.bags.readers import read_bag
from srmil.errors import SrmilError
from srmil.features.encoders import create_encoder
from srmil.features.extract import extract_slide
from srmil.slides.patching import read_patch

TRIDENT_ATTRS = ("patch_size", "patch_size_level0", "level0_magnification",
                 "target_magnification", "overlap", "name")


def _coords(step: int, n_side: int = 3) -> np.ndarray:
    g = np.stack(np.meshgrid(np.arange(n_side), np.arange(n_side)), -1).reshape(-1, 2)
    return (g * step)[::-1].astype(np.int64)  # not row-major: order must be kept


@pytest.fixture(scope="module")
def stain():
    return create_encoder("stain_stats")


def test_writes_trident_h5_that_read_bag_reads(tmp_path, array_slide, stain):
    coords = _coords(128)
    pf = patch_file(tmp_path / "patches" / "array_patches.h5", coords, array_slide, 128)
    out = tmp_path / "features_stain_stats" / "array.h5"
    n = extract_slide(array_slide, pf, stain, out, batch_size=4, num_workers=0, progress=False)
    assert n == 9 and out.is_file()
    bag = read_bag(out)
    assert bag.reader == "trident" and bag.features.shape == (9, stain.dim)
    assert bag.features.dtype == np.float32
    np.testing.assert_array_equal(bag.coords, coords)
    assert bag.patch_size_level0 == 128 and bag.step == 128
    with h5py.File(out) as h5, h5py.File(pf) as p:
        for k in TRIDENT_ATTRS:
            assert h5["coords"].attrs[k] == p["coords"].attrs[k]
        assert h5["features"].attrs["encoder"] == "stain_stats"
        assert h5["features"].attrs["name"] == "array"
        assert h5["features"].attrs["weights_sha256"] == "none"  # weight-free
    # each row is the encoder's output for the patch at that row's coordinates
    patches = np.stack([read_patch(array_slide, xy, 128, 224) for xy in coords])
    with torch.inference_mode():
        want = stain(stain.preprocess(patches)).numpy()
    np.testing.assert_allclose(bag.features, want, rtol=1e-5, atol=1e-6)
    # left half of the image is haematoxylin-rich: h_mean follows the coordinates
    left = coords[:, 0] + 128 <= 256
    assert bag.features[left, 0].min() > bag.features[~left, 0].max()


def test_workers_give_the_same_features(tmp_path, array_slide, stain):
    coords = _coords(128)
    pf = patch_file(tmp_path / "p.h5", coords, array_slide, 128)
    a = tmp_path / "a.h5"
    b = tmp_path / "b.h5"
    extract_slide(array_slide, pf, stain, a, batch_size=2, num_workers=0, progress=False)
    extract_slide(array_slide, pf, stain, b, batch_size=2, num_workers=2, progress=False)
    np.testing.assert_array_equal(read_bag(a).features, read_bag(b).features)


def test_float16_and_a_timm_encoder(tmp_path, array_slide):
    enc = create_encoder("timm:resnet18", allow_random=True, input_size=64)
    coords = _coords(128, 2)
    pf = patch_file(tmp_path / "p.h5", coords, array_slide, 128)
    f32 = tmp_path / "f32.h5"
    f16 = tmp_path / "f16.h5"
    extract_slide(array_slide, pf, enc, f32, batch_size=3, num_workers=0, progress=False)
    extract_slide(array_slide, pf, enc, f16, batch_size=3, num_workers=0, progress=False,
                  precision="fp16")
    a, b = read_bag(f32).features, read_bag(f16).features
    assert a.shape == (4, 512) and a.dtype == np.float32 and b.dtype == np.float16
    np.testing.assert_allclose(b.astype(np.float32), a, rtol=2e-3, atol=2e-3)
    with pytest.raises(SrmilError, match="precision must be one of fp32, fp16"):
        extract_slide(array_slide, pf, enc, tmp_path / "x.h5", precision="bf16")


def test_empty_patch_file_gives_zero_rows(tmp_path, array_slide, stain):
    pf = patch_file(tmp_path / "p.h5", np.zeros((0, 2), np.int64), array_slide, 128)
    out = tmp_path / "empty.h5"
    assert extract_slide(array_slide, pf, stain, out, num_workers=2, progress=False) == 0
    with h5py.File(out) as h5:
        assert h5["features"].shape == (0, stain.dim) and h5["coords"].shape == (0, 2)
        assert h5["coords"].attrs["patch_size_level0"] == 128


def test_refuses_to_overwrite_and_bad_patch_files(tmp_path, array_slide, stain):
    pf = patch_file(tmp_path / "p.h5", _coords(128, 1), array_slide, 128)
    out = tmp_path / "f.h5"
    extract_slide(array_slide, pf, stain, out, num_workers=0, progress=False)
    with pytest.raises(SrmilError, match="refusing to overwrite"):
        extract_slide(array_slide, pf, stain, out, num_workers=0, progress=False)
    extract_slide(array_slide, pf, stain, out, num_workers=0, progress=False, overwrite=True)
    bare = tmp_path / "bare.h5"
    with h5py.File(bare, "w") as h5:
        h5["coords"] = np.zeros((2, 2), np.int64)
    with pytest.raises(SrmilError, match="lacks a positive 'patch_size_level0'"):
        extract_slide(array_slide, bare, stain, tmp_path / "g.h5", progress=False)
    assert not (tmp_path / "g.h5").exists()
    with pytest.raises(SrmilError, match="no such patch file"):
        extract_slide(array_slide, tmp_path / "none.h5", stain, tmp_path / "g.h5")


def test_downsampled_patches_from_a_40x_slide(tmp_path, stain):
    """A 20× job on a 40× scan reads 2× larger level-0 regions (step 2·patch size)."""
    slide = ArraySlide(tissue_image(512), mpp=0.25)  # 40×
    coords = _coords(256, 2)
    pf = patch_file(tmp_path / "p.h5", coords, slide, 128, target_mag=20)
    out = tmp_path / "f.h5"
    extract_slide(slide, pf, stain, out, num_workers=0, progress=False)
    bag = read_bag(out)
    assert bag.patch_size_level0 == 256 and bag.step == 256
    np.testing.assert_array_equal(bag.coords, coords)


def test_real_svs_end_to_end_with_workers(tmp_path, stain, svs_path):
    """The CMU-1 Aperio scan through S's reader: workers reopen the slide by path and give the
    same features as reading in this process; background and tissue patches differ."""
    from srmil.config import PatchConfig
    from srmil.slides.patching import grid_coords, patch_grid, select_patches
    from srmil.slides.readers import open_slide
    from srmil.slides.tissue import segment_tissue

    with open_slide(svs_path) as slide:
        cfg = PatchConfig(magnification=20, patch_size=224)
        tissue, _, _ = select_patches(slide, segment_tissue(slide).polygons, cfg)
        corner = grid_coords(patch_grid(slide, cfg))[:1]  # top-left: background on this scan
        coords = np.concatenate([tissue[::max(1, len(tissue) // 11)][:11], corner])
        pf = patch_file(tmp_path / "cmu_patches.h5", coords, slide, 224)
        a, b = tmp_path / "a.h5", tmp_path / "b.h5"
        extract_slide(slide, pf, stain, a, batch_size=4, num_workers=0, progress=False)
        extract_slide(slide, pf, stain, b, batch_size=4, num_workers=2, progress=False)
    fa, fb = read_bag(a), read_bag(b)
    np.testing.assert_array_equal(fa.features, fb.features)
    assert fa.step == 224 and fa.features.shape == (12, stain.dim)
    np.testing.assert_array_equal(fa.coords, coords)
    frac = fa.features[:, 20]  # tissue_fraction
    assert np.median(frac[:11]) > 0.5 and frac[11] < 0.1


def test_patch_dataset_pickles_and_reopens_the_slide(svs_path):
    """Spawned workers (macOS/Windows) get the dataset pickled: the OpenSlide handle is left
    behind and the copy reopens the file by path, with the same pixel size, on its first read."""
    import pickle

    from srmil.features.extract import PatchDataset
    from srmil.slides.readers import open_slide

    coords = np.array([[224, 448], [672, 896]], np.int64)
    with open_slide(svs_path, mpp=0.25) as slide:  # an override must survive the trip
        ds = PatchDataset(slide, coords, 448, 224)
        copy = pickle.loads(pickle.dumps(ds))
        assert copy.slide is None
        i, patch = copy[1]
        assert i == 1 and copy.slide is not slide and copy.slide.mpp == 0.25
        assert copy.slide.path == slide.path
        torch.testing.assert_close(patch, ds[1][1], rtol=0, atol=0)
        copy.slide.close()


def test_spawned_workers_give_the_same_features(svs_path, stain):
    import multiprocessing

    from srmil.features.extract import PatchDataset, _worker_init
    from srmil.slides.readers import open_slide

    coords = np.array([[0, 0], [224, 0], [896, 1344]], np.int64)
    with open_slide(svs_path) as slide:
        ds = PatchDataset(slide, coords, 224, 224)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=2, num_workers=1, worker_init_fn=_worker_init,
            multiprocessing_context=multiprocessing.get_context("spawn"))
        got = torch.cat([b for _, b in loader])
        want = torch.stack([ds[i][1] for i in range(len(ds))])
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_patch_bar_only_on_a_terminal(tmp_path, array_slide, stain, capsys):
    """By default the per-slide bar is drawn only when stderr is a terminal (never in a SLURM
    log, where each update is a carriage-return line); progress=True forces it."""
    pf = patch_file(tmp_path / "p.h5", _coords(128, 2), array_slide, 128)
    extract_slide(array_slide, pf, stain, tmp_path / "a.h5", num_workers=0)
    assert capsys.readouterr().err == ""
    extract_slide(array_slide, pf, stain, tmp_path / "b.h5", num_workers=0, progress=True)
    assert "0/4" in capsys.readouterr().err
