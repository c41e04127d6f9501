r"""Padded neighbour tables: a graph as fixed-width rows of neighbour indices (ELL layout).

A grid graph with window 2 gives every patch at most 25 in-neighbours (its 5×5 block, itself
included), so the graph fits in an (N, K) table: row i lists the sources j of the edges j → i,
padded to K. Attention over the table is dense tensor work (K gathers of node rows, a softmax
over K slots) with no per-edge feature tensor, which is what makes the fast SRMIL path lean
(:mod:`srmil.models.neighbour_gat`). The table is built from any ``edge_index``, grids with
holes, off-grid points and duplicate cells included; nothing assumes symmetry.

The transposed table is kept too: for every source j, the destinations i it sends to and the
flat slot ``i·K + k`` its message occupies. The backward pass of an aggregation
:math:`o_i = \sum_k \alpha_{ik} h_{n(i,k)}` is then the same dense gather,
:math:`\partial h_j = \sum_{k'} \alpha_{\mathrm{slot}(j,k')}\, \partial o_{t(j,k')}`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class NeighbourTable:
    """In- and out-neighbour tables of one graph over N nodes.

    Attributes:
        index: (N, K) int64 source of each in-slot of node i; padding slots hold 0.
        valid: (N, K) bool, False on padding slots.
        out_index: (N, K') int64 destination of each out-slot of node j; padding holds 0.
        out_slot: (N, K') int64 flat in-slot ``i·K + k`` of that edge; padding holds ``N·K``
            (one past the end: a zero is appended to flattened slot values there).
        isolated: some node has no in-edge (its padding-only row must aggregate nothing).
    """

    index: Tensor
    valid: Tensor
    out_index: Tensor
    out_slot: Tensor
    isolated: bool = False

    @property
    def num_nodes(self) -> int:
        return int(self.index.shape[0])

    @property
    def width(self) -> int:
        return int(self.index.shape[1])

    def to(self, device: torch.device | str) -> NeighbourTable:
        return NeighbourTable(*(t.to(device, non_blocking=True) for t in (
            self.index, self.valid, self.out_index, self.out_slot)), self.isolated)


def _rows(keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Stable grouping of ``keys`` (E,) into rows: (order (E,), column (E,), width)."""
    order = np.argsort(keys, kind="stable")
    counts = np.bincount(keys, minlength=n)
    width = int(counts.max()) if len(keys) else 0
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    col = np.arange(len(keys)) - np.repeat(starts, counts)  # position within its row
    return order, col, width


def build_neighbour_table(edge_index: np.ndarray | Tensor, n: int) -> NeighbourTable:
    """The padded in/out tables of a directed graph.

    Args:
        edge_index: (2, E) ``[source; target]``, self loops as the graph has them.
        n: number of nodes N (every index < N).

    Returns:
        The :class:`NeighbourTable`; in-slots of a node keep the order of its edges in
        ``edge_index``.
    """
    ei = edge_index.cpu().numpy() if isinstance(edge_index, Tensor) else np.asarray(edge_index)
    src, dst = ei[0].astype(np.int64), ei[1].astype(np.int64)
    order, col, k = _rows(dst, n)
    index = np.zeros((n, max(k, 1)), dtype=np.int64)
    valid = np.zeros((n, max(k, 1)), dtype=bool)
    d, s = dst[order], src[order]
    index[d, col] = s
    valid[d, col] = True
    slot = d * index.shape[1] + col  # (E,) flat in-slot of each edge, in the sorted order
    o_order, o_col, k_out = _rows(s, n)
    out_index = np.zeros((n, max(k_out, 1)), dtype=np.int64)
    out_slot = np.full((n, max(k_out, 1)), n * index.shape[1], dtype=np.int64)
    out_index[s[o_order], o_col] = d[o_order]
    out_slot[s[o_order], o_col] = slot[o_order]
    isolated = bool(n) and not bool(valid.any(1).all())
    return NeighbourTable(*(torch.from_numpy(a) for a in (index, valid, out_index, out_slot)),
                          isolated)
