"""``GraphBag``: what a model sees, tensors only (features, patch graph, label)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from srmil.bags.bag import FeatureBag
from srmil.config import GraphConfig
from srmil.graphs.grid import build_graph
from srmil.graphs.neighbours import NeighbourTable, build_neighbour_table


@dataclass
class GraphBag:
    """One slide as tensors.

    Attributes:
        x: (N, D) float32 patch features.
        edge_index: (2, E) int64 patch graph, PyG ``[source; target]``, both directions and a
            self loop per patch (METHOD.md); empty (2, 0) for models that ignore space and bags
            without coordinates.
        slide_id: the slide.
        y: class index, survival ``(time, event)`` or regression value (the task's target),
            or ``None`` when unlabelled (prediction).
        coords: (N, 2) coordinates as read (for heatmaps), or ``None``.
        neighbours: the patch graph as a padded neighbour table (the fast SRMIL path), built
            with the bag and cached with it; :meth:`neighbour_table` builds it when absent.
        slides: for a patient bag (:func:`srmil.graphs.union.union_bags`), each slide's id
            and patch count in row order; ``None`` for a one-slide bag.
    """

    x: Tensor
    edge_index: Tensor
    slide_id: str
    y: int | tuple[float, ...] | float | None = None
    coords: Tensor | None = None
    neighbours: NeighbourTable | None = None
    slides: tuple[tuple[str, int], ...] | None = None

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    def neighbour_table(self) -> NeighbourTable:
        """The padded neighbour table of ``edge_index`` (built once, then kept)."""
        if self.neighbours is None:
            table = build_neighbour_table(self.edge_index, self.num_nodes)
            self.neighbours = table.to(self.edge_index.device)
        return self.neighbours

    def to(self, device: torch.device | str) -> GraphBag:
        return replace(
            self,
            x=self.x.to(device, non_blocking=True),
            edge_index=self.edge_index.to(device, non_blocking=True),
            coords=None if self.coords is None else self.coords.to(device),
            neighbours=None if self.neighbours is None else self.neighbours.to(device),
        )


def to_graph_bag(
    bag: FeatureBag, cfg: GraphConfig = GraphConfig(), y: int | None = None,
    with_graph: bool = True,
) -> GraphBag:
    """Convert a :class:`FeatureBag` (features as on disk) to a :class:`GraphBag`.

    Args:
        bag: the bag.
        cfg: graph settings (window, step).
        y: class index.
        with_graph: build the spatial graph (needs coordinates) and its neighbour table; else
            ``edge_index`` is empty.
    """
    x = torch.from_numpy(np.ascontiguousarray(bag.features, dtype=np.float32))
    table = None
    if with_graph:
        ei_np = build_graph(bag, cfg).edge_index
        ei = torch.from_numpy(ei_np)
        table = build_neighbour_table(ei_np, bag.n_patches)
    else:
        ei = torch.zeros((2, 0), dtype=torch.long)
    coords = None if bag.coords is None else torch.from_numpy(np.asarray(bag.coords))
    return GraphBag(x=x, edge_index=ei, slide_id=bag.slide_id, y=y, coords=coords,
                    neighbours=table)
