"""Bags for training and inference: read once, checked, turned into ``GraphBag`` tensors.

Small cohorts are kept in memory (``TrainConfig.cache_gb``); larger ones are read from disk
on each access, in the training loop's own process (one bag per step; no DataLoader).
"""

from __future__ import annotations

from pathlib import Path

import torch

from srmil.bags.bag import FeatureBag
from srmil.bags.readers import has_coords, read_bag
from srmil.config import GraphConfig
from srmil.errors import BagError
from srmil.graphs.graph_bag import GraphBag, to_graph_bag
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
        targets: class index per slide, or ``None`` for unlabelled prediction.
        graph: graph settings; ``with_graph=False`` skips the graph (models that ignore space).
        expect_dim: feature dimension the model was built for; another one is an error.
        cache: keep every converted bag in memory.
        store: a cache to share with other datasets over the same bags (keyed by slide_id).
    """

    def __init__(
        self, paths: list[str | Path], slide_ids: list[str] | None = None,
        targets: list[int] | None = None, graph: GraphConfig = GraphConfig(),
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

    def load(self, i: int) -> GraphBag:
        y = None if self.targets is None else int(self.targets[i])
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


def first_dim(paths: list[str | Path]) -> int:
    """Feature dimension of the first bag (all bags are checked against it when loaded)."""
    if not paths:
        raise BagError("no bags to read")
    return read_bag(paths[0]).dim




