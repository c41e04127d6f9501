"""The MIL model contract and the one model registry (after torchmil's ``MILModel``).

Every model is a plain ``nn.Module`` built as ``cls(in_dim, n_classes, cfg)`` where ``cfg`` is
an instance of the model's frozen ``Config`` dataclass (defaults in ``srmil.config``).
``n_classes`` is the task's output size K (:mod:`srmil.tasks`: C class logits, ``bins``
survival hazard logits, 1 regression value): every model pools to an embedding and its last
layer maps it to K outputs; the objective calls :meth:`MILModel.task_loss`, never a hard-coded
cross-entropy (``task`` is ``None`` for classification, else the fold's fitted task):

    forward(bag)   -> outputs (K,)            inference path, deterministic in eval mode
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
from srmil.tasks.classification import classification_loss

MODELS: Registry[type] = Registry("MIL model")


class MILModel(nn.Module):
    """Base class: subclasses set ``Config``, ``uses_graph`` and ``score_kind`` and implement
    ``forward`` (and ``attention`` when ``score_kind`` is ``"attention"``)."""

    Config: ClassVar[type]
    uses_graph: ClassVar[bool] = False
    score_kind: ClassVar[str] = "attention"  # "attention" | "grad_x_input"
    task: Any = None  # a fitted srmil.tasks.Task; None = classification (set by create_model)
    deferred: Any = None  # srmil.training.batch.DeferredTaskLoss while a batch-level loss
    #                       (Cox) collects the outputs of a step's bags

    def __init__(self, in_dim: int, n_classes: int, cfg: Any) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.n_classes = n_classes
        self.cfg = cfg

    def forward(self, bag: GraphBag) -> Tensor:  # (C,)
        raise NotImplementedError

    @property
    def classifies(self) -> bool:
        """Whether the task is classification (class logits and class targets)."""
        return self.task is None or self.task.name == "classification"

    @property
    def loss_name(self) -> str:
        """Name of the task loss in the logged parts: ``ce`` for classification."""
        return "ce" if self.task is None else self.task.loss_name

    def task_loss(self, out: Tensor, target: Tensor) -> Tensor:
        """The task's loss of one output vector (K,) against the bag's target (a placeholder
        while :mod:`srmil.training.batch` collects a batch-level loss)."""
        if self.deferred is not None:
            return self.deferred.record(out, target)
        if self.task is None:
            return classification_loss(out, target)
        return self.task.loss(out, target)

    def task_loss_rows(self, out: Tensor, target: Tensor) -> Tensor:
        """Mean task loss of several output vectors (B, K) sharing the bag's target."""
        if self.deferred is not None:
            return self.deferred.record(out, target)
        if self.task is None:
            return nn.functional.cross_entropy(out, target.view(1).expand(out.shape[0]))
        return self.task.loss_rows(out, target)

    def loss(self, bag: GraphBag, target: Tensor) -> dict[str, Tensor]:
        """The task loss of the bag's outputs; models with more objectives override this."""
        loss = self.task_loss(self(bag), target)
        return {"total": loss, self.loss_name: loss}

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
    name: str, in_dim: int, n_classes: int, overrides: dict[str, Any] | None = None,
    task: Any = None,
) -> MILModel:
    """Build a registered model; ``overrides`` are checked against its ``Config``.

    Args:
        n_classes: output size K (``task.out_dim``).
        task: a fitted :class:`srmil.tasks.Task` (``None``: classification).
    """
    cls = MODELS.get(name)
    cfg = from_dict(cls.Config, overrides or {})
    net = cls(in_dim, n_classes, cfg)
    if task is not None and task.name != "classification":
        net.task = task
    return net
