import math

import pytest
import torch

from sea_pyg.nn import (
    bipartite_norm_adj,
    degree_sensitive_edge_pruning,
    degree_sensitive_edge_weights,
    unique_edges,
)


def _star_graph():
    # user 0 is a hub (items 0..5); users 1..3 each hold one private item 6..8
    # (both ends of degree 1)
    users = [0, 0, 0, 0, 0, 0, 1, 2, 3]
    items = [0, 1, 2, 3, 4, 5, 6, 7, 8]
    return torch.tensor([users, items])


def test_unique_edges_collapses_duplicates_sorted():
    ei = torch.tensor([[1, 0, 1, 0], [2, 1, 2, 0]])
    assert unique_edges(ei, 2, 3).tolist() == [[0, 0, 1], [0, 1, 2]]


def test_edge_weights_hand_computed():
    ei = torch.tensor([[0, 0, 1], [0, 1, 1]])  # d_u = (2, 1), d_i = (1, 2)
    w = degree_sensitive_edge_weights(ei, 2, 2)
    expected = [1 / math.sqrt((2 + 1e-7) * (1 + 1e-7)), 1 / math.sqrt(4 + 4e-7), 1 / math.sqrt(2)]
    assert w.tolist() == pytest.approx(expected, rel=1e-6)
    # they are the user->item values of the symmetric normalised adjacency
    adj = bipartite_norm_adj(ei, 2, 2).to_dense()
    assert torch.allclose(w, adj[ei[0], 2 + ei[1]])


def test_pruning_keeps_floor_count_distinct_edges():
    ei = _star_graph()
    for dropout, keep in [(0.5, 4), (0.8, 1), (0.3, 6), (0.0, 9)]:
        kept = degree_sensitive_edge_pruning(ei, 4, 9, dropout)
        assert kept.shape == (2, keep) == (2, int(9 * (1 - dropout)))
        keys = (kept[0] * 9 + kept[1]).tolist()
        assert len(set(keys)) == keep  # without replacement
        assert set(keys) <= set((ei[0] * 9 + ei[1]).tolist())
    with pytest.raises(ValueError, match="keeps none"):
        degree_sensitive_edge_pruning(ei, 4, 9, 0.95)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        degree_sensitive_edge_pruning(ei, 4, 9, 1.0)


def test_pruning_is_seeded():
    ei = _star_graph()
    a = degree_sensitive_edge_pruning(ei, 4, 9, 0.5, generator=torch.Generator().manual_seed(3))
    b = degree_sensitive_edge_pruning(ei, 4, 9, 0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    torch.manual_seed(5)
    c = degree_sensitive_edge_pruning(ei, 4, 9, 0.5)
    torch.manual_seed(5)
    assert torch.equal(c, degree_sensitive_edge_pruning(ei, 4, 9, 0.5))


def test_pruning_prefers_low_degree_edges():
    ei = _star_graph()
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(9)
    trials = 2000
    for _ in range(trials):
        kept = degree_sensitive_edge_pruning(ei, 4, 9, 0.8, generator=gen)  # keeps 1 edge
        counts[kept[1]] += 1
    # hub edges weigh 1/sqrt(6), private edges 1: P(private) = 3 / (3 + 6/sqrt(6))
    w_hub = 1 / math.sqrt(6)
    p_private = 3 / (3 + 6 * w_hub)
    assert counts[6:].sum().item() / trials == pytest.approx(p_private, abs=0.04)
    # every private edge is kept more often than every hub edge
    assert counts[6:].min() > counts[:6].max()


def test_pruning_with_precomputed_weights_and_renormalisation():
    ei = _star_graph()
    w = degree_sensitive_edge_weights(ei, 4, 9)
    gen = torch.Generator().manual_seed(1)
    kept = degree_sensitive_edge_pruning(ei, 4, 9, 0.5, weights=w, generator=gen)
    ref = degree_sensitive_edge_pruning(ei, 4, 9, 0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(kept, ref)
    # re-normalised with the kept edges' own degrees
    adj = bipartite_norm_adj(kept, 4, 9).to_dense()
    d = torch.bincount(kept[0], minlength=4).float()
    for u, i in kept.t().tolist():
        assert adj[u, 4 + i].item() == pytest.approx(1 / math.sqrt(d[u].item() * 1.0), rel=1e-5)
    with pytest.raises(ValueError, match="one value per edge"):
        degree_sensitive_edge_pruning(ei, 4, 9, 0.5, weights=w[:3])
