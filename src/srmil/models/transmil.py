r"""TransMIL: transformer-based correlated MIL (Shao et al., NeurIPS 2021,
https://arxiv.org/abs/2106.00908; official code szc19990412/TransMIL).

Algorithm 2 of the paper (TPT module), with :math:`S = \lceil\sqrt N\rceil`:

.. math::
    \mathbf{H} = \mathrm{ReLU}(\mathbf{X}\mathbf{W}_1) \in \mathbb{R}^{N\times d}, \quad
    \mathbf{H}_s = [\mathbf{h}_{cls};\ \mathbf{H};\ \mathbf{H}_{1:S^2-N}]
    \in \mathbb{R}^{(S^2+1)\times d}

(the sequence is squared by repeating its first :math:`S^2 - N` patches), then
:math:`\mathbf{H}_s \leftarrow \mathbf{H}_s + \mathrm{Nystr\ddot{o}m}(\mathrm{LN}(\mathbf{H}_s))`,
PPEG (the patch tokens reshaped to an S×S image, plus depth-wise 7×7, 5×5 and 3×3 convolutions;
the class token passes through), a second Nyström layer, LayerNorm, and
:math:`\mathrm{logits} = \mathbf{W}_2\,\mathbf{h}_{cls}`.

Checked against the paper and ``models/TransMIL.py``: ``_fc1`` = ``Linear(D, 512) + ReLU``;
class token ``randn(1, 1, 512)``; pre-norm ``TransLayer`` with ``NystromAttention(dim=512,
dim_head=64, heads=8, num_landmarks=256, pinv_iterations=6, residual=True, dropout=0.1)``;
PPEG between the two layers; final LayerNorm; ``_fc2`` on the class token. The attention
itself is lucidrains' ``nystrom_attention.NystromAttention`` (MIT), the very package the
official code imports, so the Nyström maths, landmark padding and the 33-tap depth-wise
residual conv of the values are the official ones.

Why not torchmil 1.0.2's ``TransMIL``: one BCE logit (binary only), its Nyström attention has no
depth-wise residual conv of the values and no dropout, 4 heads instead of 8, and no ReLU after
the input projection.

Departures: none in the maths. The squaring repeats patches cyclically (``i mod N``), which is
the official ``h[:, :add_length]`` whenever that is defined (always here, as S² − N ≤ N).
Attention output (N,): the class-token row of the last layer's Nyström attention matrix
``attn1 @ pinv(attn2) @ attn3`` averaged over heads, the weights of a patch's padded copies added
to it; the mass on the class token and the landmark zero-padding is dropped, negative entries
(Nyström approximation error) are clipped to 0 and the rest renormalised to sum 1 (uniform if
nothing is left).
"""

from __future__ import annotations

import math

import torch
from nystrom_attention import NystromAttention
from torch import Tensor, nn

from srmil.config import TransMILConfig
from srmil.graphs.graph_bag import GraphBag
from srmil.models.base import MODELS, MILModel


class TransLayer(nn.Module):
    """Pre-norm Nyström self-attention with a residual: ``x + Attn(LN(x))`` (no MLP)."""

    def __init__(self, dim: int, cfg: TransMILConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = NystromAttention(
            dim=dim, dim_head=dim // cfg.heads, heads=cfg.heads, num_landmarks=cfg.landmarks,
            pinv_iterations=cfg.pinv_iterations, residual=True,
            residual_conv_kernel=cfg.residual_kernel, dropout=cfg.dropout,
        )

    def forward(self, x: Tensor, return_attn: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x (1, L, dim) → (1, L, dim) [and attention (1, heads, L', L'), L' ≥ L padded front]."""
        if return_attn:
            out, attn = self.attn(self.norm(x), return_attn=True)
            return x + out, attn
        return x + self.attn(self.norm(x))  # (1, L, dim)


class PPEG(nn.Module):
    """Pyramid position encoding generator: depth-wise 7/5/3 convs on the S×S patch grid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj7 = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim)
        self.proj5 = nn.Conv2d(dim, dim, 5, 1, 2, groups=dim)
        self.proj3 = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor, side: int) -> Tensor:
        """x (1, 1 + side², dim) → same shape; the class token (row 0) passes through."""
        cls, feat = x[:, :1], x[:, 1:]  # (1, 1, dim), (1, S², dim)
        img = feat.transpose(1, 2).reshape(1, -1, side, side)  # (1, dim, S, S)
        img = img + self.proj7(img) + self.proj5(img) + self.proj3(img)  # (1, dim, S, S)
        return torch.cat([cls, img.flatten(2).transpose(1, 2)], dim=1)  # (1, 1 + S², dim)


@MODELS.register("transmil")
class TransMIL(MILModel):
    """TransMIL (Shao et al. 2021): two Nyström layers around a PPEG, class-token classifier."""

    Config = TransMILConfig
    uses_graph = False
    score_kind = "attention"

    def __init__(self, in_dim: int, n_classes: int,
                 cfg: TransMILConfig = TransMILConfig()) -> None:
        super().__init__(in_dim, n_classes, cfg)
        if cfg.dim % cfg.heads:
            raise ValueError(f"dim {cfg.dim} is not divisible by heads {cfg.heads}")
        self.fc1 = nn.Sequential(nn.Linear(in_dim, cfg.dim), nn.ReLU())
        self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.dim))
        self.layer1 = TransLayer(cfg.dim, cfg)
        self.ppeg = PPEG(cfg.dim)
        self.layer2 = TransLayer(cfg.dim, cfg)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, n_classes)

    @staticmethod
    def square_index(n: int, device: torch.device | None = None) -> tuple[int, Tensor]:
        """Side S = ⌈√N⌉ and the (S²,) patch index of the squared sequence (copies at the end)."""
        side = max(1, math.ceil(math.sqrt(n)))
        return side, torch.arange(side * side, device=device) % n  # (S²,)

    def _encode(self, bag: GraphBag, return_attn: bool = False
                ) -> tuple[Tensor, Tensor | None, Tensor]:
        n = bag.num_nodes
        side, idx = self.square_index(n, bag.x.device)
        h = self.fc1(bag.x)[idx][None]  # (1, S², dim)
        h = torch.cat([self.cls_token.to(h.dtype), h], dim=1)  # (1, 1 + S², dim)
        h = self.layer1(h)  # (1, 1 + S², dim)
        h = self.ppeg(h, side)  # (1, 1 + S², dim)
        attn = None
        if return_attn:
            h, attn = self.layer2(h, return_attn=True)  # attn (1, heads, L', L')
        else:
            h = self.layer2(h)  # (1, 1 + S², dim)
        cls = self.norm(h)[0, 0]  # (dim,)
        return self.head(cls), attn, idx

    def forward(self, bag: GraphBag) -> Tensor:
        return self._encode(bag)[0]  # (C,)

    def attention(self, bag: GraphBag) -> Tensor:
        """Class-token attention of the last layer (N,), copies folded, clipped, summing to 1."""
        return self.forward_scores(bag)[1]

    def forward_scores(self, bag: GraphBag) -> tuple[Tensor, Tensor]:
        """Logits (C,) and the class-token attention (N,), from one pass."""
        logits, attn, idx = self._encode(bag, return_attn=True)
        seq = idx.shape[0] + 1  # class token + S² patch tokens; the landmark padding is in front
        row = attn[0, :, -seq, -seq + 1:].mean(0)  # (S²,)
        w = torch.zeros(bag.num_nodes, dtype=row.dtype, device=row.device)
        w = w.index_add(0, idx, row.clamp_min(0.0))  # (N,)
        total = w.sum()
        if not torch.isfinite(total) or total <= 0:
            return logits, torch.full_like(w, 1.0 / bag.num_nodes)
        return logits, w / total
