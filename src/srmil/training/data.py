"""Bags for training and inference: read once, checked, turned into ``GraphBag`` tensors;
slides as bags (:class:`BagDataset`) or cases as bags (:class:`PatientDataset`,
``data.bag_level patient``).

Small cohorts are kept in memory (``TrainConfig.cache_gb``); larger ones are read from disk
on each access, by a DataLoader worker process ahead of the step (:func:`prefetched`), so
reading and graph building overlap training.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from srmil.bags.bag import FeatureBag
from srmil.bags.readers import has_coords, read_bag
from srmil.config import GraphConfig
from srmil.errors import BagError, CohortError, SrmilError
from srmil.graphs.graph_bag import GraphBag, to_graph_bag
from srmil.graphs.union import union_bags
from srmil.storage import open_h5


def bag_headers(paths: list[str | Path]) -> tuple[int, int | None]:
    """float32 bytes the bags take in memory and their feature dimension, from the h5 shapes
    (no data read); the dimension is ``None`` when no bag is h5.

    Also the cheap up-front check of every h5 bag before training starts: a truncated or
    corrupt file, one without features, or one whose feature dimension differs from the first
    is one line here rather than an error epochs later. ``.pt`` bags are checked when read.

    Raises:
        BagError: the first bad h5 bag.
    """
    total, dim = 0, None
    for p in paths:
        if Path(p).suffix.lower() not in (".h5", ".hdf5"):
            continue
        try:
            with open_h5(p) as h5:
                key = "features" if "features" in h5 else "feats"
                n, d = h5[key].shape
        except OSError as exc:
            raise BagError(f"cannot open as HDF5 (truncated or corrupt): {exc}", p) from None
        except (KeyError, ValueError):
            raise BagError("no 2-D 'features' (or STAMP 'feats') dataset", p) from None
        if dim is not None and d != dim:
            raise BagError(f"feature dimension {d}, but the first bag has {dim}", p)
        dim = d
        total += 4 * n * d
    return total, dim


def model_bag(bag: FeatureBag, graph: GraphConfig, expect_dim: int | None, with_graph: bool,
              y: int | None = None, slide_id: str | None = None) -> GraphBag:
    """A read bag checked for a model and turned into its tensors.

    Raises:
        BagError: the bag's own errors (``FeatureBag.problems``), or a feature dimension other
            than ``expect_dim``.
    """
    errors = [p for p in bag.problems() if p.is_error]
    if errors:
        raise BagError(errors[0].message, bag.source)
    if expect_dim is not None and bag.dim != expect_dim:
        raise BagError(f"feature dimension {bag.dim} differs from the model's {expect_dim}",
                       bag.source)
    gb = to_graph_bag(bag, graph, y, with_graph=with_graph)
    gb.slide_id = slide_id or bag.slide_id
    return gb


def require_coords(paths: list[str | Path], models: list[str]) -> None:
    """Refuse, before training, bags a graph model cannot use: bags without coordinates.

    Raises:
        BagError: the first bag without coordinates (e.g. CLAM ``pt_files`` without h5).
    """
    lacking = [p for p in paths if not has_coords(p)]
    if lacking:
        raise BagError(f"{len(lacking)} bag(s) have no coordinates (e.g. CLAM pt_files without "
                       f"h5), so graph model(s) {', '.join(models)} cannot use them", lacking[0])


class BagDataset(torch.utils.data.Dataset):
    """Slides as :class:`GraphBag` (labels optional), read lazily or cached.

    Args:
        paths: bag files.
        slide_ids: the slides' ids (default: the file stems).
        targets: per slide, the class index, survival ``(time, event)`` or regression value
            (:mod:`srmil.tasks`), or ``None`` for unlabelled prediction.
        graph: graph settings; ``with_graph=False`` skips the graph (models that ignore space).
        expect_dim: feature dimension the model was built for; another one is an error.
        cache: keep every converted bag in memory.
        store: a cache to share with other datasets over the same bags (keyed by slide_id).
    """

    def __init__(
        self, paths: list[str | Path], slide_ids: list[str] | None = None,
        targets: list[Any] | None = None, graph: GraphConfig = GraphConfig(),
        with_graph: bool = True, expect_dim: int | None = None, cache: bool = True,
        store: dict[str, GraphBag] | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.slide_ids = slide_ids or [p.stem for p in self.paths]
        self.targets = targets
        self.graph = graph
        self.with_graph = with_graph
        self.expect_dim = expect_dim
        self.cache = cache
        self._store: dict[str, GraphBag] = {} if store is None else store

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the cache (to DDP or loader processes): each process reads its
        own."""
        return {**self.__dict__, "_store": {}}

    def load(self, i: int) -> GraphBag:
        y = None if self.targets is None else target_value(self.targets[i])
        return model_bag(read_bag(self.paths[i]), self.graph, self.expect_dim, self.with_graph,
                         y, self.slide_ids[i])

    def __getitem__(self, i: int) -> GraphBag:
        sid = self.slide_ids[i]
        if sid in self._store:
            return self._store[sid]
        with torch.inference_mode(False):  # cached bags may be trained on after an eval pass
            gb = self.load(i)
        if self.cache:
            self._store[sid] = gb
        return gb

    def subset(self, slide_ids: list[str]) -> BagDataset:
        """The given slides, sharing this dataset's settings and cache (each bag read once)."""
        where = {s: i for i, s in enumerate(self.slide_ids)}
        idx = [where[s] for s in slide_ids]
        return BagDataset(
            [self.paths[i] for i in idx], list(slide_ids),
            None if self.targets is None else [self.targets[i] for i in idx],
            self.graph, self.with_graph, self.expect_dim, self.cache, self._store,
        )


def target_value(t: Any) -> Any:
    """A bag's target as plain Python: a class index (int), a survival ``(time, event)`` pair
    (floats) or a regression value (float)."""
    if isinstance(t, (tuple, list, np.ndarray)):
        return tuple(float(v) for v in t)
    if isinstance(t, (float, np.floating)):
        return float(t)
    return int(t)


def first_dim(paths: list[str | Path]) -> int:
    """Feature dimension of the first bag (all bags are checked against it when loaded)."""
    if not paths:
        raise BagError("no bags to read")
    return read_bag(paths[0]).dim


@dataclass
class _Failed:
    """A bag a worker could not read: the error travels as a value, so the loop raises it as
    the same one-line error (DataLoader would wrap it in the worker's traceback)."""

    error: SrmilError


class _Reader(torch.utils.data.Dataset):
    def __init__(self, data: BagDataset | PatientDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> GraphBag | _Failed:
        try:
            return self.data.load(i)
        except SrmilError as exc:
            return _Failed(exc)


def _as_is(item: GraphBag | _Failed) -> GraphBag | _Failed:  # no batching: one bag a step
    return item


def prefetched(data: BagDataset | PatientDataset, order: Sequence[int], workers: int = 1,
               ahead: int = 2) -> Iterator[GraphBag]:
    """``data[i]`` for ``i`` in ``order``, read by ``workers`` DataLoader processes up to
    ``ahead`` bags each before they are needed; in this process when ``workers`` is 0 or the
    bags are cached (the first epoch fills the cache, later ones read memory).

    Raises:
        SrmilError: a bag's own one-line error, as :meth:`BagDataset.__getitem__` raises it.
    """
    if workers <= 0 or data.cache or len(order) == 0:
        for i in order:
            yield data[int(i)]
        return
    loader = torch.utils.data.DataLoader(
        _Reader(data), batch_size=None, sampler=[int(i) for i in order], num_workers=workers,
        prefetch_factor=ahead, collate_fn=_as_is,
        generator=torch.Generator().manual_seed(0))  # its worker seed: not from the global RNG
    for item in loader:
        if isinstance(item, _Failed):
            raise item.error
        yield item



def require_one_label_per_case(slides: pd.DataFrame, labels_path: str | Path | None = None
                               ) -> None:
    """Refuse patient bags whose slides carry different labels (``srmil check`` warns).

    Raises:
        CohortError: the first such case, with its labels.
    """
    column = "label" if "label" in slides else "target"  # survival / regression: the target
    mixed = slides.groupby("case_id")[column].unique()
    mixed = mixed[mixed.map(len) > 1]
    if len(mixed):
        case = mixed.index[0]
        raise CohortError(f"case {case!r} has slides with different labels "
                          f"({', '.join(sorted(map(str, mixed.iloc[0])))}); data.bag_level "
                          f"patient needs one label per case ({len(mixed)} such case(s))",
                          labels_path)


class PatientDataset(torch.utils.data.Dataset):
    """Cases as bags: each case's slides united side by side (:func:`union_bags`).

    Same interface as :class:`BagDataset` for the training loop: ``slide_ids`` holds the bag
    ids, here the case ids (``id_column`` names them in prediction tables), and ``members``
    each case's slides.

    Args:
        slides: the slide dataset (its cache is shared: each slide is read once).
        cases: case id → its slide ids, in the order their patches are stacked.
    """

    id_column = "case_id"

    def __init__(self, slides: BagDataset, cases: dict[str, list[str]]) -> None:
        self.members = {c: list(s) for c, s in cases.items()}
        self.slides = slides.subset([s for ids in self.members.values() for s in ids])
        self.slide_ids = list(self.members)
        where = {s: i for i, s in enumerate(self.slides.slide_ids)}
        self._rows = {c: [where[s] for s in ids] for c, ids in self.members.items()}
        self.targets = (None if slides.targets is None else
                        [self.slides.targets[self._rows[c][0]] for c in self.slide_ids])
        self._store: dict[str, GraphBag] = {}

    def __len__(self) -> int:
        return len(self.slide_ids)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": {}}

    @property
    def cache(self) -> bool:
        """Whether the cases' slides are kept in memory (else :func:`prefetched` reads ahead)."""
        return self.slides.cache

    def load(self, i: int) -> GraphBag:
        """Case ``i``'s slides read and united (no cache)."""
        case = self.slide_ids[i]
        y = None if self.targets is None else target_value(self.targets[i])
        return union_bags([self.slides[r] for r in self._rows[case]], case, y)

    def __getitem__(self, i: int) -> GraphBag:
        case = self.slide_ids[i]
        if case in self._store:
            return self._store[case]
        gb = self.load(i)
        if self.slides.cache:
            self._store[case] = gb
        return gb


def patient_dataset(slides: BagDataset, table: pd.DataFrame) -> PatientDataset:
    """The cases of ``table`` (rows ``slide_id, case_id``) as patient bags, cases in order of
    first appearance, each case's slides sorted by id."""
    cases: dict[str, list[str]] = {}
    for sid, case in zip(table["slide_id"], table["case_id"], strict=True):
        cases.setdefault(str(case), []).append(str(sid))
    return PatientDataset(slides, {c: sorted(s) for c, s in cases.items()})
