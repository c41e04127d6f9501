"""``srmil:residual=identity`` (issue 15): a patch keeps its own features; the faithful
default stays the reference's."""

import torch

from srmil.config import SRMILConfig
from srmil.graphs.graph_bag import GraphBag
from srmil.graphs.grid import build_edge_index
from srmil.models.base import create_model
from srmil.models.layers import GATLayer


def _bag(n: int = 30, d: int = 8) -> GraphBag:
    g = torch.Generator().manual_seed(3)
    side = 6
    cells = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"),
                        -1).reshape(-1, 2)[:n].numpy()
    ei, _ = build_edge_index(cells * 224, 224.0)
    return GraphBag(torch.randn(n, d, generator=g), torch.from_numpy(ei), "s", 1)


def test_identity_residual_adds_exactly_the_input():
    torch.manual_seed(0)
    faithful = GATLayer(12, 3, 4, residual="faithful", norm=False, activation=False).eval()
    ident = GATLayer(12, 3, 4, residual="identity", norm=False, activation=False).eval()
    ident.load_state_dict(faithful.state_dict())  # no extra parameter: same weights
    x = torch.randn(5, 12)
    ei = torch.tensor([[0, 1, 2, 3, 4, 0, 1], [0, 1, 2, 3, 4, 1, 2]])
    torch.testing.assert_close(ident(x, ei) - faithful(x, ei), x)


def test_identity_option_changes_srmil_and_the_default_stays_faithful():
    assert SRMILConfig().residual == "faithful"  # the reference default
    torch.manual_seed(0)
    option = create_model("srmil", 8, 2, {"residual": "identity"}).eval()
    torch.manual_seed(0)
    faithful = create_model("srmil", 8, 2).eval()
    assert option.state_dict().keys() == faithful.state_dict().keys()  # no new parameter
    for k, v in option.state_dict().items():
        assert torch.equal(v, faithful.state_dict()[k]), k
    with torch.no_grad():
        assert not torch.allclose(option(_bag()), faithful(_bag()))  # only the maths differs
