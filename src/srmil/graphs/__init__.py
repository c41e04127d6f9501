"""Spatial graphs over the patches of a slide."""

from srmil.graphs.grid import (
    SpatialGraph,
    StepEstimate,
    build_edge_index,
    build_graph,
    infer_step,
    resolve_step,
)

__all__ = [
    "SpatialGraph", "StepEstimate", "build_edge_index", "build_graph", "infer_step",
    "resolve_step",
]
