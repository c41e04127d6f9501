"""Patient bags: the slides of one case as one bag, their graphs side by side.

The union is disjoint: slide ``k``'s patches are rows ``offset_k … offset_k + N_k − 1`` and its
edges are its own grid graph shifted by ``offset_k``, so no edge joins two slides and each slide
keeps the grid step it was built with (a 20× and a 40× scan of one case are both right).
"""

from __future__ import annotations

import torch

from srmil.graphs.graph_bag import GraphBag
from srmil.graphs.neighbours import build_neighbour_table


def union_bags(bags: list[GraphBag], bag_id: str, y: int | None = None) -> GraphBag:
    """The disjoint union of slide bags.

    Args:
        bags: the case's slides (at least one), each with its own graph (or none at all).
        bag_id: the patient bag's id (the case id).
        y: the case's class index.

    Returns:
        x (ΣN, D); edge_index (2, ΣE) block-diagonal; coords (ΣN, 2) as read, each slide in
        its own frame (``None`` unless every slide has them); ``slides`` = (slide id, N) per
        slide in row order.
    """
    if not bags:
        raise ValueError("union of no bags")
    offsets, n = [], 0
    for b in bags:
        offsets.append(n)
        n += b.num_nodes
    x = torch.cat([b.x for b in bags])  # (ΣN, D)
    ei = torch.cat([b.edge_index + off for b, off in zip(bags, offsets, strict=True)], dim=1)
    coords = (torch.cat([b.coords for b in bags])
              if all(b.coords is not None for b in bags) else None)  # (ΣN, 2)
    with_graph = any(b.neighbours is not None for b in bags)
    table = build_neighbour_table(ei, n) if with_graph else None
    return GraphBag(x=x, edge_index=ei, slide_id=bag_id, y=y, coords=coords, neighbours=table,
                    slides=tuple((b.slide_id, b.num_nodes) for b in bags))
