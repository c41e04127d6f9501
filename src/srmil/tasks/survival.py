r"""Survival: slide-level time to event with right censoring.

Labels: ``time`` + ``event`` (1 = event observed, 0 = censored), or CLAM / Patch-GCN's
``survival_months`` + ``censorship`` (1 = censored) read as they are.

Default loss ``nll``: the discrete-time negative log-likelihood of Zadeh & Schmid, *Bias in
cross-entropy-based training of deep survival networks*, IEEE TPAMI 2021 (arXiv 1909.13466), as
Patch-GCN (Chen et al., MICCAI 2021) and SurvPath (Jaume et al., CVPR 2024) use it. Time is cut
into K bins at the quantiles of the training split's event times (first and last bins open);
the model emits K hazard logits, :math:`h_k = \sigma(o_k)`, :math:`S_k = \prod_{j\le k}(1-h_j)`,
:math:`S_0 = 1`. For a patient in bin :math:`y` with censorship :math:`c = 1 - \text{event}`:

.. math::
    \ell_{\text{unc}} = -(1-c)\,[\log S_{y} + \log h_{y+1}], \quad
    \ell_{\text{cen}} = -c\,\log S_{y+1}, \quad
    \mathcal{L} = (1-\alpha)(\ell_{\text{unc}} + \ell_{\text{cen}}) + \alpha\,\ell_{\text{unc}}

(indices 1-based over the bins; logs clamped at ``eps``). It works with one bag per step. The
risk is :math:`-\sum_k S_k` (Patch-GCN), higher = shorter survival.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from srmil.errors import CohortError, SrmilError
from srmil.tasks.base import SURVIVAL_COLUMNS, TASK_LOSSES, TASKS, Task, nan_key, numeric_column


@TASK_LOSSES.register("nll")
def discrete_time_nll(logits: Tensor, bin_index: Tensor, event: Tensor, alpha: float = 0.0,
                      eps: float = 1e-7) -> Tensor:
    """Discrete-time survival NLL (Zadeh & Schmid 2021; Patch-GCN / SurvPath convention).

    Args:
        logits: (B, K) hazard logits.
        bin_index: (B,) int64 time bin of each patient, in [0, K).
        event: (B,) 1 = event observed, 0 = censored.
        alpha: weight of the uncensored term added on top (Patch-GCN's ``alpha_surv``).
        eps: lower bound inside the logs.

    Returns:
        Scalar, mean over the batch.
    """
    h = torch.sigmoid(logits)  # (B, K)
    s = torch.cumprod(1 - h, dim=1)  # (B, K)
    s_pad = torch.cat([torch.ones_like(s[:, :1]), s], dim=1)  # (B, K+1), S before bin 0 = 1
    y = bin_index.view(-1, 1)  # (B, 1)
    c = 1 - event.view(-1, 1).to(h.dtype)  # (B, 1) censorship
    s_before = s_pad.gather(1, y).clamp_min(eps)  # survived to the start of bin y
    h_y = h.gather(1, y).clamp_min(eps)  # event in bin y
    s_after = s_pad.gather(1, y + 1).clamp_min(eps)  # survived past bin y
    unc = -(1 - c) * (s_before.log() + h_y.log())  # (B, 1)
    cen = -c * s_after.log()  # (B, 1)
    return ((1 - alpha) * (unc + cen) + alpha * unc).mean()


def survival_columns(columns: list[str]) -> tuple[str, str] | None:
    """The survival column pair a labels CSV carries, or ``None``."""
    return next((p for p in SURVIVAL_COLUMNS if set(p) <= set(columns)), None)


@TASKS.register("survival")
class SurvivalTask(Task):
    """Discrete-time survival over ``bins`` time bins (see the module docstring)."""

    name = "survival"
    summary_metrics = ("c_index", "c_index_uno", "td_auc", "ibs")
    select_metric = "c_index"

    def __init__(self, loss: str = "nll", bins: int = 4, alpha_surv: float = 0.0,
                 eps: float = 1e-7, horizons: tuple[float, ...] = ()) -> None:
        TASK_LOSSES.get(loss)
        if loss != "nll":
            raise SrmilError(f"survival.loss {loss!r}: only 'nll' trains with one bag per step")
        self.loss_name = loss
        self.bins = bins
        self.alpha = alpha_surv
        self.eps = eps
        self.user_horizons = tuple(horizons)
        self.edges: list[float] | None = None  # K-1 inner bin edges
        self.horizons: list[float] = []
        self.train_time: list[float] = []
        self.train_event: list[int] = []

    @classmethod
    def from_run_config(cls, cfg: Any, classes: list[str]) -> SurvivalTask:
        s = cfg.survival
        return cls(s.loss, s.bins, s.alpha_surv, s.eps, s.horizons)

    @classmethod
    def from_state(cls, state: dict[str, Any], classes: list[str]) -> SurvivalTask:
        t = cls(state["loss"], state["bins"], state["alpha_surv"], state["eps"],
                tuple(state.get("user_horizons", ())))
        t.edges = list(state["edges"])
        t.horizons = list(state["horizons"])
        t.train_time = list(state["train_time"])
        t.train_event = list(state["train_event"])
        return t

    def state(self) -> dict[str, Any]:
        return {"task": self.name, "loss": self.loss_name, "bins": self.bins,
                "alpha_surv": self.alpha, "eps": self.eps,
                "user_horizons": list(self.user_horizons), "edges": self.edges,
                "horizons": self.horizons, "train_time": self.train_time,
                "train_event": self.train_event}

    # ---- labels ------------------------------------------------------------------------

    @classmethod
    def parse_labels(cls, df: pd.DataFrame, source: str | os.PathLike | None,
                     **kwargs: Any) -> pd.DataFrame:
        """``time`` ≥ 0 and ``event`` ∈ {0, 1} (or ``survival_months`` and ``censorship``);
        ``label`` becomes ``event`` / ``censored`` (folds are stratified by event status)."""
        pair = survival_columns(list(df.columns))
        if pair is None:
            raise CohortError("survival needs columns time + event (or survival_months + "
                              f"censorship); found: {', '.join(df.columns)}", source)
        tcol, ecol = pair
        time = numeric_column(df, tcol, source)
        neg = np.flatnonzero(time < 0)
        if len(neg):
            raise CohortError(f"line {int(neg[0]) + 2}: {tcol} {time[neg[0]]:g} is negative",
                              source)
        flag = numeric_column(df, ecol, source)
        bad = np.flatnonzero(~np.isin(flag, (0.0, 1.0)))
        if len(bad):
            raise CohortError(f"line {int(bad[0]) + 2}: {ecol} must be 0 or 1, got "
                              f"{df[ecol].iloc[bad[0]].strip()!r}", source)
        event = (1 - flag if ecol == "censorship" else flag).astype(int)
        out = df.copy()
        out["time"], out["event"] = time, event
        out["label"] = np.where(event == 1, "event", "censored")
        out["target"] = list(zip(time.tolist(), event.tolist(), strict=True))
        return out

    # ---- fold state --------------------------------------------------------------------

    @property
    def out_dim(self) -> int:
        return self.bins

    def fit(self, targets: list[Any]) -> None:
        """Bin edges (and default horizons) from the training split's event times.

        Raises:
            SrmilError: the training split has no observed event.
        """
        time = np.array([t for t, _ in targets], dtype=np.float64)
        event = np.array([e for _, e in targets], dtype=np.int64)
        ev = time[event == 1]
        if len(ev) == 0:
            raise SrmilError("the train split has no observed event: survival time bins and "
                             "the c-index need events")
        q = np.arange(1, self.bins) / self.bins
        self.edges = np.quantile(ev, q).tolist() if self.bins > 1 else []
        self.horizons = (list(self.user_horizons) if self.user_horizons
                         else np.quantile(ev, [0.25, 0.5, 0.75]).tolist())
        self.train_time, self.train_event = time.tolist(), event.tolist()

    def bin_of(self, time: Tensor) -> Tensor:
        """Time bin (int64) of each time: the number of inner edges at or below it."""
        edges = torch.tensor(self.edges or [], dtype=time.dtype, device=time.device)
        return torch.searchsorted(edges, time.contiguous(), right=True)

    # ---- loss and outputs --------------------------------------------------------------

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        """NLL of one bag's hazard logits (K,); ``target`` = (time, event)."""
        if self.edges is None:
            raise RuntimeError("SurvivalTask.fit was not called")
        t = target.view(-1, 2).to(out.dtype)  # (1, 2)
        return discrete_time_nll(out.view(1, -1), self.bin_of(t[:, 0]), t[:, 1],
                                 self.alpha, self.eps)

    def loss_rows(self, out: Tensor, target: Tensor) -> Tensor:
        t = target.view(1, 2).to(out.dtype).expand(out.shape[0], 2)  # (B, 2)
        return discrete_time_nll(out, self.bin_of(t[:, 0]), t[:, 1], self.alpha, self.eps)

    def transform(self, out: Tensor) -> np.ndarray:
        """(K,) logits → (1 + K,): risk = −Σ S_k, then S_k per bin."""
        s = torch.cumprod(1 - torch.sigmoid(out.double()), dim=0)  # (K,)
        return torch.cat([-s.sum().view(1), s]).cpu().numpy()

    def score(self, out: Tensor) -> Tensor:
        """The risk −Σ_k S_k of the hazard logits (K,), differentiable."""
        return -torch.cumprod(1 - torch.sigmoid(out), dim=0).sum()

    def describe(self, row: np.ndarray) -> str:
        return f"risk {row[0]:.3f}, S(end of bin 1) {row[1]:.2f}"

    def survival_at(self, outputs: np.ndarray, times: np.ndarray) -> np.ndarray:
        """S(t) (S, T): piecewise linear through S = 1 at t = 0 and S_k at the end of bin k
        (the last bin ends at the training split's longest time); flat beyond."""
        ends = [*(self.edges or []), max(self.train_time or [1.0])]
        knots = np.array([0.0, *ends])
        surv = np.concatenate([np.ones((len(outputs), 1)), outputs[:, 1:]], axis=1)
        return np.stack([np.interp(times, knots, row) for row in surv]) if len(surv) else \
            np.zeros((0, len(times)))

    def table(self, outputs: np.ndarray, targets: list[Any] | None) -> dict[str, Any]:
        cols: dict[str, Any] = {}
        if targets is not None:
            cols["time"] = [t for t, _ in targets]
            cols["event"] = [int(e) for _, e in targets]
        cols["risk"] = outputs[:, 0] if len(outputs) else []
        for k in range(self.bins):
            cols[f"surv_bin{k + 1}"] = outputs[:, 1 + k] if len(outputs) else []
        return cols

    def outputs_of(self, table: pd.DataFrame) -> np.ndarray:
        cols = ["risk", *[f"surv_bin{k + 1}" for k in range(self.bins)]]
        return table[cols].to_numpy(dtype=float)

    def targets_of(self, table: pd.DataFrame) -> list[Any]:
        return list(zip(table["time"].astype(float), table["event"].astype(int), strict=True))

    # ---- metrics -----------------------------------------------------------------------

    def metrics(self, targets: list[Any], outputs: np.ndarray,
                only: str | None = None) -> dict[str, Any]:
        """Harrell's and Uno's c-index, mean time-dependent AUC over the horizons, integrated
        Brier score (:func:`srmil.training.metrics.survival_metrics`); NaN where undefined."""
        from srmil.training.metrics import survival_metrics

        time = np.array([t for t, _ in targets], dtype=np.float64)
        event = np.array([e for _, e in targets], dtype=bool)
        return survival_metrics(
            time, event, outputs[:, 0], lambda ts: self.survival_at(outputs, ts),
            np.asarray(self.train_time), np.asarray(self.train_event, dtype=bool),
            self.horizons, only=only)

    def metric_fn(self, metric: str, targets: list[Any], outputs: np.ndarray):
        t = np.empty(len(targets), dtype=object)
        t[:] = targets
        return lambda idx: float(self.metrics(list(t[idx]), outputs[idx], only=metric)[metric])

    def selection_key(self, metrics: dict[str, Any]) -> tuple[float, ...]:
        return nan_key(metrics["c_index"])
