"""The MIL model contract and the one model registry (after torchmil's ``MILModel``).

Every model is a plain ``nn.Module`` built as ``cls(in_dim, n_classes, cfg)`` where ``cfg`` is
an instance of the model's frozen ``Config`` dataclass (defaults in ``srmil.config``):

    forward(bag)   -> logits (C,)             inference path, deterministic in eval mode
    loss(bag, y)   -> {"total": ..., parts}   training objective; parts are logged apart
    attention(bag) -> (N,) scores             per-patch scores for heatmaps (attention models)
    forward_scores(bag) -> (logits, scores)   both from one pass where the model can

``uses_graph`` says whether the model needs the spatial graph (and so coordinates);
``score_kind`` which per-patch score its heatmaps show: ``"attention"`` (its own weights, from
:meth:`MILModel.attention`) or ``"grad_x_input"`` (a model without attention: gradient × input,
:func:`srmil.reports.scores.gradient_scores`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from srmil.config import from_dict
from srmil.graphs.graph_bag import GraphBag
from srmil.registry import Registry

MODELS: Registry[type] = Registry("MIL model")


class MILModel(nn.Module):
    """Base class: subclasses set ``Config``, ``uses_graph`` and ``score_kind`` and implement
    ``forward`` (and ``attention`` when ``score_kind`` is ``"attention"``)."""

    Config: ClassVar[type]
    uses_graph: ClassVar[bool] = False
    score_kind: ClassVar[str] = "attention"  # "attention" | "grad_x_input"

    def __init__(self, in_dim: int, n_classes: int, cfg: Any) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.n_classes = n_classes
        self.cfg = cfg

    def forward(self, bag: GraphBag) -> Tensor:  # (C,)
        raise NotImplementedError

    def loss(self, bag: GraphBag, target: Tensor) -> dict[str, Tensor]:
        """Cross-entropy of the slide label; models with more objectives override this."""
        ce = nn.functional.cross_entropy(self(bag)[None], target.view(1))
        return {"total": ce, "ce": ce}

    def attention(self, bag: GraphBag) -> Tensor | None:
        """Per-patch attention scores (N,); ``None`` for a ``grad_x_input`` model."""
        return None

    def forward_scores(self, bag: GraphBag) -> tuple[Tensor, Tensor | None]:
        """Logits (C,) and :meth:`attention` (N,) (``None`` for ``grad_x_input`` models).

        Models whose attention falls out of their forward pass override this to compute both
        in one pass; this default runs ``forward`` and ``attention`` one after the other.
        """
        logits = self(bag)  # (C,)
        return logits, self.attention(bag) if self.score_kind == "attention" else None


def create_model(
    name: str, in_dim: int, n_classes: int, overrides: dict[str, Any] | None = None
) -> MILModel:
    """Build a registered model; ``overrides`` are checked against its ``Config``."""
    cls = MODELS.get(name)
    cfg = from_dict(cls.Config, overrides or {})
    return cls(in_dim, n_classes, cfg)
