"""Optimiser and learning-rate schedule of a fold, and the models' paper recipes.

``TrainConfig.optimizer`` / ``scheduler`` / ``no_decay_1d`` choose what :func:`build_optimizer`
builds; ``TrainConfig.recipe`` picks where those settings come from: ``shared`` (the config as
written, identical for every model of a comparison) or ``paper`` (each model's official
training recipe from :data:`RECIPES`, applied by :func:`resolve_recipe` before the run is
saved, so ``config.json`` holds the settings that actually ran).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch import nn

from srmil.config import TrainConfig
from srmil.errors import ConfigError
from srmil.registry import Registry

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "adam", "radam", "lookahead_radam")
SCHEDULERS = ("cosine", "none")

RECIPES: Registry[dict[str, Any]] = Registry("paper recipe")
"""Model name → the ``TrainConfig`` fields its official code trains with (``train.recipe
paper``). Epoch counts are left to the run (the papers train 100-200 epochs)."""

_SRMIL = dict(  # METHOD.md (wwyi1828/SRMIL): the shared defaults
    optimizer="adamw", lr=5e-4, weight_decay=1e-5, scheduler="cosine", betas=(0.9, 0.999),
    no_decay_1d=False, early_stopping=0)
RECIPES.register("srmil")(_SRMIL)
RECIPES.register("srmil_lowmask")(_SRMIL)
_ILSE = dict(  # AMLab-Amsterdam/AttentionDeepMIL main.py: Adam(lr 5e-4, betas (0.9, 0.999),
    #            weight_decay 10e-5), constant lr
    optimizer="adam", lr=5e-4, weight_decay=1e-4, scheduler="none", betas=(0.9, 0.999),
    no_decay_1d=False, early_stopping=0)
RECIPES.register("abmil")(_ILSE)
RECIPES.register("abmil_gated")(_ILSE)
RECIPES.register("clam_sb")(dict(  # mahmoodlab/CLAM main.py --opt adam --reg 1e-5, the README's
    #   --lr 2e-4 --early_stopping (core_utils.EarlyStopping: val loss, patience 20; CLAM also
    #   waits for epoch 50 before stopping, here select_after plays that part), constant lr
    optimizer="adam", lr=2e-4, weight_decay=1e-5, scheduler="none", betas=(0.9, 0.999),
    no_decay_1d=False, early_stopping=20))
RECIPES.register("transmil")(dict(  # szc19990412/TransMIL Camelyon/TransMIL.yaml: opt
    #   lookahead_radam, lr 2e-4, weight_decay 1e-5 (MyOptimizer/optim_factory.py: none on
    #   biases and 1-D parameters), patience 10 on val loss, constant lr
    optimizer="lookahead_radam", lr=2e-4, weight_decay=1e-5, scheduler="none",
    betas=(0.9, 0.999), no_decay_1d=True, early_stopping=10))


def resolve_recipe(cfg: TrainConfig, model: str) -> TrainConfig:
    """The training settings a model runs with: ``cfg`` itself under ``recipe: shared``; under
    ``recipe: paper`` the model's :data:`RECIPES` entry replaces the optimiser, lr, weight
    decay, betas, schedule and early stopping (a model without one keeps ``cfg``'s, logged).

    Args:
        cfg: the run's (or comparison spec's) training settings.
        model: registered model name.
    """
    if cfg.recipe == "shared":
        return cfg
    if model not in RECIPES:
        log.info("%s: no paper recipe registered; training with the shared settings", model)
        return cfg
    return dataclasses.replace(cfg, **RECIPES.get(model))


class LookaheadRAdam(torch.optim.RAdam):
    """Lookahead (Zhang et al. 2019, https://arxiv.org/abs/1907.08610) around RAdam, as
    TransMIL trains (``lookahead_radam``; alpha 0.5, k 6 are timm's Lookahead defaults).

    RAdam updates the fast weights every step; every ``k`` steps the slow weights move
    ``alpha`` of the way to them, ``slow += alpha·(fast − slow)``, and the fast weights restart
    from the slow ones. The slow weights start at the parameters' values before the first step
    (the paper's definition) and live in the optimiser state, so ``state_dict`` round-trips.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0.0, alpha: float = 0.5, k: int = 6) -> None:
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay)
        self.alpha, self.k = alpha, k

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (torch's signature)
        start = {id(p): p.detach().clone() for group in self.param_groups for p in group["params"]
                 if p.grad is not None and "lookahead_slow" not in self.state[p]}
        loss = super().step(closure)  # RAdam fills its own state first (it needs it empty)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if id(p) in start:
                    st["lookahead_slow"] = start[id(p)]
                if int(st["step"]) % self.k == 0:
                    slow = st["lookahead_slow"]
                    slow.add_(p.detach() - slow, alpha=self.alpha)
                    p.copy_(slow)
        return loss


def _param_groups(net: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """One group with ``cfg.weight_decay``; with ``no_decay_1d`` biases and other 1-D
    parameters (norms, PReLU slopes, tokens of shape (D,)) go to a second group without it."""
    params = [p for p in net.parameters() if p.requires_grad]
    if not cfg.no_decay_1d:
        return [{"params": params, "weight_decay": cfg.weight_decay}]
    decay = [p for p in params if p.dim() > 1]
    plain = [p for p in params if p.dim() <= 1]
    return [{"params": plain, "weight_decay": 0.0},
            {"params": decay, "weight_decay": cfg.weight_decay}]


def build_optimizer(cfg: TrainConfig, net: nn.Module
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The fold's optimiser and its per-epoch schedule.

    Default (METHOD.md): AdamW(lr, weight_decay on every parameter), cosine annealing to
    ``eta_min`` over ``epochs``, stepped once per epoch. ``scheduler: none`` keeps the lr
    constant (a schedule object is still returned, so checkpoints look the same).

    Raises:
        ConfigError: an unknown optimiser or scheduler.
    """
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got "
                          f"{cfg.optimizer!r}")
    if cfg.scheduler not in SCHEDULERS:
        raise ConfigError(f"train.scheduler must be one of {', '.join(SCHEDULERS)}, got "
                          f"{cfg.scheduler!r}")
    groups = _param_groups(net, cfg)
    betas = tuple(cfg.betas)
    opt: torch.optim.Optimizer
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=betas)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=cfg.lr, betas=betas)
    elif cfg.optimizer == "radam":
        opt = torch.optim.RAdam(groups, lr=cfg.lr, betas=betas)
    else:
        opt = LookaheadRAdam(groups, lr=cfg.lr, betas=betas)
    if cfg.scheduler == "cosine":
        sched: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=cfg.epochs, eta_min=cfg.eta_min)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return opt, sched
