"""Feature standardisation (``train.standardise``): z-scores fitted on a fold's training split.

Each feature dimension d becomes ``(x_d − μ_d) / σ_d`` with μ, σ the mean and standard deviation
over every patch of the fold's TRAINING bags (never its val or test bags). The statistics are
saved as ``fold_K/standardise.json``; the fold's model is loaded wrapped in
:class:`StandardisedModel`, so predict, evaluate and heatmaps apply the same transform.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from srmil.errors import SrmilError
from srmil.graphs.graph_bag import GraphBag
from srmil.models.base import MILModel
from srmil.storage import write_json

FILE = "standardise.json"
MIN_STD = 1e-6  # a constant feature is centred, not blown up


@dataclasses.dataclass(frozen=True)
class Standardiser:
    """Per-dimension mean and std, (D,) each, float64."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, data: Any) -> Standardiser:
        """Mean and std over every patch of every bag of ``data`` (a dataset of GraphBags),
        accumulated in float64 (one pass, Chan's parallel update per bag)."""
        n, mean, m2 = 0, None, None
        for i in range(len(data)):
            x = data[i].x.detach().double().cpu().numpy()  # (N_i, D)
            k = x.shape[0]
            if k == 0:
                continue
            mu, var = x.mean(0), x.var(0)
            if mean is None:
                n, mean, m2 = k, mu, var * k
                continue
            d = mu - mean
            tot = n + k
            mean = mean + d * k / tot
            m2 = m2 + var * k + d * d * n * k / tot
            n = tot
        if mean is None:
            raise SrmilError("standardise: the training split has no patches")
        std = np.sqrt(m2 / n)
        return cls(mean, np.maximum(std, MIN_STD))

    def apply(self, bag: GraphBag) -> GraphBag:
        """A copy of ``bag`` with standardised features (graph and target shared)."""
        mean = torch.as_tensor(self.mean, dtype=bag.x.dtype, device=bag.x.device)  # (D,)
        std = torch.as_tensor(self.std, dtype=bag.x.dtype, device=bag.x.device)  # (D,)
        return dataclasses.replace(bag, x=(bag.x - mean) / std)  # (N, D)

    def state(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def save(self, fold_dir: Path) -> Path:
        """``fold_dir/standardise.json`` (atomic; the same split always gives the same file)."""
        return write_json(Path(fold_dir) / FILE, self.state(), overwrite=True)

    @classmethod
    def load(cls, fold_dir: Path) -> Standardiser | None:
        """The fold's statistics, or ``None`` when it trained on raw features.

        Raises:
            SrmilError: an unreadable file, or mean and std of different lengths.
        """
        path = Path(fold_dir) / FILE
        if not path.exists():
            return None
        try:
            st = json.loads(path.read_text())
            mean = np.asarray(st["mean"], dtype=np.float64)
            std = np.asarray(st["std"], dtype=np.float64)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SrmilError(f"unreadable standardisation statistics ({exc})", path) from None
        if mean.shape != std.shape or mean.ndim != 1:
            raise SrmilError("mean and std must be lists of one length", path)
        return cls(mean, std)


class StandardisedDataset(torch.utils.data.Dataset):
    """A fold's dataset whose bags come out standardised; ids, targets and cache as ``data``'s.

    The training loop reads ``data[i]`` (cached bags) or ``data.load(i)`` (read-ahead workers);
    both are standardised here, so the cache keeps raw bags shared by every fold.
    """

    def __init__(self, data: Any, st: Standardiser) -> None:
        self.data, self.st = data, st
        self._memo: dict[int, GraphBag] = {}

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> GraphBag:
        if i in self._memo:  # cached cohorts: standardised once, neighbour table built once
            return self._memo[i]
        gb = self.st.apply(self.data[i])
        if self.data.cache:
            self._memo[i] = gb
        return gb

    def load(self, i: int) -> GraphBag:
        return self.st.apply(self.data.load(i))

    def __getattr__(self, name: str) -> Any:  # slide_ids, targets, cache, members, id_column
        if name in ("data", "st", "_memo"):
            raise AttributeError(name)
        return getattr(self.data, name)


class StandardisedModel(MILModel):
    """A trained model that standardises every bag before it sees it (predict, evaluate,
    heatmaps of a run trained with ``train.standardise``). Not registered: it is how a
    standardised fold is loaded, never trained as such; its weights are ``net``'s."""

    def __init__(self, net: MILModel, st: Standardiser) -> None:
        super().__init__(net.in_dim, net.n_classes, net.cfg)
        if len(st.mean) != net.in_dim:
            raise SrmilError(f"standardisation statistics of {len(st.mean)} features, the "
                             f"model expects {net.in_dim}")
        self.net = net
        self.st = st
        self.task = net.task
        self.uses_graph = net.uses_graph  # instance attributes: the wrapped model's
        self.score_kind = net.score_kind
        self.Config = net.Config

    def forward(self, bag: GraphBag) -> Tensor:
        return self.net(self.st.apply(bag))

    def loss(self, bag: GraphBag, target: Tensor) -> dict[str, Tensor]:
        return self.net.loss(self.st.apply(bag), target)

    def attention(self, bag: GraphBag) -> Tensor | None:
        return self.net.attention(self.st.apply(bag))

    def forward_scores(self, bag: GraphBag) -> tuple[Tensor, Tensor | None]:
        return self.net.forward_scores(self.st.apply(bag))
