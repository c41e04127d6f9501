r"""CLAM-SB: clustering-constrained attention MIL, single attention branch (Lu et al., Nature
Biomedical Engineering 2021, https://arxiv.org/abs/2004.09666; official code mahmoodlab/CLAM).

.. math::
    \mathbf{h}_i = \mathrm{ReLU}(\mathbf{W}_1\mathbf{x}_i), \quad
    a_i = \mathbf{w}^\top\big(\tanh(\mathbf{V}\mathbf{h}_i) \odot
    \mathrm{sigm}(\mathbf{U}\mathbf{h}_i)\big), \quad
    \pi = \mathrm{softmax}_i(a), \quad
    \mathrm{logits} = \mathbf{W}_c\textstyle\sum_i\pi_i\mathbf{h}_i

Instance-level clustering: with :math:`k' = \min(k, N)`, the :math:`k'` most and :math:`k'`
least attended patches are pseudo-labelled 1 and 0 for the instance classifier of the true class
:math:`y` (a ``Linear(hidden, 2)`` per class); for subtyping tasks the :math:`k'` most attended
patches are also pseudo-labelled 0 for every other class's instance classifier and the sum is
divided by C. Objective:
:math:`L = w_{bag}\,\mathrm{CE}(\mathrm{logits}, y) + (1 - w_{bag})\,L_{inst}`, logged as
``ce`` and ``instance``.

Checked against the paper and ``models/model_clam.py`` / ``utils/core_utils.py``: fc
``Linear(D, 512) + ReLU + Dropout`` then ``Attn_Net_Gated(L=512, D=256)`` with dropout 0.25 in
both branches, softmax over patches, bag classifier ``Linear(512, C)``, one binary instance
classifier per class, in-class top-k/bottom-k and (subtyping) out-of-class top-k with CE
instance loss (``--inst_loss`` default), bag weight 0.7, k = 8.

Why not torchmil 1.0.2's ``CLAM_SB``: its bag classifier has one logit trained with BCE and two
instance classifiers, so it is binary only (we need C = 3), it sums in- and out-of-class losses
without CLAM's division by C, and its default instance loss is the smooth SVM, not CE. This
module is our own code on our ``GatedAttentionPool``.

Departures: k is capped at N (the official code fails for N < k; for N < 2k the top and bottom
sets overlap, as they must); CLAM's optional smooth top-1 SVM instance loss is not offered.
Attention output: the pooling weights π (N,), a distribution over the patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srmil.config import CLAMConfig
from srmil.graphs.graph_bag import GraphBag
from srmil.models.base import MODELS, MILModel
from srmil.models.layers import GatedAttentionPool


@MODELS.register("clam_sb")
class CLAMSB(MILModel):
    """CLAM single-branch: gated attention MIL plus instance-level clustering on top/bottom-k."""

    Config = CLAMConfig
    uses_graph = False
    score_kind = "attention"

    def __init__(self, in_dim: int, n_classes: int, cfg: CLAMConfig = CLAMConfig()) -> None:
        super().__init__(in_dim, n_classes, cfg)
        self.embed = nn.Sequential(nn.Linear(in_dim, cfg.hidden), nn.ReLU(),
                                   nn.Dropout(cfg.dropout))
        self.pool = GatedAttentionPool(cfg.hidden, cfg.attn_dim, gated=cfg.gated,
                                       dropout=cfg.dropout)
        self.head = nn.Linear(cfg.hidden, n_classes)
        self.inst_heads = nn.ModuleList(nn.Linear(cfg.hidden, 2) for _ in range(n_classes))

    def _pool(self, bag: GraphBag) -> tuple[Tensor, Tensor, Tensor]:
        h = self.embed(bag.x)  # (N, hidden)
        z, w = self.pool(h)  # (hidden,), (N,)
        return h, z, w

    def forward(self, bag: GraphBag) -> Tensor:
        return self.head(self._pool(bag)[1])  # (C,)

    def attention(self, bag: GraphBag) -> Tensor:
        """The pooling weights π (N,), summing to 1."""
        return self._pool(bag)[2]

    def forward_scores(self, bag: GraphBag) -> tuple[Tensor, Tensor]:
        """Logits (C,) and the pooling weights (N,) from one pass."""
        _, z, w = self._pool(bag)  # (hidden,), (N,)
        return self.head(z), w

    def select_instances(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """Indices of the k' = min(k, N) most and least attended patches, (k',) each."""
        k = min(self.cfg.k_sample, w.shape[0])
        return w.topk(k).indices, (-w).topk(k).indices

    def instance_loss(self, h: Tensor, w: Tensor, target: int) -> Tensor:
        """CLAM's clustering loss for a bag of class ``target``.

        Args:
            h: (N, hidden) patch embeddings.
            w: (N,) attention weights.
            target: the bag's class.
        """
        top, bottom = self.select_instances(w)  # (k',), (k',)
        k = top.shape[0]
        total = h.new_zeros(())
        for c, clf in enumerate(self.inst_heads):
            if c == target:  # in-the-class: top-k are positives, bottom-k negatives
                idx = torch.cat([top, bottom])  # (2k',)
                labels = torch.cat([h.new_ones(k), h.new_zeros(k)]).long()  # (2k',)
            elif self.cfg.subtyping:  # out-of-the-class: top-k are negatives
                idx, labels = top, h.new_zeros(k).long()
            else:
                continue
            total = total + F.cross_entropy(clf(h[idx]), labels)
        if self.cfg.subtyping:
            total = total / self.n_classes
        return total

    def label_free_instance_loss(self, h: Tensor, w: Tensor) -> Tensor:
        """CLAM's in-the-class clustering term without a class (survival, regression): the
        first instance head separates the top-k attended patches (positives) from the
        bottom-k (negatives), so attention is still pushed towards a distinct patch set.

        Args:
            h: (N, hidden) patch embeddings.
            w: (N,) attention weights.
        """
        top, bottom = self.select_instances(w)  # (k',), (k',)
        k = top.shape[0]
        idx = torch.cat([top, bottom])  # (2k',)
        labels = torch.cat([h.new_ones(k), h.new_zeros(k)]).long()  # (2k',)
        return F.cross_entropy(self.inst_heads[0](h[idx]), labels)

    def loss(self, bag: GraphBag, target: Tensor) -> dict[str, Tensor]:
        """bag_weight·L_task + (1 − bag_weight)·L_instance (cross-entropy bag loss and the
        class-driven instance loss for classification; the task loss and
        :meth:`label_free_instance_loss` otherwise)."""
        h, z, w = self._pool(bag)
        task = self.task_loss(self.head(z), target)
        inst = (self.instance_loss(h, w, int(target)) if self.classifies
                else self.label_free_instance_loss(h, w))
        bw = self.cfg.bag_weight
        return {"total": bw * task + (1.0 - bw) * inst, self.loss_name: task, "instance": inst}
