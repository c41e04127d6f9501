r"""DSMIL: dual-stream MIL (Li, Li, Eliceiri, CVPR 2021, https://arxiv.org/abs/2011.08939;
official code binli123/dsmil-wsi).

Stream 1 (max pooling): instance logits :math:`\mathbf{c}_i = \mathbf{W}_0\mathbf{x}_i \in
\mathbb{R}^C`; the critical instance of class j is :math:`m_j = \arg\max_i c_{ij}`.
Stream 2 (distance to the critical instance), with queries :math:`\mathbf{q}_i = q(\mathbf{x}_i)`
and values :math:`\mathbf{v}_i = v(\mathbf{x}_i)`:

.. math::
    A_{ij} = \mathrm{softmax}_i\Big(\frac{\langle\mathbf{q}_i,\mathbf{q}_{m_j}\rangle}
    {\sqrt{d_q}}\Big), \quad \mathbf{b}_j = \textstyle\sum_i A_{ij}\mathbf{v}_i, \quad
    s_j = \textstyle\sum_{j'}\langle\mathbf{W}_{j j'}, \mathbf{b}_{j'}\rangle + \beta_j

(the last is the official ``Conv1d(C, C, kernel_size=D)`` over the C class embeddings).
Training loss: :math:`\tfrac12\,\mathrm{CE}(s, y) + \tfrac12\,\mathrm{CE}(\max_i\mathbf{c}_i, y)`,
logged as ``ce_bag`` and ``ce_max``. Prediction (``average=True``, the official test default):
the mean of the two streams' class probabilities, returned as its log (a valid logit vector:
its softmax is that mean).

Checked against the paper and ``dsmil.py`` / ``train_tcga.py``: instance classifier
``Linear(D, C)`` on the (already extracted) features, ``q`` = ``Linear(D, 128) → ReLU →
Linear(128, 128) → Tanh`` (``--non_linearity 1``), ``v`` = identity (``passing_v=False``),
critical instance per class by sorting the instance scores, softmax over instances scaled by
√128, ``fcc`` = ``Conv1d(C, C, D)``, loss = 0.5·bag + 0.5·max, test score averaged.

Why not torchmil 1.0.2's ``DSMIL``: one BCE logit (binary only), so no per-class critical
instances and no ``Conv1d`` over class embeddings; it averages logits, not probabilities.

Departures: softmax cross-entropy over C classes instead of the official per-class BCE
(our trainer's single-label contract; the official binary runs use one output); the official
training-time patch dropout (``--dropout_patch``, default 0) is not offered.
Attention output: the column of A for the predicted class (N,), a distribution over patches.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from srmil.config import DSMILConfig
from srmil.graphs.graph_bag import GraphBag
from srmil.models.base import MODELS, MILModel


@MODELS.register("dsmil")
class DSMIL(MILModel):
    """Dual-stream MIL: max-scoring critical instance per class, attention by query similarity."""

    Config = DSMILConfig
    uses_graph = False
    score_kind = "attention"

    def __init__(self, in_dim: int, n_classes: int, cfg: DSMILConfig = DSMILConfig()) -> None:
        super().__init__(in_dim, n_classes, cfg)
        self.inst_head = nn.Linear(in_dim, n_classes)
        if cfg.nonlinear_q:
            self.q = nn.Sequential(nn.Linear(in_dim, cfg.q_dim), nn.ReLU(),
                                   nn.Linear(cfg.q_dim, cfg.q_dim), nn.Tanh())
        else:
            self.q = nn.Linear(in_dim, cfg.q_dim)
        if cfg.passing_v:
            self.v = nn.Sequential(nn.Dropout(cfg.dropout_v), nn.Linear(in_dim, in_dim), nn.ReLU())
        else:
            self.v = nn.Identity()
        self.fcc = nn.Conv1d(n_classes, n_classes, kernel_size=in_dim)

    def streams(self, bag: GraphBag) -> dict[str, Tensor]:
        """Both streams of one bag.

        Returns:
            ``inst`` (N, C) instance logits, ``critical`` (C,) index of each class's critical
            instance, ``attn`` (N, C) attention (each column sums to 1), ``bag`` (C,) bag
            logits, ``max`` (C,) max-pooled instance logits.
        """
        x = bag.x  # (N, D)
        inst = self.inst_head(x)  # (N, C)
        critical = inst.argmax(dim=0)  # (C,)
        q = self.q(x)  # (N, q)
        q_crit = self.q(x[critical])  # (C, q)
        attn = torch.softmax(q @ q_crit.T / math.sqrt(q.shape[1]), dim=0)  # (N, C)
        b = attn.T @ self.v(x)  # (C, D)
        logits = self.fcc(b[None]).view(-1)  # (C,)
        return {"inst": inst, "critical": critical, "attn": attn, "bag": logits,
                "max": inst.max(dim=0).values}

    def _predict(self, s: dict[str, Tensor]) -> Tensor:
        if not self.cfg.average:
            return s["bag"]  # (C,)
        if not self.classifies:  # hazard logits / a value: the mean of the two streams
            return 0.5 * (s["bag"] + s["max"])  # (K,)
        p = 0.5 * (s["bag"].softmax(-1) + s["max"].softmax(-1))  # (C,)
        return p.clamp_min(torch.finfo(p.dtype).tiny).log()  # (C,)

    def forward(self, bag: GraphBag) -> Tensor:
        return self._predict(self.streams(bag))  # (C,)

    def attention(self, bag: GraphBag) -> Tensor:
        """A's column (N,) for the predicted class; sums to 1."""
        return self.forward_scores(bag)[1]

    def forward_scores(self, bag: GraphBag) -> tuple[Tensor, Tensor]:
        """Logits (C,) and A's column (N,) for the predicted class, from one pass."""
        s = self.streams(bag)
        logits = self._predict(s)  # (C,)
        return logits, s["attn"][:, int(logits.argmax())]

    def loss(self, bag: GraphBag, target: Tensor) -> dict[str, Tensor]:
        """Mean of the task loss of both streams (cross-entropy for classification)."""
        s = self.streams(bag)
        l_bag = self.task_loss(s["bag"], target)
        l_max = self.task_loss(s["max"], target)
        p = self.loss_name
        return {"total": 0.5 * (l_bag + l_max), f"{p}_bag": l_bag, f"{p}_max": l_max}
