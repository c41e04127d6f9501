"""``stain_stats``: weight-free, hand-crafted H&E features (stain densities and texture)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from srmil.features.base import Encoder

# --------------------------------------------------------------------------------------------
# stain_stats: weight-free H&E features


def _stain_feature_names() -> tuple[str, ...]:
    names = []
    for ch in ("h", "e", "d", "od"):
        names += [f"{ch}_{s}" for s in ("mean", "std", "p10", "p50", "p90")]
    names.append("tissue_fraction")
    names += [f"rgb_{c}_{s}" for s in ("mean", "std") for c in "rgb"]
    for d in StainStats.GLCM_DISTANCES:
        names += [f"glcm_h_d{d}_{p}" for p in StainStats.GLCM_PROPS]
    names += ["grad_h_mean", "grad_e_mean"]
    return tuple(names)


class StainStats(Encoder):
    """Weight-free H&E patch features: stain densities, colour, and haematoxylin texture.

    Colour deconvolution as ``skimage.color.rgb2hed`` (Ruifrok & Johnston 2001; the same
    matrix), computed in torch for whole batches. Tissue pixels are those with OD > 0.15 (the
    usual background threshold); every feature but the tissue fraction is computed over them
    only, so that it describes the tissue and not how much background the patch holds (a patch
    with under ``MIN_TISSUE`` tissue uses all its pixels). For each of haematoxylin (H), eosin
    (E), DAB residual (D) and mean optical density over RGB (OD = -log10((I·255 + 1) / 256)):
    mean, std and the 10/50/90th percentiles (20); the tissue fraction (1); RGB mean and std (6);
    grey-level co-occurrence texture of the H channel quantised to 8 fixed levels over
    [0, H_MAX], at distances 1 and 4, angles 0° and 90° averaged, symmetric and normalised as
    ``skimage.feature.graycomatrix``, counting pairs of two tissue pixels: contrast,
    dissimilarity, homogeneity, energy, correlation (10); mean gradient magnitude of H and E
    (2). 39 features, deterministic, in ``FEATURE_NAMES`` order.
    """

    GLCM_LEVELS = 8
    GLCM_DISTANCES = (1, 4)
    GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
    H_MAX = 0.3  # ~99th percentile of rgb2hed H over tissue of the CMU-1 H&E fixture slide
    OD_TISSUE = 0.15
    MIN_TISSUE = 0.05  # below this tissue fraction (~2500 px of 224²) stats use every pixel
    HIST_BINS = 4096

    def __init__(self, input_size: int = 224) -> None:
        super().__init__(name="stain_stats", dim=len(FEATURE_NAMES), input_size=input_size,
                         mean=None, std=None)
        from skimage.color.colorconv import hed_from_rgb

        m = torch.tensor(hed_from_rgb, dtype=torch.float32)
        self.register_buffer("hed_from_rgb", m, persistent=False)
        # largest possible H, E, D (optical densities in [0, 1] for uint8 input) and OD
        hed_max = m.clamp_min(0).sum(0)
        od_max = torch.tensor([math.log10(256.0)])
        self.register_buffer("channel_max", torch.cat([hed_max, od_max]), persistent=False)

    def hed(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) RGB in [0, 1] -> (B, 3, S, S) H, E, D as ``skimage.color.rgb2hed``."""
        log_rgb = torch.log(x.clamp_min(1e-6))  # (B, 3, S, S)
        m = self.hed_from_rgb / math.log(1e-6)  # skimage divides by log(1e-6) first
        return torch.einsum("bchw,cd->bdhw", log_rgb, m).clamp_min_(0.0)

    @staticmethod
    def _mean_std(v: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, P) values, (B, P) 0/1 pixel weights -> mean and std (B, C) over the pixels."""
        n = w.sum(-1).clamp_min(1.0).view(-1, 1)  # (B, 1)
        w = w.unsqueeze(1)  # (B, 1, P)
        mean = (v * w).sum(-1) / n  # (B, C)
        var = ((v - mean.unsqueeze(-1)) ** 2 * w).sum(-1) / n
        return mean, var.sqrt()

    def _stats(self, v: Tensor, w: Tensor | None = None) -> Tensor:
        """(B, 4, P) H, E, D, OD values -> (B, 4, 5) mean, std, p10, p50, p90 over the pixels of
        weight 1 in ``w`` (B, P) (``None``: all).

        Percentiles from a fixed 4096-bin histogram over each channel's full range (bin
        centres, so within half a bin of the exact nearest-rank value): one pass, no sort.
        """
        b, c, p = v.shape
        if w is None:
            w = torch.ones(b, p, device=v.device)
        bins = self.HIST_BINS
        hi = self.channel_max.view(1, c, 1)
        idx = (v * (bins / hi)).long().clamp_(0, bins - 1)  # (B, C, P)
        idx += torch.arange(b * c, device=v.device).view(b, c, 1) * bins
        weights = w.unsqueeze(1).expand(b, c, p).flatten()  # (B·C·P,)
        counts = torch.bincount(idx.flatten(), weights=weights, minlength=b * c * bins)
        cdf = counts.view(b, c, bins).cumsum(-1)  # (B, C, bins)
        n = w.sum(-1).round().view(b, 1, 1)  # (B, 1, 1) pixels counted
        q = []
        for f in (0.1, 0.5, 0.9):
            rank = (f * (n - 1)).round().clamp(min=0) + 1  # nearest rank, 1-based
            first = (cdf < rank - 0.5).sum(-1)  # (B, C) first bin holding that rank
            q.append((first.float() + 0.5) / bins * hi.squeeze(-1))
        mean, std = self._mean_std(v, w)
        return torch.stack([mean, std, *q], dim=-1)

    def glcm(self, q: Tensor, distance: int, w: Tensor | None = None) -> Tensor:
        """(B, S, S) int levels -> (B, 2, L, L) symmetric normalised co-occurrence matrices for
        angles 0 (horizontal) and 90° (vertical) at ``distance``, counting the pairs of two
        pixels of weight 1 in ``w`` (B, S, S) (``None``: all pairs)."""
        b, levels = q.shape[0], self.GLCM_LEVELS
        mats = []
        for a, c, wa, wc in (
                (q[:, :, :-distance], q[:, :, distance:], (slice(None), slice(None, -distance)),
                 (slice(None), slice(distance, None))),
                (q[:, :-distance, :], q[:, distance:, :], (slice(None, -distance), slice(None)),
                 (slice(distance, None), slice(None)))):
            idx = (a * levels + c).reshape(b, -1)  # (B, P)
            idx = idx + torch.arange(b, device=q.device).unsqueeze(1) * levels * levels
            pair_w = None if w is None else (w[:, wa[0], wa[1]] * w[:, wc[0], wc[1]]).flatten()
            m = torch.bincount(idx.flatten(), weights=pair_w,
                               minlength=b * levels * levels).float()
            m = m.view(b, levels, levels)
            m = m + m.transpose(1, 2)  # symmetric
            mats.append(m / m.sum((1, 2), keepdim=True).clamp_min(1.0))
        return torch.stack(mats, dim=1)  # (B, 2, L, L)

    def glcm_props(self, p: Tensor) -> Tensor:
        """(B, A, L, L) normalised GLCMs -> (B, 5) props averaged over angles (skimage's
        ``graycoprops`` definitions)."""
        levels = p.shape[-1]
        i = torch.arange(levels, device=p.device, dtype=p.dtype).view(levels, 1)
        j = i.view(1, levels)
        contrast = (p * (i - j) ** 2).sum((-2, -1))
        dissimilarity = (p * (i - j).abs()).sum((-2, -1))
        homogeneity = (p / (1.0 + (i - j) ** 2)).sum((-2, -1))
        energy = (p ** 2).sum((-2, -1)).sqrt()
        mu_i = (p * i).sum((-2, -1), keepdim=True)
        mu_j = (p * j).sum((-2, -1), keepdim=True)
        sd_i = (p * (i - mu_i) ** 2).sum((-2, -1)).sqrt()
        sd_j = (p * (j - mu_j) ** 2).sum((-2, -1)).sqrt()
        cov = (p * (i - mu_i) * (j - mu_j)).sum((-2, -1))
        flat = (sd_i < 1e-15) | (sd_j < 1e-15)  # skimage: correlation 1 for a flat patch
        correlation = torch.where(flat, torch.ones_like(cov), cov / (sd_i * sd_j).clamp_min(
            1e-30))
        props = torch.stack([contrast, dissimilarity, homogeneity, energy, correlation], -1)
        return props.mean(1)  # (B, 5)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) RGB in [0, 1] (``preprocess`` output) -> (B, 39)."""
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            b = x.shape[0]
            hed = self.hed(x)  # (B, 3, S, S)
            # mean over RGB of -log10((I·255 + 1) / 256)
            od = math.log10(256.0) - torch.log10(x * 255.0 + 1.0).mean(1, keepdim=True)
            dens = torch.cat([hed, od], 1).flatten(2)  # (B, 4, P)
            is_tissue = od.flatten(1) > self.OD_TISSUE  # (B, P)
            tissue = is_tissue.float().mean(1, keepdim=True)  # (B, 1)
            # pixels the statistics are over: tissue, or all where there is almost none
            w = (is_tissue | (tissue < self.MIN_TISSUE)).float()  # (B, P)
            stats = self._stats(dens, w).flatten(1)  # (B, 20)
            colour = torch.cat(self._mean_std(x.flatten(2), w), 1)  # (B, 6)
            h = hed[:, 0]  # (B, S, S)
            w_img = w.view_as(h)  # (B, S, S)
            q = (h / self.H_MAX * self.GLCM_LEVELS).floor().clamp(0, self.GLCM_LEVELS - 1).long()
            texture = torch.cat([self.glcm_props(self.glcm(q, d, w_img))
                                 for d in self.GLCM_DISTANCES], 1)  # (B, 10)
            he = hed[:, :2]  # (B, 2, S, S)
            gx = he[..., :, 1:] - he[..., :, :-1]
            gy = he[..., 1:, :] - he[..., :-1, :]
            mag = (gx[..., :-1, :] ** 2 + gy[..., :, :-1] ** 2).sqrt().flatten(2)  # (B, 2, P')
            grad = self._mean_std(mag, w_img[:, :-1, :-1].flatten(1))[0]  # (B, 2)
            out = torch.cat([stats, tissue, colour, texture, grad], 1)  # (B, 39)
        return out.reshape(b, -1)


FEATURE_NAMES = _stain_feature_names()
