r"""Patch-GCN: context-aware MIL with a graph over the patches (Chen et al., MICCAI 2021,
https://arxiv.org/abs/2107.13048; official code mahmoodlab/Patch-GCN), as a classifier.

.. math::
    \mathbf{h}^{(0)}_i = \mathrm{ReLU}(\mathbf{W}\mathbf{x}_i), \quad
    \mathbf{h}^{(1)} = \mathrm{GEN}_1(\mathbf{h}^{(0)}), \quad
    \mathbf{h}^{(l)} = \mathbf{h}^{(l-1)} + \mathrm{ReLU}\big(\mathrm{LN}(\mathrm{GEN}_l(
    \mathbf{h}^{(l-1)}))\big)\ (l = 2 … L),

where :math:`\mathrm{GEN}` is DeeperGCN's generalized aggregation
:math:`\mathrm{MLP}\big(\mathbf{h}_i + \sum_{j\in\mathcal{N}(i)}\mathrm{softmax}_j(t\,
\mathbf{m}_{ij})\,\mathbf{m}_{ij}\big)`, :math:`\mathbf{m}_{ij} = \mathrm{ReLU}(\mathbf{h}_j) +
\epsilon`, learnable t. The layer outputs are concatenated,
:math:`\mathbf{g}_i = \phi([\mathbf{h}^{(0)}_i \| … \| \mathbf{h}^{(L)}_i])`, pooled by gated
attention :math:`\pi = \mathrm{softmax}_i(a(\mathbf{g}_i))`, and
:math:`\mathrm{logits} = \mathbf{W}_c\,\rho(\sum_i\pi_i\mathbf{g}_i)`.

Checked against the paper and ``models/model_graph_mil.py`` (``PatchGCN_Surv``):
``fc`` = ``Linear(D, 128) + ReLU + Dropout(0.25)``; 3 × ``GENConv(128, 128, aggr='softmax',
t=1.0, learn_t=True, num_layers=2, norm='layer')``, the first used bare (only its ``.conv``), the
others inside ``DeepGCNLayer(conv, LayerNorm, ReLU, block='res', dropout=0.1)``; concatenation
of the fc output and the three layer outputs (4·128); ``path_phi`` = ``Linear + ReLU +
Dropout(0.25)``; ``Attn_Net_Gated(512, 512, dropout)``; ``path_rho`` = ``Linear + ReLU +
Dropout(0.25)``; ``Linear(512, C)``. Built on PyTorch Geometric's ``GENConv`` and
``DeepGCNLayer``, as the official code.

Why not torchmil 1.0.2's ``PatchGCN``: it uses dense-adjacency ``GCNConv`` with ``block='plain'``
instead of ``GENConv`` with softmax aggregation and residual blocks, and one BCE logit (binary
only).

Departures: (1) the graph is SRMIL's spatial grid graph (``bag.edge_index``: 5×5 neighbourhood,
both directions, self loops; METHOD.md), not the official 8 nearest neighbours, so that the
comparison with SRMIL isolates the method, not the graph; (2) the survival head (hazards) is a
C-way classifier trained with cross-entropy; (3) the first layer's unused LayerNorm is not
created and gradient checkpointing (``ckpt_grad``, memory only) is not used. ``block='res'`` is
the official choice; ``'res+'`` (DeeperGCN's pre-activation) is available by config.
Attention output: the pooling weights π (N,), a distribution over the patches.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import DeepGCNLayer, GENConv

from srmil.config import PatchGCNConfig
from srmil.graphs.graph_bag import GraphBag
from srmil.models.base import MODELS, MILModel
from srmil.models.layers import GatedAttentionPool

BLOCKS = ("res", "res+", "dense", "plain")


def _gen_conv(dim: int, learn_t: bool) -> GENConv:
    return GENConv(dim, dim, aggr="softmax", t=1.0, learn_t=learn_t, num_layers=2, norm="layer")


@MODELS.register("patchgcn")
class PatchGCN(MILModel):
    """Patch-GCN (Chen et al. 2021): GENConv residual stack on the spatial graph, gated pooling."""

    Config = PatchGCNConfig
    uses_graph = True
    score_kind = "attention"

    def __init__(self, in_dim: int, n_classes: int,
                 cfg: PatchGCNConfig = PatchGCNConfig()) -> None:
        super().__init__(in_dim, n_classes, cfg)
        if cfg.block not in BLOCKS or cfg.block == "dense":  # dense would change the widths
            raise ValueError(f"block {cfg.block!r}; choose from: res, res+, plain")
        if cfg.layers < 1:
            raise ValueError(f"layers must be >= 1, got {cfg.layers}")
        d = cfg.hidden
        self.fc = nn.Sequential(nn.Linear(in_dim, d), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.conv1 = _gen_conv(d, cfg.learn_t)
        self.layers = nn.ModuleList(
            DeepGCNLayer(_gen_conv(d, cfg.learn_t), nn.LayerNorm(d), nn.ReLU(),
                         block=cfg.block, dropout=cfg.gcn_dropout)
            for _ in range(cfg.layers - 1)
        )
        width = d * (cfg.layers + 1)
        self.phi = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.pool = GatedAttentionPool(width, width, gated=True, dropout=cfg.dropout)
        self.rho = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.head = nn.Linear(width, n_classes)

    def _pool(self, bag: GraphBag) -> tuple[Tensor, Tensor]:
        ei = bag.edge_index  # (2, E)
        h = self.fc(bag.x)  # (N, d)
        outs = [h]
        h = self.conv1(h, ei)  # (N, d)
        outs.append(h)
        for layer in self.layers:
            h = layer(h, ei)  # (N, d)
            outs.append(h)
        g = self.phi(torch.cat(outs, dim=1))  # (N, d·(L+1))
        z, w = self.pool(g)  # (d·(L+1),), (N,)
        return self.rho(z), w

    def forward(self, bag: GraphBag) -> Tensor:
        return self.head(self._pool(bag)[0])  # (C,)

    def attention(self, bag: GraphBag) -> Tensor:
        """The pooling weights π (N,), summing to 1."""
        return self._pool(bag)[1]

    def forward_scores(self, bag: GraphBag) -> tuple[Tensor, Tensor]:
        """Logits (C,) and the pooling weights (N,) from one pass."""
        z, w = self._pool(bag)
        return self.head(z), w
