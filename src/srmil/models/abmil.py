r"""ABMIL: attention-based deep multiple-instance learning (Ilse, Tomczak, Welling, ICML 2018,
https://arxiv.org/abs/1802.04712), plain and gated.

.. math::
    \mathbf{h}_i = \mathrm{ReLU}(\mathbf{W}\mathbf{x}_i), \quad
    \pi = \mathrm{softmax}_i\big(\mathbf{w}^\top(\tanh(\mathbf{V}\mathbf{h}_i)
    [\odot\, \mathrm{sigm}(\mathbf{U}\mathbf{h}_i)])\big), \quad
    \mathrm{logits} = \mathbf{C}\textstyle\sum_i \pi_i \mathbf{h}_i

Checked against the paper: embedding-level MIL with one attention weight per instance, softmax
over the bag, tanh branch (eq. 9) and the gated variant (eq. 10), linear classifier on the
pooled embedding; the instance MLP is one Linear + ReLU (+ dropout) as in CLAM's pathology
use. Attention output: the pooling weights π (N,), a distribution over the bag's patches.
"""

from __future__ import annotations

from torch import Tensor, nn

from srmil.config import ABMILConfig, GatedABMILConfig
from srmil.graphs.graph_bag import GraphBag
from srmil.models.base import MODELS, MILModel
from srmil.models.layers import GatedAttentionPool


@MODELS.register("abmil")
class ABMIL(MILModel):
    """Attention-based MIL (Ilse et al. 2018); ``gated=True`` for the gated variant."""

    Config = ABMILConfig
    uses_graph = False
    score_kind = "attention"

    def __init__(self, in_dim: int, n_classes: int, cfg: ABMILConfig = ABMILConfig()) -> None:
        super().__init__(in_dim, n_classes, cfg)
        self.embed = nn.Sequential(nn.Linear(in_dim, cfg.hidden), nn.ReLU(),
                                   nn.Dropout(cfg.dropout))
        self.pool = GatedAttentionPool(cfg.hidden, cfg.attn_dim, gated=cfg.gated)
        self.head = nn.Linear(cfg.hidden, n_classes)

    def _pool(self, bag: GraphBag) -> tuple[Tensor, Tensor]:
        h = self.embed(bag.x)  # (N, hidden)
        return self.pool(h)  # (hidden,), (N,)

    def forward(self, bag: GraphBag) -> Tensor:
        z, _ = self._pool(bag)
        return self.head(z)  # (C,)

    def attention(self, bag: GraphBag) -> Tensor:
        """The pooling weights π (N,), summing to 1."""
        return self._pool(bag)[1]

    def forward_scores(self, bag: GraphBag) -> tuple[Tensor, Tensor]:
        """Logits (C,) and the pooling weights (N,) from one pass."""
        z, w = self._pool(bag)  # (hidden,), (N,)
        return self.head(z), w


@MODELS.register("abmil_gated")
class GatedABMIL(ABMIL):
    """Gated attention-based MIL (Ilse et al. 2018, eq. 10)."""

    Config = GatedABMILConfig

    def __init__(self, in_dim: int, n_classes: int,
                 cfg: GatedABMILConfig = GatedABMILConfig()) -> None:
        super().__init__(in_dim, n_classes, cfg)
