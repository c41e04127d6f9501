"""stain_stats: the weight-free H&E encoder, checked against skimage and on stain contrasts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from feature_fakes import stain_rgb
from skimage.color import rgb2hed
from skimage.feature import graycomatrix, graycoprops

from srmil.features.encoders import FEATURE_NAMES, StainStats, create_encoder


@pytest.fixture(scope="module")
def enc() -> StainStats:
    return create_encoder("stain_stats")


def _features(enc, patches: np.ndarray) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        y = enc(enc.preprocess(patches)).numpy()  # (B, 39)
    return {name: y[:, i] for i, name in enumerate(FEATURE_NAMES)}


def test_dimension_and_names(enc):
    assert enc.dim == len(FEATURE_NAMES) == 39 and len(set(FEATURE_NAMES)) == 39
    assert enc.weights is None and enc.input_size == 224 and enc.mean is None


def test_colour_deconvolution_equals_skimage(enc):
    rgb = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255
    got = enc.hed(x).permute(0, 2, 3, 1).numpy()
    want = np.stack([rgb2hed(im) for im in rgb])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_texture_equals_skimage_graycoprops(enc):
    rng = np.random.default_rng(1)
    q = rng.integers(0, enc.GLCM_LEVELS, (3, 40, 40))
    q[2] = 5  # a flat patch: skimage's correlation is 1 there
    for d in enc.GLCM_DISTANCES:
        got = enc.glcm_props(enc.glcm(torch.from_numpy(q), d)).numpy()  # (3, 5)
        for b in range(3):
            m = graycomatrix(q[b].astype(np.uint8), [d], [0, np.pi / 2],
                             levels=enc.GLCM_LEVELS, symmetric=True, normed=True)
            want = [graycoprops(m, p).mean() for p in enc.GLCM_PROPS]
            np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-6)


def test_percentiles_within_half_a_bin(enc):
    rng = np.random.default_rng(2)
    v = torch.from_numpy(rng.uniform(0, 0.4, (2, 4, 5000)).astype(np.float32))
    got = enc._stats(v).numpy()  # (2, 4, 5)
    half_bin = enc.channel_max.numpy() / enc.HIST_BINS / 2
    for i, f in enumerate((10, 50, 90)):
        want = np.percentile(v.numpy(), f, axis=-1, method="nearest")
        assert (np.abs(got[..., 2 + i] - want) <= half_bin + 1e-6).all()
    np.testing.assert_allclose(got[..., 0], v.mean(-1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(got[..., 1], v.std(-1, unbiased=False).numpy(), rtol=1e-4)


def test_separates_haematoxylin_from_eosin(enc):
    h_rich = np.stack([stain_rgb(0.12, 0.02, (224, 224), seed=s) for s in range(3)])
    e_rich = np.stack([stain_rgb(0.01, 0.06, (224, 224), seed=s) for s in range(3)])
    fh, fe = _features(enc, h_rich), _features(enc, e_rich)
    assert (fh["h_mean"] > 3 * fe["h_mean"]).all()
    assert (fe["e_mean"] > 2 * fh["e_mean"]).all()
    assert (fh["h_p50"] > fe["h_p90"]).all()
    assert (fh["tissue_fraction"] > 0.9).all() and (fe["tissue_fraction"] > 0.9).all()


def test_blank_patch_is_background_and_finite(enc):
    white = np.full((2, 224, 224, 3), 250, np.uint8)
    f = _features(enc, white)
    assert np.isfinite(np.stack(list(f.values()))).all()
    assert (f["tissue_fraction"] == 0).all() and (f["h_mean"] < 0.01).all()
    assert (f["glcm_h_d1_correlation"] == 1).all() and (f["glcm_h_d1_contrast"] == 0).all()


def test_deterministic_and_batch_independent(enc):
    rgb = np.random.default_rng(3).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    with torch.inference_mode():
        a = enc(enc.preprocess(rgb))
        b = torch.cat([enc(enc.preprocess(rgb[i:i + 1])) for i in range(4)])
    torch.testing.assert_close(a, b)


def test_real_slide_nuclei_and_background_differ(enc, svs_path):
    """On the CMU-1 H&E scan: the most haematoxylin-dense patch of tissue has more H and more
    H texture contrast than the emptiest background patch (its stats fall back to all pixels)."""
    import openslide

    with openslide.OpenSlide(str(svs_path)) as osr:
        w, h = osr.dimensions
        xs = range(0, w - 224, 448)
        ys = range(0, h - 224, 448)
        patches = np.stack([np.asarray(osr.read_region((x, y), 0, (224, 224)).convert("RGB"))
                            for y in ys for x in xs])
    f = _features(enc, patches)
    dense = int(np.argmax(np.where(f["tissue_fraction"] > 0.8, f["h_mean"], -1)))
    empty = int(np.argmin(f["tissue_fraction"]))
    assert f["tissue_fraction"][dense] > 0.8 and f["tissue_fraction"][empty] < enc.MIN_TISSUE
    assert f["h_mean"][dense] > 5 * f["h_mean"][empty]
    assert f["glcm_h_d1_contrast"][dense] > f["glcm_h_d1_contrast"][empty]


def test_stain_statistics_are_over_tissue_only(enc):
    """Half a patch of background changes the tissue fraction, not what the tissue looks like:
    H/E/OD statistics, colour and texture stay those of the tissue (they halved before)."""
    full = stain_rgb(0.12, 0.02, (224, 224), seed=4)
    half = full.copy()
    half[:, 112:] = 245  # white glass
    f = _features(enc, np.stack([full, half]))
    assert f["tissue_fraction"][0] > 0.95 and abs(f["tissue_fraction"][1] - 0.5) < 0.03
    for name in ("h_mean", "h_p50", "e_mean", "od_mean", "od_p10", "rgb_r_mean",
                 "glcm_h_d1_contrast", "glcm_h_d4_homogeneity", "grad_h_mean"):
        assert f[name][1] == pytest.approx(f[name][0], rel=0.1), name
    # the tissue pixels alone give the same statistics as the whole tissue patch
    assert f["h_std"][1] == pytest.approx(f["h_std"][0], rel=0.1)
