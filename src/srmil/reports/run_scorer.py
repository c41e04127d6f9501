"""The selected fold models of a run, ready to score bags for heatmaps.

Which model scores a slide of a cross-validation run: the fold model whose TEST split held the
slide (the run's splits), so no slide is explained by a model that trained on it; a slide in no
fold's test split (a new slide) gets the mean of every fold model's scores; ``fold`` picks one
fold's model for all slides.

A patient-level run (``data.bag_level patient``) trained on cases: a slide of a case with
several slides (the run's ``splits.csv`` says which) is scored inside its case's bag, every
slide of the case side by side as in training, and keeps its own patches' scores (its slide id
and coordinates), so the heatmaps stay per slide while the attention is the case's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    case: str | None = None  # patient-level run: the case whose bag was scored
    case_slides: list[str] = field(default_factory=list)  # that bag's slides, in row order


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
        self.patient = rd.config().data.bag_level == "patient"
        self.case_of: dict[str, str] = {}  # patient-level run: slide → case (splits.csv)
        self.members: dict[str, list[str]] = {}  # case → its slides, sorted as in training
        if self.patient and rd.splits_path.exists():
            s = rd.splits().drop_duplicates("slide_id")
            self.case_of = dict(zip(s["slide_id"], s["case_id"], strict=True))
            for sid, case in sorted(self.case_of.items()):
                self.members.setdefault(case, []).append(sid)
        self._case_scores: dict[str, tuple[dict[str, PatchScores], np.ndarray]] = {}

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

    def score(self, bag_path: Path, slide_id: str | None = None,
              bags: Mapping[str, Path] | None = None) -> SlideScores:
        """Read a bag and score its patches.

        Args:
            bag_path: the slide's bag.
            slide_id: its id (default: the bag's).
            bags: slide id → bag of the other slides, for a patient-level run's cases.

        Raises:
            SrmilError: no coordinates, a case's slide without a bag, scores that do not pair
                with the patches.
        """
        bag = read_bag(bag_path)
        sid = slide_id or bag.slide_id
        if bag.coords is None:
            raise BagError("no coordinates: a heatmap needs the patch positions", bag_path)
        folds, rule = self.folds_for(sid)
        case = self.case_of.get(sid)
        if self.patient and case is not None and len(self.members[case]) > 1:
            scores, probs = self._score_case(case, sid, bag_path, bags or {}, folds)
            rule += "; scored in its case's bag"
            out = SlideScores(bag, scores, probs, folds, rule, self.models[folds[0]].task,
                              case, list(self.members[case]))
        else:
            nets = [self.models[k] for k in folds]
            gb = self._graph_bag(bag, sid, nets)
            scores, probs = ensemble_scores(nets, gb, self.method)
            out = SlideScores(bag, scores, probs, folds, rule, nets[0].task, case,
                              [sid] if case is not None else [])
        if len(out.scores.scores) != bag.n_patches:
            raise SrmilError(f"the model gave {len(out.scores.scores)} scores for "
                             f"{bag.n_patches} patches", bag_path)
        return out

    def _graph_bag(self, bag: FeatureBag, sid: str, nets: list[Any]) -> Any:
        from srmil.training.data import model_bag

        return model_bag(bag, self.graph, nets[0].in_dim, nets[0].uses_graph, slide_id=sid)

    def _score_case(self, case: str, sid: str, bag_path: Path, bags: Mapping[str, Path],
                    folds: list[int]) -> tuple[PatchScores, np.ndarray]:
        """Score the case's bag once (cached) and return ``sid``'s share of the scores."""
        from srmil.graphs.union import union_bags

        if case not in self._case_scores:
            nets = [self.models[k] for k in folds]
            paths = {**bags, sid: bag_path}
            lost = [m for m in self.members[case] if m not in paths]
            if lost:
                raise SrmilError(f"slide {sid}: its case {case} also has slide(s) "
                                 f"{', '.join(lost)}, which have no bag here; a patient-level "
                                 "run scores a case's slides together", bag_path)
            parts = []
            for m in self.members[case]:
                b = read_bag(paths[m])
                if b.coords is None:
                    raise BagError("no coordinates: a heatmap needs the patch positions",
                                   paths[m])
                parts.append(self._graph_bag(b, m, nets))
            whole = union_bags(parts, case)
            ps, probs = ensemble_scores(nets, whole, self.method)
            split, start = {}, 0
            for m, n in whole.slides:
                split[m] = PatchScores(ps.scores[start:start + n], ps.kind, ps.target)
                start += n
            self._case_scores[case] = (split, probs)  # (N,) floats per slide
        split, probs = self._case_scores[case]
        return split[sid], probs
