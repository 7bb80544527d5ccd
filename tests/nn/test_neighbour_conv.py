import pytest
import torch

from sea_pyg.nn import NeighbourConv, bipartite_adjacency

pytestmark = pytest.mark.usefixtures("one_thread")


def _both_ways(edges, num_users):
    users, items = edges[0], edges[1] + num_users
    return torch.stack([torch.cat([users, items]), torch.cat([items, users])])


def test_adjacency_is_binary_symmetric_and_hand_computed():
    # users 0, 1; items 0, 1, 2 (nodes 2, 3, 4); u0-i0 twice, u0-i1, u1-i1; item 2 isolated
    edges = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 1]])
    adj = bipartite_adjacency(edges, 2, 3)
    assert adj.layout == torch.sparse_csr and adj.shape == (5, 5)
    expected = torch.zeros(5, 5)
    for u, node in [(0, 2), (0, 3), (1, 3)]:
        expected[u, node] = expected[node, u] = 1.0
    assert torch.equal(adj.to_dense(), expected)
    assert adj.crow_indices().diff().tolist() == [2, 1, 1, 2, 0]  # degrees


def test_mean_and_sum_hand_computed():
    # 2 users, 2 items: u0-i0, u0-i1, u1-i1. W doubles the first coordinate.
    edges = torch.tensor([[0, 0, 1], [0, 1, 1]])
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 4.0], [6.0, -2.0]])  # u0, u1, i0, i1
    conv = NeighbourConv(2, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    xw = x * torch.tensor([2.0, 1.0])
    mean = torch.stack(
        [(xw[2] + xw[3]) / 2, xw[3], xw[0], (xw[0] + xw[1]) / 2]
    )  # u0: i0, i1 ; u1: i1 ; i0: u0 ; i1: u0, u1
    assert torch.allclose(mean, torch.tensor([[8.0, 1.0], [12.0, -2.0], [2.0, 0.0], [1.0, 0.5]]))
    adj = bipartite_adjacency(edges, 2, 2)
    assert torch.allclose(conv(x, adj), mean)
    add = NeighbourConv(2, 2, aggr="add")
    with torch.no_grad():
        add.weight.copy_(conv.weight)
    assert torch.allclose(add(x, adj), torch.tensor([[16, 2], [12, -2], [2, 0], [2, 1.0]]))


@pytest.mark.parametrize("aggr", ["mean", "add"])
def test_sparse_path_equals_pyg_edge_index_path_and_dense(aggr):
    gen = torch.Generator().manual_seed(0)
    U, N, E = 8, 6, 20
    edges = torch.stack(
        [torch.randint(0, U, (E,), generator=gen), torch.randint(0, N, (E,), generator=gen)]
    )
    edges = torch.unique(edges, dim=1)  # the edge_index path counts duplicates
    conv = NeighbourConv(5, 3, aggr=aggr).double()
    adj = bipartite_adjacency(edges, U, N, dtype=torch.float64)
    x = torch.randn(U + N, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(U + N, 3, dtype=torch.float64, generator=gen)
    sparse = conv(x, adj)
    pyg = conv(x, _both_ways(edges, U))
    a = adj.to_dense()
    deg = a.sum(1, keepdim=True).clamp_min(1)
    dense = (a / deg if aggr == "mean" else a) @ (x @ conv.weight)
    assert torch.allclose(sparse, dense, atol=1e-12) and torch.allclose(pyg, dense, atol=1e-12)
    grads = [torch.autograd.grad((y * w).sum(), (x, conv.weight)) for y in (sparse, pyg, dense)]
    for g in grads[:2]:
        for got, ref in zip(g, grads[2], strict=True):
            assert torch.allclose(got, ref, atol=1e-10)


def test_isolated_nodes_get_zeros_and_init_is_xavier_normal():
    adj = bipartite_adjacency(torch.tensor([[0], [0]]), 2, 2)
    out = NeighbourConv(3, 4)(torch.randn(4, 3), adj)
    assert torch.isfinite(out).all() and out[1].abs().sum() == 0 and out[3].abs().sum() == 0
    torch.manual_seed(0)
    w = NeighbourConv(300, 200).weight
    assert w.std().item() == pytest.approx((2 / 500) ** 0.5, rel=0.03)
    assert abs(w.mean().item()) < 0.01


def test_bad_arguments():
    with pytest.raises(ValueError, match="aggr"):
        NeighbourConv(2, 2, aggr="max")
    with pytest.raises(ValueError, match="in_channels"):
        NeighbourConv(0, 2)
    with pytest.raises(ValueError, match="item ids"):
        bipartite_adjacency(torch.tensor([[0], [5]]), 2, 2)
