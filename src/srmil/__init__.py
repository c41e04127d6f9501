"""srmil: spatially regularised multiple-instance learning for whole-slide images."""

__version__ = "0.1.0"

from srmil.bags.bag import FeatureBag  # noqa: E402
from srmil.bags.cohort import Cohort, load_cohort, read_labels  # noqa: E402
from srmil.bags.readers import BAG_READERS, find_bags, read_bag  # noqa: E402
from srmil.bags.splits import make_splits, read_splits  # noqa: E402
from srmil.config import GraphConfig, SplitConfig, SynthConfig  # noqa: E402
from srmil.errors import Problem, SrmilError  # noqa: E402
from srmil.graphs.grid import SpatialGraph, build_edge_index, build_graph  # noqa: E402

__all__ = [
    "BAG_READERS", "Cohort", "FeatureBag", "GraphConfig", "Problem", "SpatialGraph",
    "SplitConfig", "SrmilError", "SynthConfig", "build_edge_index", "build_graph", "find_bags",
    "load_cohort", "make_splits", "read_bag", "read_labels", "read_splits",
]
