"""Sampled LightGCN propagation (d/k rescaling) and exact layer-wise inference."""

import itertools
import math

import pytest
import torch

from sea_pyg.data.neighbor import neighbor_loader, sampling_graph
from sea_pyg.nn import LightGCNPropagation, bipartite_norm_adj
from sea_pyg.nn.sampled import layerwise_propagation, sampled_edge_weight, sampled_propagation

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hand_computed_sampled_layer():
    # Local nodes: 0 = u0 (global degree 3: items a, b, c), 1 = a (degree 2), 2 = c (degree 1).
    # u0 kept k = 2 of its 3 neighbours (a, c); weights are the full graph's 1/sqrt(d_v d_w).
    edge_index = torch.tensor([[1, 2], [0, 0]])
    a_hat = torch.tensor([1 / math.sqrt(3 * 2), 1 / math.sqrt(3 * 1)])
    deg = torch.tensor([3, 2, 1])
    w = sampled_edge_weight(edge_index, a_hat, deg)
    assert torch.allclose(w, torch.tensor([1.5 / math.sqrt(6), 1.5 / math.sqrt(3)]))
    x = torch.tensor([[1.0], [2.0], [4.0]])
    # layer 1 of u0: (3/2) (2/sqrt 6 + 4/sqrt 3) = 4.6888...; mean over 2 layers with x_u0 = 1
    e1 = 1.5 * (2 / math.sqrt(6) + 4 / math.sqrt(3))
    out = sampled_propagation(x, edge_index, w, num_layers=1)
    assert out[0, 0].item() == pytest.approx((1 + e1) / 2, rel=1e-6)
    assert sampled_propagation(x, edge_index, w, 1, "sum")[0, 0].item() == pytest.approx(1 + e1)
    assert sampled_propagation(x, edge_index, w, 1, "last")[0, 0].item() == pytest.approx(e1)
    # edges in any order (a back edge a -> ... first): the same rows
    ei2 = torch.tensor([[0, 1, 2], [1, 0, 0]])
    w2 = torch.cat([torch.tensor([0.5]), w])
    got = sampled_propagation(x, ei2, w2, 1, "last")
    assert got[0, 0].item() == pytest.approx(e1) and got[1, 0].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="sorted by destination"):
        sampled_propagation(x, ei2, w2, 1, num_sampled_edges=[3])


def test_rescaled_layer_is_unbiased_over_all_subsets():
    # The mean over every 2-subset of u0's 3 neighbours (each equally likely under uniform
    # sampling without replacement) is exactly the full-graph layer.
    a_hat = {1: 1 / math.sqrt(6), 2: 1 / math.sqrt(3), 3: 1 / math.sqrt(9)}
    x = torch.tensor([[0.0, 1.0], [2.0, -1.0], [4.0, 0.5], [-3.0, 2.0]])
    deg = torch.tensor([3, 2, 1, 3])
    full = sum(a_hat[w] * x[w] for w in (1, 2, 3))
    est = []
    for pair in itertools.combinations((1, 2, 3), 2):
        ei = torch.tensor([list(pair), [0, 0]])
        w = sampled_edge_weight(ei, torch.tensor([a_hat[p] for p in pair]), deg)
        est.append(sampled_propagation(x, ei, w, 1, "last")[0])
    assert torch.allclose(torch.stack(est).mean(0), full, atol=1e-6)


def test_full_neighbourhood_needs_no_rescaling():
    ei = torch.tensor([[1, 2, 3], [0, 0, 0]])
    w = torch.tensor([0.1, 0.2, 0.3])
    assert torch.equal(sampled_edge_weight(ei, w, torch.tensor([3, 1, 1, 1])), w)


def _random_graph(seed, users=13, items=9, edges=40):
    g = torch.Generator().manual_seed(seed)
    ei = torch.stack([torch.randint(users, (edges,), generator=g),
                      torch.randint(items, (edges,), generator=g)])
    return bipartite_norm_adj(ei, users, items), users + items


@pytest.mark.parametrize("layers", [1, 3])  # 1: layer 0 not read from the result buffer
@pytest.mark.parametrize("aggregation", ["mean", "sum", "last"])
@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_layerwise_equals_full_propagation(aggregation, chunk, layers):
    adj, n = _random_graph(0)
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(1))
    full = LightGCNPropagation(layers, aggregation)(x, adj)
    loader = neighbor_loader(sampling_graph(adj), [-1], backend="torch", batch_size=chunk)
    x0 = x.clone()
    assert torch.allclose(layerwise_propagation(x, loader, layers, aggregation), full, atol=1e-6)
    # the same from the user and item tables
    tables = (x[:13].clone(), x[13:].clone())
    split = layerwise_propagation(tables, loader, layers, aggregation)
    assert torch.equal(split, layerwise_propagation(x, loader, layers, aggregation))
    assert torch.equal(x, x0) and torch.equal(torch.cat(tables), x0)  # inputs untouched


def test_layerwise_zero_layers_and_bad_tables():
    adj, n = _random_graph(0)
    x = torch.randn(n, 3)
    loader = neighbor_loader(sampling_graph(adj), [-1], backend="torch", batch_size=4)
    for aggregation in ("mean", "sum", "last"):
        assert torch.equal(layerwise_propagation((x[:5], x[5:]), loader, 0, aggregation), x)
    with pytest.raises(ValueError, match="sequence of"):
        layerwise_propagation((x[:5], x[5:, :2]), loader, 2)


def test_full_fanout_subgraph_equals_full_propagation_on_the_seeds():
    adj, n = _random_graph(2)
    graph = sampling_graph(adj)
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(3))
    full = LightGCNPropagation(2, "mean")(x, adj)
    seeds = torch.tensor([0, 5, 14, 20])
    sub = neighbor_loader(graph, [-1, -1], backend="torch")(seeds)
    w = sampled_edge_weight(sub.edge_index, sub.edge_weight, sub.deg)
    out = sampled_propagation(x[sub.n_id], sub.edge_index, w, 2)
    assert torch.allclose(out[:4], full[seeds], atol=1e-6)
    # trimmed to the layers (the last layer only into the seeds): the seeds' rows unchanged
    trimmed = sampled_propagation(x[sub.n_id], sub.edge_index, w, 2,
                                  num_sampled_edges=sub.num_sampled_edges)
    assert torch.allclose(trimmed[:4], full[seeds], atol=1e-6)
    assert not torch.allclose(trimmed, out)  # it did skip work (hop-1 nodes' last layer)


def test_bad_aggregation():
    with pytest.raises(ValueError, match="aggregation"):
        sampled_propagation(torch.zeros(1, 1), torch.zeros(2, 0, dtype=torch.long),
                            torch.zeros(0), 1, "max")
