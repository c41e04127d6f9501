"""Spatially contiguous crops of a patch graph: train on a piece of a huge slide per step.

A crop is the first K patches of a breadth-first walk over the patch graph from a random
patch, with the graph induced on them (edges between kept patches only, self loops kept). On a
grid graph the walk grows a compact block of tissue around the seed, so the crop is itself a
grid graph of the slide's step: the model sees the same neighbourhoods it sees at inference,
only fewer of them. A seed on a tissue fragment smaller than K gives the whole fragment.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import breadth_first_order
from torch import Tensor
from torch_geometric.utils import subgraph

from srmil.graphs.graph_bag import GraphBag
from srmil.graphs.neighbours import build_neighbour_table


def crop_nodes(edge_index: np.ndarray, n: int, k: int, seed: int) -> np.ndarray:
    """The first ``k`` nodes of a breadth-first walk from ``seed``, in walk order.

    Args:
        edge_index: (2, E) int64 graph on ``n`` nodes (directions are ignored).
        n: number of nodes.
        k: at most this many nodes.
        seed: the start node.

    Returns:
        (min(k, |component of seed|),) int64 node indices, ``seed`` first.
    """
    src, dst = edge_index
    adj = sp.csr_matrix((np.ones(src.size, dtype=np.int8), (src, dst)), shape=(n, n))
    order = breadth_first_order(adj, seed, directed=False, return_predecessors=False)
    return np.asarray(order[:k], dtype=np.int64)


def contiguous_crop(bag: GraphBag, k: int, generator: torch.Generator | None = None
                    ) -> GraphBag:
    """A contiguous crop of at most ``k`` patches of ``bag`` (the bag itself when N ≤ k).

    The seed patch is drawn with ``torch.randint`` (from ``generator``, else torch's global
    generator, whose state a resumed run restores, so crops repeat exactly).

    Args:
        bag: ``x`` (N, D), ``edge_index`` (2, E); ``coords`` (N, 2) optional.
        k: most patches to keep (≥ 1).
        generator: random source of the seed patch.

    Returns:
        A bag of M ≤ k patches, in ascending order of their index in ``bag``, with its
        induced ``edge_index`` and neighbour table.
    """
    n = bag.num_nodes
    if n <= k:
        return bag
    seed = int(torch.randint(n, (1,), generator=generator))
    keep = np.sort(crop_nodes(bag.edge_index.cpu().numpy(), n, k, seed))  # (M,)
    device = bag.x.device
    subset: Tensor = torch.from_numpy(keep).to(device)
    ei, _ = subgraph(subset, bag.edge_index, relabel_nodes=True, num_nodes=n)  # (2, E')
    table = build_neighbour_table(ei.cpu().numpy(), int(keep.size)).to(device)
    return replace(bag, x=bag.x[subset], edge_index=ei,
                   coords=None if bag.coords is None else bag.coords[subset], neighbours=table)
