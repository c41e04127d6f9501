r"""Per-patch scores for heatmaps: attention where a model has it, a gradient score otherwise.

Which score each model gives (``patch_scores(..., method="auto")``):

============  ==============  ===============================================================
model         kind            weights
============  ==============  ===============================================================
srmil         ``attention``   supernode pooling: the supernode's incoming GAT attention weights
                              from the patches in the LAST encoder layer, mean over heads (they
                              sum to 1 in eval mode); ``pooling="gated"``: the gated-attention
                              pool weights (:meth:`srmil.models.srmil.SRMIL.attention`)
abmil,        ``attention``   the attention-pooling weights :math:`\pi` (sum to 1)
abmil_gated
clam_sb       ``attention``   the gated attention-pooling weights (sum to 1)
dsmil         ``attention``   the bag-stream attention column of the predicted class (sum to 1)
dtfd          ``attention``   per-patch weight in the tier-2 embedding (sum to 1)
patchgcn      ``attention``   the gated attention-pooling weights after the GCN (sum to 1)
transmil      ``attention``   class-token attention of the last layer (sum to 1)
mean, max     ``grad_x_input`` no attention: gradient × input (below)
any other     declared        the class's ``score_kind``
============  ==============  ===============================================================

The kind is the model class's ``score_kind`` attribute (:class:`~srmil.models.base.MILModel`),
so a new model declares it where it is defined and needs no edit here. Logits and attention
come from one forward pass (:meth:`~srmil.models.base.MILModel.forward_scores`) where the model
supports it; the gradient score needs its own pass with gradients.

Gradient × input (Simonyan et al. 2014; Shrikumar et al. 2016): for the logit :math:`f_c` of the
target class (default: the predicted class),

.. math::
    s_i = \sum_d x_{id}\,\frac{\partial f_c}{\partial x_{id}},

the first-order contribution of patch :math:`i` to :math:`f_c`. It is signed: positive patches
push towards class :math:`c`, negative ones away from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from srmil.graphs.graph_bag import GraphBag
from srmil.models.base import MILModel

ATTENTION = "attention"
GRADIENT = "grad_x_input"
METHODS = ("auto", ATTENTION, "gradient")

@dataclass
class PatchScores:
    """Scores of one bag.

    Attributes:
        scores: (N,) float64 per-patch scores, in the bag's row order.
        kind: ``"attention"`` or ``"grad_x_input"``.
        target: class index the gradient was taken for (``None`` for attention).
    """

    scores: np.ndarray
    kind: str
    target: int | None = None


def gradient_scores(model: MILModel, bag: GraphBag, target: int | None = None
                    ) -> tuple[np.ndarray, int]:
    """Gradient × input of one class logit w.r.t. the patch features, summed over features
    (survival and regression: of the risk or the value, :meth:`srmil.tasks.Task.score`).

    Args:
        model: a model in eval mode (dropout off).
        bag: ``x`` (N, D).
        target: class index; ``None`` uses the model's predicted class.

    Returns:
        (scores (N,) float64, target class index; ``None`` for survival and regression).
    """
    with torch.inference_mode(False), torch.enable_grad():
        x = bag.x.detach().clone().requires_grad_(True)  # (N, D)
        logits = model(GraphBag(x, bag.edge_index, bag.slide_id, bag.y, bag.coords))  # (C,)
        if not model.classifies:  # survival risk / regression value: no class to pick
            (grad,) = torch.autograd.grad(model.task.score(logits), x)  # (N, D)
            return (grad * x).sum(dim=1).detach().double().cpu().numpy(), None
        c = int(logits.argmax()) if target is None else int(target)
        (grad,) = torch.autograd.grad(logits[c], x)  # (N, D)
        s = (grad * x).sum(dim=1)  # (N,)
    return s.detach().double().cpu().numpy(), c


def _kind(model: MILModel, method: str) -> str:
    """The score kind ``method`` gives for ``model``; refuses attention where it has none."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if model.score_kind not in (ATTENTION, GRADIENT):
        raise ValueError(f"{type(model).__name__}.score_kind must be {ATTENTION!r} or "
                         f"{GRADIENT!r}, got {model.score_kind!r}")
    if method == "gradient":
        return GRADIENT
    if method == ATTENTION and model.score_kind != ATTENTION:
        from srmil.errors import SrmilError

        raise SrmilError(f"model {type(model).__name__} has no attention; use the gradient score")
    return model.score_kind


def _attention_array(model: MILModel, att: torch.Tensor | None) -> np.ndarray:
    if att is None:  # a bug in the model class, not bad input
        raise RuntimeError(f"{type(model).__name__} declares score_kind 'attention' but gives "
                           "no attention scores")
    return att.detach().double().cpu().numpy().reshape(-1)  # (N,)


def patch_scores(model: MILModel, bag: GraphBag, method: str = "auto",
                 target: int | None = None) -> PatchScores:
    """Per-patch scores of one bag (see the module doc for what each model gives).

    Args:
        model: the model; put in eval mode here.
        bag: the slide's bag (with its graph when the model uses one).
        method: ``auto`` (the model's ``score_kind``), ``attention`` (error for a model
            without attention) or ``gradient``.
        target: class for the gradient score (default: the predicted class).

    Returns:
        :class:`PatchScores` with (N,) scores.
    """
    kind = _kind(model, method)
    model.eval()
    if kind == ATTENTION:
        with torch.inference_mode():
            att = model.attention(bag)
        return PatchScores(_attention_array(model, att), ATTENTION)
    s, c = gradient_scores(model, bag, target)
    return PatchScores(s, GRADIENT, c)


def ensemble_scores(models: list[MILModel], bag: GraphBag, method: str = "auto"
                    ) -> tuple[PatchScores, np.ndarray]:
    """Scores and class probabilities of a bag under one or several models.

    With several models (slides outside every fold's test set), probabilities are averaged
    and the scores are the mean of the models' scores; the gradient of each model is taken
    for the ensemble's predicted class so the scores agree on what they explain. Attention
    models give logits and attention from one forward pass each.

    Returns:
        (scores, probabilities (C,) float64; survival / regression: the task's prediction
        row, :meth:`srmil.tasks.Task.transform`).
    """
    kinds = {_kind(m, method) for m in models}
    if len(kinds) != 1:
        raise RuntimeError(f"fold models disagree on the score kind: {sorted(kinds)}")
    kind = kinds.pop()
    probs, atts = [], []
    with torch.inference_mode():
        for m in models:
            m.eval()
            if kind == ATTENTION:
                logits, att = m.forward_scores(bag)  # (C,), (N,)
                atts.append(_attention_array(m, att))
            else:
                logits = m(bag)  # (C,)
            if m.classifies:
                probs.append(logits.float().softmax(-1).double().cpu().numpy())
            else:  # the task's prediction row (risk and survival, or the value)
                probs.append(m.task.transform(logits.float()))
    p = np.mean(probs, axis=0)  # (C,) or (M,)
    target = int(p.argmax()) if models[0].classifies else None
    if kind == ATTENTION:
        return PatchScores(np.mean(atts, axis=0), ATTENTION), p
    parts = [gradient_scores(m, bag, target)[0] for m in models]
    return PatchScores(np.mean(parts, axis=0), GRADIENT, target), p


def rank_percentile(scores: np.ndarray) -> np.ndarray:
    """Rank of each score within its slide, as a percentile in (0, 100]; ties share a rank.

    The highest patch gets 100, the lowest 100/N: every slide spans the colour map whatever
    the scale of its raw scores (no "cold all over" maps from one hot patch).
    """
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    return rankdata(s, method="average") / s.size * 100.0
