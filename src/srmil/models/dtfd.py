r"""DTFD-MIL: double-tier feature distillation MIL (Zhang et al., CVPR 2022,
https://arxiv.org/abs/2203.12081; official code hrzhang1123/DTFD-MIL).

The patches are split at random into :math:`M' = \min(M, N)` pseudo-bags :math:`P_1 … P_{M'}`
of near-equal size (``numpy.array_split`` sizes); each inherits the slide label.

.. math::
    \mathbf{h}_i = \mathrm{ReLU}(\mathbf{W}\mathbf{x}_i), \quad
    \alpha^{(m)} = \mathrm{softmax}_{i\in P_m}\big(a(\mathbf{h}_i)\big), \quad
    \mathbf{f}_m = \textstyle\sum_{i\in P_m}\alpha^{(m)}_i\mathbf{h}_i, \quad
    \hat{\mathbf{y}}_m = T_1(\mathbf{f}_m)

with the gated attention :math:`a` of ABMIL. Tier 2 pools the distilled features
:math:`\{\mathbf{d}_m\}` with a second gated attention, :math:`\beta = \mathrm{softmax}_m(a_2(
\mathbf{d}_m))`, :math:`\hat{\mathbf{y}} = T_2(\sum_m\beta_m\mathbf{d}_m)`. Distillation:
``afs`` (default) :math:`\mathbf{d}_m = \mathbf{f}_m`; ``maxmin`` / ``max`` take the
``instances_per_group`` patches of :math:`P_m` with the highest (and lowest) instance
probability from the 1-D CAM :math:`\mathrm{softmax}_c(\mathbf{W}_{T_1}\,\alpha_i\mathbf{h}_i)`,
of the last class as in the official code. Loss: ``tier1`` = mean over pseudo-bags of
:math:`\mathrm{CE}(\hat{\mathbf{y}}_m, y)`, ``tier2`` = :math:`\mathrm{CE}(\hat{\mathbf{y}}, y)`,
total = tier1 + tier2.

Checked against the paper and ``Main_DTFD_MIL.py`` / ``Model/``: ``DimReduction`` =
``Linear(D, 512, bias=False) + ReLU`` (no residual blocks), ``Attention_Gated(512, 128)`` with a
softmax inside each pseudo-bag, ``Classifier_1fc`` (dropout 0) for both tiers, random split by
``array_split`` of a shuffled index, CAM from the tier-1 classifier weight on the
attention-weighted features, AFS distillation, ``instance_per_group = total_instance //
numGroup``, tier-2 ``Attention_with_Classifier``. Default M = 3, the training function's default
(the script's argparse passes 4).

Why not torchmil 1.0.2's ``DTFDMIL``: one BCE logit (binary only), no dimension reduction, splits
with the global NumPy RNG in eval too (non-deterministic predictions), and its ``maxmin`` takes
whole pseudo-bags instead of ``instances_per_group`` patches.

Departures: (1) the official code trains tier 1 and tier 2 with two Adam optimisers and clips
each tier's gradient norm at 5; our trainer has one optimiser and no clipping, so the two losses
are summed. With equal learning rates this gives tier 2 the same gradient and tier 1 the sum of
both tiers' gradients, as the official code does (its ``loss1.backward`` also reaches tier 1);
only the clipping is missing. (2) Eval-mode pseudo-bags are deterministic: the shuffle is
``torch.randperm`` from a private generator seeded with ``eval_seed`` (so it depends on N only
and never touches the global RNG); the official code reshuffles at random in eval as well.
Training draws its permutation from the global torch RNG (saved in our checkpoints, so a resumed
run draws the same splits). (3) For N < M only N pseudo-bags are made (the official code would
make empty ones).
Attention output (N,): for ``afs`` each patch's effective weight in the bag embedding,
:math:`\beta_{m(i)}\,\alpha^{(m(i))}_i` (sums to 1); for ``maxmin`` / ``max`` the tier-2 weight of
each distilled patch (added up when one is picked twice) and 0 for the others (sums to 1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from srmil.config import DTFDConfig
from srmil.graphs.graph_bag import GraphBag
from srmil.models.base import MODELS, MILModel
from srmil.models.layers import GatedAttentionPool

DISTILL = ("afs", "maxmin", "max")


@MODELS.register("dtfd")
class DTFD(MILModel):
    """DTFD-MIL: tier-1 attention MIL on random pseudo-bags, tier-2 on their distilled features."""

    Config = DTFDConfig
    uses_graph = False
    score_kind = "attention"

    def __init__(self, in_dim: int, n_classes: int, cfg: DTFDConfig = DTFDConfig()) -> None:
        super().__init__(in_dim, n_classes, cfg)
        if cfg.distill not in DISTILL:
            raise ValueError(f"distill {cfg.distill!r}; choose from: {', '.join(DISTILL)}")
        if cfg.pseudo_bags < 1:
            raise ValueError(f"pseudo_bags must be >= 1, got {cfg.pseudo_bags}")
        self.reduce = nn.Sequential(nn.Linear(in_dim, cfg.hidden, bias=False), nn.ReLU())
        self.attn1 = GatedAttentionPool(cfg.hidden, cfg.attn_dim, gated=True)
        self.drop1 = nn.Dropout(cfg.dropout)
        self.head1 = nn.Linear(cfg.hidden, n_classes)
        self.attn2 = GatedAttentionPool(cfg.hidden, cfg.attn_dim, gated=True)
        self.drop2 = nn.Dropout(cfg.dropout_2)
        self.head2 = nn.Linear(cfg.hidden, n_classes)

    def pseudo_bags(self, n: int) -> list[Tensor]:
        """Split patch indices 0..n-1 into min(M, n) pseudo-bags (each index exactly once).

        Random (global torch RNG) in training mode; in eval mode a fixed permutation from a
        private generator seeded with ``eval_seed``.
        """
        if self.training:
            perm = torch.randperm(n)
        else:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.eval_seed))
        return list(torch.tensor_split(perm, min(self.cfg.pseudo_bags, n)))

    def tiers(self, bag: GraphBag) -> dict[str, Tensor | list[Tensor]]:
        """Both tiers of one bag.

        Returns:
            ``groups`` list of (n_m,) patch indices, ``alpha`` list of (n_m,) tier-1 weights,
            ``tier1`` (M', C) pseudo-bag logits, ``picked`` (K,) patch index of each distilled
            feature (``maxmin`` / ``max``; for ``afs`` the pseudo-bag index), ``beta`` (K,)
            tier-2 weights, ``tier2`` (C,) bag logits.
        """
        h = self.reduce(bag.x)  # (N, hidden)
        groups = [g.to(h.device) for g in self.pseudo_bags(bag.num_nodes)]
        alphas, logits1, feats, picked = [], [], [], []
        k = self.cfg.instances_per_group
        for m, idx in enumerate(groups):
            hm = h[idx]  # (n_m, hidden)
            f, a = self.attn1(hm)  # (hidden,), (n_m,)
            alphas.append(a)
            logits1.append(self.head1(self.drop1(f)))  # (C,)
            if self.cfg.distill == "afs":
                feats.append(f[None])  # (1, hidden)
                picked.append(torch.tensor([m], device=h.device))
                continue
            cam = (hm * a[:, None]) @ self.head1.weight.T  # (n_m, C)
            order = cam.softmax(-1)[:, -1].argsort(descending=True)  # (n_m,)
            kk = min(k, order.shape[0])
            sel = order[:kk] if self.cfg.distill == "max" else torch.cat([order[:kk],
                                                                         order[-kk:]])
            feats.append(hm[sel])  # (kk or 2kk, hidden)
            picked.append(idx[sel])
        d = torch.cat(feats)  # (K, hidden)
        z, beta = self.attn2(d)  # (hidden,), (K,)
        return {"groups": groups, "alpha": alphas, "tier1": torch.stack(logits1),
                "picked": torch.cat(picked), "beta": beta,
                "tier2": self.head2(self.drop2(z))}

    def forward(self, bag: GraphBag) -> Tensor:
        return self.tiers(bag)["tier2"]  # (C,)

    def attention(self, bag: GraphBag) -> Tensor:
        """Per-patch weight in the tier-2 embedding (N,), summing to 1 (see module doc)."""
        return self.forward_scores(bag)[1]

    def forward_scores(self, bag: GraphBag) -> tuple[Tensor, Tensor]:
        """Logits (C,) and the per-patch tier-2 weights (N,), from one pass."""
        t = self.tiers(bag)
        beta = t["beta"]  # (K,)
        w = torch.zeros(bag.num_nodes, dtype=beta.dtype, device=beta.device)
        if self.cfg.distill == "afs":
            for m, (idx, a) in enumerate(zip(t["groups"], t["alpha"], strict=True)):
                w[idx] = beta[m] * a
            return t["tier2"], w
        return t["tier2"], w.index_add(0, t["picked"], beta)

    def loss(self, bag: GraphBag, target: Tensor) -> dict[str, Tensor]:
        t = self.tiers(bag)
        t1 = t["tier1"]  # (M', C)
        tier1 = self.task_loss_rows(t1, target)  # every pseudo-bag carries the bag's target
        tier2 = self.task_loss(t["tier2"], target)
        return {"total": tier1 + tier2, "tier1": tier1, "tier2": tier2}
