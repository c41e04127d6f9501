r"""Building blocks of the graph MIL models: a GAT layer, the scaled cosine error, gated pooling.

``GATLayer`` wraps PyG's :class:`~torch_geometric.nn.conv.GATConv` for the attention itself and
adds what the SRMIL reference layer has around it (METHOD.md, Network): dropout on the layer
input, an own bias, the reference's residual rule, LayerNorm and a single-parameter PReLU, in
the order

.. math::
    \mathbf{h}' = \sigma\Big(\mathrm{LN}\big(\mathrm{GAT}(\tilde{\mathbf{h}})
    + \mathbf{b} + R(\tilde{\mathbf{h}})\big)\Big),
    \qquad \tilde{\mathbf{h}} = \mathrm{Dropout}(\mathbf{h}),

where :math:`R` is a bias-free projection, the identity or absent (see ``GATLayer``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv

RESIDUAL_MODES = ("faithful", "identity", "none")


class GATLayer(nn.Module):
    """One multi-head graph attention layer with the SRMIL reference's extras.

    Residual modes (METHOD.md, Residuals):

    - ``"faithful"`` (reference quirk inherited from GraphMAE2): a bias-free ``Linear`` projection
      when ``in_dim != heads * out_dim``, and **no residual at all** when the two are equal;
    - ``"identity"``: the identity when the dims are equal, the projection when they differ;
    - ``"none"``: no residual (the last decoder layer).

    The residual branch takes the dropped-out input, as the attention does. Initialisation:
    the GAT projection, both attention vectors and the residual projection are xavier-normal
    with gain √2; the bias is 0; LayerNorm and PReLU (0.25) keep PyTorch's defaults.

    Args:
        in_dim: input features per node, F_in.
        out_dim: output features per head, F_out.
        heads: attention heads H; the outputs are concatenated to H·F_out.
        feat_drop: dropout probability on the layer input.
        attn_drop: dropout probability on the attention coefficients (after the softmax).
        negative_slope: LeakyReLU slope of the attention logits.
        residual: ``"faithful"``, ``"identity"`` or ``"none"``.
        norm: LayerNorm over the H·F_out outputs.
        activation: single-parameter PReLU after the norm.

    Shapes:
        - input: node features (M, F_in), edge_index (2, E) ``[source; target]`` with whatever
          self loops the graph should have (none are added here).
        - output: (M, H·F_out); with ``return_attention_weights=True`` also
          ``(edge_index (2, E), alpha (E, H))``, ``alpha`` after attention dropout in training.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        heads: int,
        feat_drop: float = 0.0,
        attn_drop: float = 0.0,
        negative_slope: float = 0.2,
        residual: str = "faithful",
        norm: bool = True,
        activation: bool = True,
    ) -> None:
        super().__init__()
        if residual not in RESIDUAL_MODES:
            raise ValueError(f"residual {residual!r}; choose from: {', '.join(RESIDUAL_MODES)}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.heads = heads
        total = heads * out_dim
        self.feat_drop = nn.Dropout(feat_drop)
        self.conv = GATConv(
            in_dim,
            out_dim,
            heads=heads,
            concat=True,
            negative_slope=negative_slope,
            dropout=attn_drop,
            add_self_loops=False,
            bias=False,
            residual=False,
        )
        self.bias = nn.Parameter(torch.zeros(total))
        self.res: nn.Module | None
        if residual == "none" or (residual == "faithful" and in_dim == total):
            self.res = None
        elif in_dim == total:  # identity mode, equal dims
            self.res = nn.Identity()
        else:
            self.res = nn.Linear(in_dim, total, bias=False)
        self.norm = nn.LayerNorm(total) if norm else None
        self.act = nn.PReLU(num_parameters=1, init=0.25) if activation else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal (gain √2) GAT projection, attention vectors and residual; bias 0."""
        gain = math.sqrt(2.0)
        nn.init.xavier_normal_(self.conv.lin.weight, gain=gain)
        nn.init.xavier_normal_(self.conv.att_src, gain=gain)
        nn.init.xavier_normal_(self.conv.att_dst, gain=gain)
        if isinstance(self.res, nn.Linear):
            nn.init.xavier_normal_(self.res.weight, gain=gain)
        nn.init.zeros_(self.bias)
        if self.norm is not None:
            self.norm.reset_parameters()
        if self.act is not None:
            nn.init.constant_(self.act.weight, 0.25)

    def forward(
        self, x: Tensor, edge_index: Tensor, return_attention_weights: bool = False
    ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        """Attend over ``edge_index``.

        Args:
            x: (M, F_in) node features.
            edge_index: (2, E) int64 ``[source; target]``.
            return_attention_weights: also return ``(edge_index, alpha)``.

        Returns:
            (M, H·F_out) node features, and ``(edge_index (2, E), alpha (E, H))`` when asked.
        """
        h = self.feat_drop(x)  # (M, F_in)
        attn: tuple[Tensor, Tensor] | None = None
        if return_attention_weights:
            out, attn = self.conv(h, edge_index, return_attention_weights=True)  # (M, H·F_out)
        else:
            out = self.conv(h, edge_index)  # (M, H·F_out)
        out = out + self.bias  # (M, H·F_out)
        if self.res is not None:
            out = out + self.res(h)  # (M, H·F_out)
        if self.norm is not None:
            out = self.norm(out)  # (M, H·F_out)
        if self.act is not None:
            out = self.act(out)  # (M, H·F_out)
        if attn is not None:
            return out, attn
        return out

    def extra_repr(self) -> str:
        return f"{self.in_dim}, {self.out_dim}, heads={self.heads}"


def sce_loss(x_hat: Tensor, x: Tensor, alpha: float = 1.0) -> Tensor:
    """Scaled cosine error of GraphMAE: ``mean_i (1 − cos(x̂_i, x_i))^α``.

    Zero rows count as cosine 0 (error 1). With no rows the loss is a zero that stays connected
    to ``x_hat``, so it never turns into NaN.

    Args:
        x_hat: (M, D) reconstructions.
        x: (M, D) targets.
        alpha: exponent α ≥ 1 sharpens the loss on hard rows.

    Returns:
        Scalar loss.
    """
    if x_hat.shape[0] == 0:
        return x_hat.sum() * 0.0
    cos = (F.normalize(x_hat, dim=-1) * F.normalize(x, dim=-1)).sum(-1)  # (M,)
    return sce_from_cosine(cos, alpha)


def sce_from_cosine(cos: Tensor, alpha: float = 1.0) -> Tensor:
    """``mean_i (1 − cos_i)^α`` from the cosines (M,); see :func:`sce_loss`."""
    # rounding can push 1 − cos a hair below 0, which a fractional power turns into NaN
    err = (1.0 - cos).clamp_min(0.0)  # (M,)
    return err.pow(alpha).mean()


class GatedAttentionPool(nn.Module):
    r"""Attention pooling of ABMIL (Ilse et al., 2018, arXiv 1802.04712), gated by default.

    .. math::
        a_i = \mathbf{w}^\top\big(\tanh(\mathbf{V}\mathbf{h}_i) \odot
        \mathrm{sigm}(\mathbf{U}\mathbf{h}_i)\big), \qquad
        \pi = \mathrm{softmax}_i(a), \qquad \mathbf{z} = \textstyle\sum_i \pi_i\mathbf{h}_i

    Without the gate (``gated=False``): :math:`a_i = \mathbf{w}^\top\tanh(\mathbf{V}\mathbf{h}_i)`.

    Args:
        in_dim: node embedding size L.
        hidden_dim: attention hidden size M.
        gated: multiply by the sigmoid gate :math:`\mathrm{sigm}(\mathbf{U}\mathbf{h}_i)`.
        dropout: dropout on the tanh and the gate branches (CLAM's ``Attn_Net_Gated``, 0.25
            there); 0 is ABMIL's.

    Shapes:
        - input: (N, L) node embeddings.
        - output: pooled (L,) and weights (N,) that sum to 1.
    """

    def __init__(self, in_dim: int, hidden_dim: int, gated: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.value = nn.Linear(in_dim, hidden_dim)
        self.gate = nn.Linear(in_dim, hidden_dim) if gated else None
        self.score = nn.Linear(hidden_dim, 1)
        self.drop = nn.Dropout(dropout)  # parameter-free: old state dicts still load

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        a = self.drop(torch.tanh(self.value(h)))  # (N, M)
        if self.gate is not None:
            a = a * self.drop(torch.sigmoid(self.gate(h)))  # (N, M)
        w = torch.softmax(self.score(a).squeeze(-1), dim=0)  # (N,)
        return w @ h, w  # (L,), (N,)
