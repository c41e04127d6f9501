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
any other     detected        ``attention`` when ``model.attention(bag)`` returns scores,
                              else ``grad_x_input``
============  ==============  ===============================================================

The kind is detected, not declared on the model classes: a model whose ``attention()`` returns
``None`` (the :class:`~srmil.models.base.MILModel` default) gets the gradient score, so a new
model needs no edit here. :data:`DECLARED_KINDS` lists what the built-in models give; the tests
(``tests/reports/test_scores.py``) check every registered model against it.

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

# What the built-in models are expected to give with method="auto" (checked, see module doc).
DECLARED_KINDS: dict[str, str] = {
    "srmil": ATTENTION, "abmil": ATTENTION, "abmil_gated": ATTENTION, "clam_sb": ATTENTION,
    "dsmil": ATTENTION, "dtfd": ATTENTION, "patchgcn": ATTENTION, "transmil": ATTENTION,
    "mean": GRADIENT, "max": GRADIENT,
}


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
    """Gradient × input of one class logit w.r.t. the patch features, summed over features.

    Args:
        model: a model in eval mode (dropout off).
        bag: ``x`` (N, D).
        target: class index; ``None`` uses the model's predicted class.

    Returns:
        (scores (N,) float64, target class index).
    """
    with torch.inference_mode(False), torch.enable_grad():
        x = bag.x.detach().clone().requires_grad_(True)  # (N, D)
        logits = model(GraphBag(x, bag.edge_index, bag.slide_id, bag.y, bag.coords))  # (C,)
        c = int(logits.argmax()) if target is None else int(target)
        (grad,) = torch.autograd.grad(logits[c], x)  # (N, D)
        s = (grad * x).sum(dim=1)  # (N,)
    return s.detach().double().cpu().numpy(), c


def patch_scores(model: MILModel, bag: GraphBag, method: str = "auto",
                 target: int | None = None) -> PatchScores:
    """Per-patch scores of one bag (see the module doc for what each model gives).

    Args:
        model: the model; put in eval mode here.
        bag: the slide's bag (with its graph when the model uses one).
        method: ``auto`` (attention when the model has it, else gradient), ``attention``
            (error for a model without attention) or ``gradient``.
        target: class for the gradient score (default: the predicted class).

    Returns:
        :class:`PatchScores` with (N,) scores.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    model.eval()
    if method != "gradient":
        with torch.inference_mode():
            att = model.attention(bag)
        if att is not None:
            return PatchScores(att.detach().double().cpu().numpy().reshape(-1), ATTENTION)
        if method == ATTENTION:
            from srmil.errors import SrmilError

            raise SrmilError(f"model {type(model).__name__} has no "
                             "attention; use the gradient score")
    s, c = gradient_scores(model, bag, target)
    return PatchScores(s, GRADIENT, c)


def ensemble_scores(models: list[MILModel], bag: GraphBag, method: str = "auto"
                    ) -> tuple[PatchScores, np.ndarray]:
    """Scores and class probabilities of a bag under one or several models.

    With several models (slides outside every fold's test set), probabilities are averaged
    and the scores are the mean of the models' scores; the gradient of each model is taken
    for the ensemble's predicted class so the scores agree on what they explain.

    Returns:
        (scores, probabilities (C,) float64).
    """
    probs = []
    with torch.inference_mode():
        for m in models:
            m.eval()
            probs.append(m(bag).float().softmax(-1).double().cpu().numpy())
    p = np.mean(probs, axis=0)  # (C,)
    target = int(p.argmax())
    parts = [patch_scores(m, bag, method, target) for m in models]
    kinds = {s.kind for s in parts}
    if len(kinds) != 1:
        raise RuntimeError(f"fold models disagree on the score kind: {sorted(kinds)}")
    kind = kinds.pop()
    mean = np.mean([s.scores for s in parts], axis=0)  # (N,)
    return PatchScores(mean, kind, target if kind == GRADIENT else None), p


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
