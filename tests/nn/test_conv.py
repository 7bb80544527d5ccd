import math

import pytest
import torch
from torch_geometric.nn import LGConv

from sea_pyg.nn.conv import LightGCNPropagation, SymLGConv, bipartite_norm_adj, symmetric_spmm


def test_norm_adj_hand_computed_binarised():
    # users 0,1 ; items 0,1 (nodes 2,3). Edges u0-i0 (twice), u0-i1, u1-i1. Item 2 isolated.
    ei = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 1]])
    adj = bipartite_norm_adj(ei, 2, 3, eps=0.0).to_dense()
    # binarised degrees: u0 = 2, u1 = 1, i0 = 1, i1 = 2, i2 = 0
    expected = torch.zeros(5, 5)
    expected[0, 2] = expected[2, 0] = 1 / math.sqrt(2 * 1)
    expected[0, 3] = expected[3, 0] = 1 / math.sqrt(2 * 2)
    expected[1, 3] = expected[3, 1] = 1 / math.sqrt(1 * 2)
    assert torch.allclose(adj, expected, atol=1e-7)
    assert adj[4].abs().sum() == 0  # isolated item row is zero, not NaN


def test_norm_adj_duplicates_counted_when_not_binarised():
    ei = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 1]])
    adj = bipartite_norm_adj(ei, 2, 2, binarize=False, eps=0.0).to_dense()
    # degrees with the duplicate: u0 = 3, i0 = 2 ; entry weight 2
    assert adj[0, 2].item() == pytest.approx(2 / math.sqrt(3 * 2), abs=1e-7)
    assert torch.allclose(adj, adj.t())


def test_norm_adj_eps_matches_mmrec():
    ei = torch.tensor([[0], [0]])
    adj = bipartite_norm_adj(ei, 1, 1, eps=1e-7, dtype=torch.float64).to_dense()
    assert adj[0, 1].item() == pytest.approx(1 / (1 + 1e-7), abs=1e-15)


def test_norm_adj_errors():
    with pytest.raises(ValueError, match="user ids"):
        bipartite_norm_adj(torch.tensor([[3], [0]]), 2, 2)
    with pytest.raises(ValueError, match=r"shape \(2, E\)"):
        bipartite_norm_adj(torch.tensor([0, 1]), 2, 2)


def test_sym_lgconv_equals_pyg_lgconv_values_and_gradients():
    gen = torch.Generator().manual_seed(0)
    U, N, E = 20, 15, 60
    ei = torch.stack(
        [torch.randint(0, U, (E,), generator=gen), torch.randint(0, N, (E,), generator=gen)]
    )
    full = torch.cat([torch.stack([ei[0], ei[1] + U]), torch.stack([ei[1] + U, ei[0]])], 1)
    adj = bipartite_norm_adj(ei, U, N, binarize=False, eps=0.0, dtype=torch.float64)
    x = torch.randn(U + N, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    ref = LGConv()(LGConv()(x, full), full)
    ours = SymLGConv()(SymLGConv()(x, adj), adj)
    assert torch.allclose(ref, ours, atol=1e-12)
    w = torch.randn_like(ref)
    g_ref = torch.autograd.grad((ref * w).sum(), x)[0]
    x2 = x.detach().clone().requires_grad_()
    g_ours = torch.autograd.grad((SymLGConv()(SymLGConv()(x2, adj), adj) * w).sum(), x2)[0]
    assert torch.allclose(g_ref, g_ours, atol=1e-12)


def test_symmetric_spmm_gradcheck():
    ei = torch.tensor([[0, 1, 1, 2], [0, 0, 1, 1]])
    adj = bipartite_norm_adj(ei, 3, 2, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: symmetric_spmm(adj, t), (x,))


@pytest.mark.parametrize("aggregation", ["mean", "sum", "last"])
def test_propagation_aggregations(aggregation):
    ei = torch.tensor([[0, 1, 1, 2], [0, 0, 1, 1]])
    adj = bipartite_norm_adj(ei, 3, 2, dtype=torch.float64)
    dense = adj.to_dense()
    x = torch.randn(5, 4, dtype=torch.float64)
    layers = [x, dense @ x, dense @ dense @ x]
    expected = {
        "mean": sum(layers) / 3,
        "sum": sum(layers),
        "last": layers[-1],
    }[aggregation]
    out = LightGCNPropagation(2, aggregation)(x, adj)
    assert torch.allclose(out, expected, atol=1e-12)


def test_propagation_errors():
    with pytest.raises(ValueError, match="aggregation"):
        LightGCNPropagation(2, "max")
    with pytest.raises(ValueError, match="num_layers"):
        LightGCNPropagation(-1)
