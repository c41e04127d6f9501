"""The selected fold models of a run, ready to score bags for heatmaps.

Which model scores a slide of a cross-validation run: the fold model whose TEST split held the
slide (the run's splits), so no slide is explained by a model that trained on it; a slide in no
fold's test split (a new slide) gets the mean of every fold model's scores; ``fold`` picks one
fold's model for all slides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srmil.bags.bag import FeatureBag
from srmil.bags.readers import read_bag
from srmil.errors import BagError, SrmilError
from srmil.reports.scores import PatchScores, ensemble_scores
from srmil.training.rundir import RunDir


def test_folds(run_dir: str | os.PathLike) -> dict[str, int]:
    """slide_id → the fold whose test split holds it (from the run's ``splits.csv``)."""
    return RunDir(run_dir).test_folds()


@dataclass
class SlideScores:
    """One slide scored: the bag, its scores and the prediction that came with them."""

    bag: FeatureBag
    scores: PatchScores
    probs: np.ndarray
    folds: list[int]
    rule: str
    task: Any = None  # the models' fitted task (None: classification)


class RunScorer:
    """The selected fold models of a run, ready to score bags.

    Args:
        run_dir: the run directory.
        fold: use this fold's model for every slide (default: the slide's test fold).
        method: ``auto`` | ``attention`` | ``gradient`` (:func:`srmil.reports.scores.patch_scores`).
    """

    def __init__(self, run_dir: str | os.PathLike, fold: int | None = None,
                 method: str = "auto") -> None:
        self.run_dir = Path(run_dir)
        rd = RunDir(run_dir).require()
        self.rundir = rd
        self.models = dict(rd.models(fold))
        self.classes: list[str] = rd.classes()
        self.graph = rd.graph_config()
        self.fixed = fold
        self.method = method
        self.test_fold = rd.test_folds()
        self.model_name = rd.model_name()

    def folds_for(self, slide_id: str) -> tuple[list[int], str]:
        """The fold models that score ``slide_id`` and why."""
        if self.fixed is not None:
            return [self.fixed], f"fold {self.fixed} (chosen)"
        k = self.test_fold.get(slide_id)
        if k is not None and k in self.models:
            return [k], f"fold {k} (its test split held the slide)"
        if k is not None:  # every other fold's model trained on this slide
            raise SrmilError(f"slide {slide_id}: its test fold {k} is not finished; the other "
                             "folds' models trained on it; finish the run (--resume) or choose "
                             "--fold")
        ks = sorted(self.models)
        if len(ks) == 1:
            return ks, f"fold {ks[0]} (the run's only model; slide in no test split)"
        return ks, f"mean over folds {','.join(map(str, ks))} (slide in no test split)"

    def score(self, bag_path: Path, slide_id: str | None = None) -> SlideScores:
        """Read a bag and score its patches."""
        from srmil.training.data import model_bag

        bag = read_bag(bag_path)
        sid = slide_id or bag.slide_id
        if bag.coords is None:
            raise BagError("no coordinates: a heatmap needs the patch positions", bag_path)
        folds, rule = self.folds_for(sid)
        nets = [self.models[k] for k in folds]
        gb = model_bag(bag, self.graph, nets[0].in_dim, nets[0].uses_graph, slide_id=sid)
        scores, probs = ensemble_scores(nets, gb, self.method)
        if len(scores.scores) != bag.n_patches:
            raise SrmilError(f"the model gave {len(scores.scores)} scores for "
                             f"{bag.n_patches} patches", bag_path)
        return SlideScores(bag, scores, probs, folds, rule, nets[0].task)


