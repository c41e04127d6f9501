"""``mean`` and ``max``: instance-level MLP, mean or max pooling, linear classifier (the
trivial baselines that keep everyone honest)."""

from __future__ import annotations

from torch import Tensor, nn

from srmil.config import MeanConfig
from srmil.graphs.graph_bag import GraphBag
from srmil.models.base import MODELS, MILModel


@MODELS.register("mean")
class MeanMIL(MILModel):
    """h_i = MLP(x_i); z = mean_i h_i; logits = W z. Ignores space; no attention."""

    Config = MeanConfig
    uses_graph = False
    score_kind = "grad_x_input"  # no attention: gradient × input

    def __init__(self, in_dim: int, n_classes: int, cfg: MeanConfig = MeanConfig()) -> None:
        super().__init__(in_dim, n_classes, cfg)
        self.mlp = nn.Sequential(nn.Linear(in_dim, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.head = nn.Linear(cfg.hidden, n_classes)

    def forward(self, bag: GraphBag) -> Tensor:
        h = self.mlp(bag.x)  # (N, hidden)
        return self.head(h.mean(dim=0))  # (C,)


@MODELS.register("max")
class MaxMIL(MeanMIL):
    """h_i = MLP(x_i); z = max_i h_i (per feature); logits = W z. Ignores space; no attention."""

    def forward(self, bag: GraphBag) -> Tensor:
        h = self.mlp(bag.x)  # (N, hidden)
        return self.head(h.max(dim=0).values)  # (C,)
