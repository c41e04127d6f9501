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

Loss ``cox``: the negative Cox partial log-likelihood (Cox, *Regression models and life
tables*, JRSS-B 1972; as DeepSurv, Katzman et al. 2018, and STAMP's Cox head use it) over the
bags of one optimiser step (``train.bags_per_step`` ≥ 2: the risk set of a patient is the
patients of the step still at risk at its time; Breslow's handling of ties). The model emits one
output, the log-risk :math:`r`. The survival curve comes from Breslow's baseline cumulative
hazard fitted on the training split's risks once the fold is trained,
:math:`S(t \mid r) = \exp(-H_0(t)\,e^{r})`, evaluated at the ends of the same time bins as
``nll`` so both losses write the same prediction columns. Until it is fitted (the validation
passes of training) the curve is NaN and so is the integrated Brier score.
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


@TASK_LOSSES.register("cox")
def cox_partial_likelihood(risk: Tensor, time: Tensor, event: Tensor) -> Tensor:
    r"""Negative Cox partial log-likelihood of a batch (Cox 1972; Breslow's ties).

    Args:
        risk: (B,) log-risks r (higher = shorter survival).
        time: (B,) follow-up times.
        event: (B,) 1 = event observed, 0 = censored.

    Returns:
        Scalar: the mean over the batch's events of :math:`-[r_i - \log \sum_{j: t_j \ge
        t_i} e^{r_j}]`; 0 (no gradient) when the batch holds no event.
    """
    at_risk = time.view(1, -1) >= time.view(-1, 1)  # (B, B): [i, j] = j still at risk at t_i
    log_den = torch.logsumexp(risk.view(1, -1).masked_fill(~at_risk, -torch.inf), dim=1)  # (B,)
    ev = event.to(risk.dtype)
    return -((risk - log_den) * ev).sum() / ev.sum().clamp_min(1)


def breslow_baseline(risk: np.ndarray, time: np.ndarray, event: np.ndarray,
                     at: np.ndarray) -> np.ndarray:
    r"""Breslow's baseline cumulative hazard :math:`H_0(t) = \sum_{t_i \le t, e_i = 1}
    1 / \sum_{t_j \ge t_i} e^{r_j}` (T,) at the times ``at`` (T,), from (S,) risks, times and
    events of the training split."""
    w = np.exp(risk - risk.max())  # scaled for range; undone below
    ev_times = np.unique(time[event == 1])
    den = np.array([w[time >= t].sum() for t in ev_times])  # (E,)
    d = np.array([np.sum((time == t) & (event == 1)) for t in ev_times])  # (E,) tied events
    steps = d / den / np.exp(risk.max())  # (E,) hazard increments
    cum = np.concatenate([[0.0], np.cumsum(steps)])
    return cum[np.searchsorted(ev_times, at, side="right")]


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
        if loss not in ("nll", "cox"):
            raise SrmilError(f"survival.loss {loss!r} is not a survival loss (nll, cox)")
        self.loss_name = loss
        self.batch_level = loss == "cox"
        self.baseline: list[float] | None = None  # cox: Breslow's H_0 at the K bin ends
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
        t.baseline = state.get("baseline")
        return t

    def state(self) -> dict[str, Any]:
        return {"task": self.name, "loss": self.loss_name, "bins": self.bins,
                "alpha_surv": self.alpha, "eps": self.eps,
                "user_horizons": list(self.user_horizons), "edges": self.edges,
                "horizons": self.horizons, "train_time": self.train_time,
                "train_event": self.train_event,
                **({"baseline": self.baseline} if self.batch_level else {})}

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
        return 1 if self.batch_level else self.bins

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

    def bin_ends(self) -> np.ndarray:
        """(K,) ends of the time bins: the inner edges, then the training split's longest
        time."""
        return np.array([*(self.edges or []), max(self.train_time or [1.0])])

    def fit_outputs(self, train_outputs: np.ndarray) -> None:
        """Cox: Breslow's baseline hazard from the trained model's (S, 1 + K) outputs on the
        training split (nothing for ``nll``, whose outputs are a survival curve already)."""
        if self.batch_level:
            self.baseline = breslow_baseline(
                train_outputs[:, 0], np.asarray(self.train_time),
                np.asarray(self.train_event), self.bin_ends()).tolist()

    def bin_of(self, time: Tensor) -> Tensor:
        """Time bin (int64) of each time: the number of inner edges at or below it."""
        edges = torch.tensor(self.edges or [], dtype=time.dtype, device=time.device)
        return torch.searchsorted(edges, time.contiguous(), right=True)

    # ---- loss and outputs --------------------------------------------------------------

    def batch_loss(self, out: Tensor, target: Tensor) -> Tensor:
        """Loss of a batch's outputs (B, K) against (B, 2) (time, event) targets."""
        t = target.view(-1, 2).to(out.dtype)
        if self.batch_level:
            return cox_partial_likelihood(out[:, 0], t[:, 0], t[:, 1])
        return discrete_time_nll(out, self.bin_of(t[:, 0]), t[:, 1], self.alpha, self.eps)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        """NLL of one bag's hazard logits (K,); ``target`` = (time, event)."""
        if self.edges is None:
            raise RuntimeError("SurvivalTask.fit was not called")
        if self.batch_level:
            raise RuntimeError("the Cox loss compares bags: it has no value for one bag")
        t = target.view(-1, 2).to(out.dtype)  # (1, 2)
        return discrete_time_nll(out.view(1, -1), self.bin_of(t[:, 0]), t[:, 1],
                                 self.alpha, self.eps)

    def loss_rows(self, out: Tensor, target: Tensor) -> Tensor:
        if self.batch_level:
            raise RuntimeError("the Cox loss compares bags: it has no value for one bag")
        t = target.view(1, 2).to(out.dtype).expand(out.shape[0], 2)  # (B, 2)
        return discrete_time_nll(out, self.bin_of(t[:, 0]), t[:, 1], self.alpha, self.eps)

    def transform(self, out: Tensor) -> np.ndarray:
        r"""(K,) logits → (1 + K,): risk = −Σ S_k, then S_k per bin. Cox: (1,) log-risk r →
        r, then :math:`\exp(-H_0 e^r)` at the bin ends (NaN before :meth:`fit_outputs`)."""
        if self.batch_level:
            r = float(out.double().view(-1)[0])
            h0 = np.asarray(self.baseline if self.baseline is not None
                            else [np.nan] * self.bins)
            return np.concatenate([[r], np.exp(-h0 * np.exp(r))])
        s = torch.cumprod(1 - torch.sigmoid(out.double()), dim=0)  # (K,)
        return torch.cat([-s.sum().view(1), s]).cpu().numpy()

    def score(self, out: Tensor) -> Tensor:
        """The risk −Σ_k S_k of the hazard logits (K,) (Cox: the log-risk), differentiable."""
        if self.batch_level:
            return out.view(-1)[0]
        return -torch.cumprod(1 - torch.sigmoid(out), dim=0).sum()

    def describe(self, row: np.ndarray) -> str:
        return f"risk {row[0]:.3f}, S(end of bin 1) {row[1]:.2f}"

    def survival_at(self, outputs: np.ndarray, times: np.ndarray) -> np.ndarray:
        """S(t) (S, T): piecewise linear through S = 1 at t = 0 and S_k at the end of bin k
        (the last bin ends at the training split's longest time); flat beyond."""
        knots = np.array([0.0, *self.bin_ends()])
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
