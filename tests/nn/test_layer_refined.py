import math

import pytest
import torch
import torch.nn.functional as F

from sea_pyg.nn import LayerRefinedPropagation, bipartite_norm_adj

pytestmark = pytest.mark.usefixtures("one_thread")


def _dense_adj(edges, num_users, num_items, eps=1e-7):
    n = num_users + num_items
    a = torch.zeros(n, n, dtype=torch.float64)
    for u, i in edges.t().tolist():
        a[u, num_users + i] = a[num_users + i, u] = 1.0
    d = (a.sum(1) + eps).pow(-0.5)
    return d[:, None] * a * d[None, :]


def _dense_refined(x, a, num_layers):
    """Reference: the refined layers written out with an explicit cosine."""
    ego, h, layers = x, x, []
    for _ in range(num_layers):
        h = a @ h
        cos = (h * ego).sum(1) / (h.norm(dim=1).clamp_min(1e-8) * ego.norm(dim=1).clamp_min(1e-8))
        h = cos[:, None] * h
        layers.append(h)
    return layers


def test_one_edge_hand_computed():
    # one user, one item, one edge: A_hat swaps the two rows, times c = 1 / (1 + 1e-7)
    adj = bipartite_norm_adj(torch.tensor([[0], [0]]), 1, 1, dtype=torch.float64)
    c = 1 / (1 + 1e-7)
    x = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)  # user, item
    # layer 1: H = c (item, user) = c [(1, 0), (1, 1)]; both cosines with the ego rows 1/sqrt 2
    # layer 2: H = c E1 swapped = c^2/sqrt2 [(1, 1), (1, 0)]; cosines 1 (parallel to the ego rows)
    s = 1 / math.sqrt(2)
    e1 = torch.tensor([[c * s, 0.0], [c * s, c * s]], dtype=torch.float64)
    e2 = torch.tensor([[c * c * s, c * c * s], [c * c * s, 0.0]], dtype=torch.float64)
    prop = LayerRefinedPropagation(2)
    layers, weights = prop.layers(x, adj)
    assert torch.allclose(layers[0], e1, atol=1e-12) and torch.allclose(layers[1], e2, atol=1e-12)
    assert torch.allclose(weights[0], torch.full((2,), s, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(weights[1], torch.ones(2, dtype=torch.float64), atol=1e-12)
    # the ego layer is not in the output: E1 + E2 (sum) or (E1 + E2) / 2 (mean)
    assert torch.allclose(prop(x, adj), e1 + e2, atol=1e-12)
    mean = LayerRefinedPropagation(2, aggregation="mean")
    assert torch.allclose(mean(x, adj), (e1 + e2) / 2, atol=1e-12)


def test_negative_similarity_flips_the_layer():
    adj = bipartite_norm_adj(torch.tensor([[0], [0]]), 1, 1, dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0], [-2.0, 0.0]], dtype=torch.float64)
    # H = c (-2, 0) for the user (cos -1) and c (1, 0) for the item (cos -1): E1 = -H
    c = 1 / (1 + 1e-7)
    out = LayerRefinedPropagation(1)(x, adj)
    assert torch.allclose(out, torch.tensor([[2 * c, 0.0], [-c, 0.0]], dtype=torch.float64))


def test_matches_dense_reference_values_and_gradients():
    gen = torch.Generator().manual_seed(0)
    U, N, E = 7, 6, 16
    edges = torch.stack(
        [torch.randint(0, U, (E,), generator=gen), torch.randint(0, N, (E,), generator=gen)]
    )
    adj = bipartite_norm_adj(edges, U, N, dtype=torch.float64)
    dense = _dense_adj(edges, U, N)
    x = torch.randn(U + N, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(U + N, 5, dtype=torch.float64, generator=gen)
    out = LayerRefinedPropagation(3)(x, adj)
    ref = sum(_dense_refined(x, dense, 3))
    assert torch.allclose(out, ref, atol=1e-12)
    g_out = torch.autograd.grad((out * w).sum(), x)[0]
    g_ref = torch.autograd.grad((ref * w).sum(), x)[0]
    assert torch.allclose(g_out, g_ref, atol=1e-10)
    # the weights take part in the gradient: a plain LightGCN sum would differ
    plain = sum(torch.linalg.matrix_power(dense, k) @ x for k in (1, 2, 3))
    g_plain = torch.autograd.grad((plain * w).sum(), x)[0]
    assert not torch.allclose(g_out, g_plain, atol=1e-3)


def test_weights_are_torch_cosine_similarity():
    gen = torch.Generator().manual_seed(1)
    edges = torch.stack(
        [torch.randint(0, 5, (9,), generator=gen), torch.randint(0, 4, (9,), generator=gen)]
    )
    adj = bipartite_norm_adj(edges, 5, 4, dtype=torch.float64)
    x = torch.randn(9, 3, dtype=torch.float64, generator=gen)
    x[2] *= 1e-3  # small rows too
    prop = LayerRefinedPropagation(2)
    layers, weights = prop.layers(x, adj)
    h1 = adj @ x
    assert torch.allclose(weights[0], F.cosine_similarity(h1, x, dim=-1), atol=1e-12)
    h2 = adj @ layers[0]
    assert torch.allclose(weights[1], F.cosine_similarity(h2, x, dim=-1), atol=1e-12)


def test_isolated_nodes_get_zero_rows_not_nan():
    adj = bipartite_norm_adj(torch.tensor([[0], [0]]), 2, 2)  # user 1 and item 1 isolated
    x = torch.randn(4, 3)
    out = LayerRefinedPropagation(2)(x, adj)
    assert torch.isfinite(out).all()
    assert out[1].abs().sum() == 0 and out[3].abs().sum() == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_layers"):
        LayerRefinedPropagation(0)
    with pytest.raises(ValueError, match="aggregation"):
        LayerRefinedPropagation(2, aggregation="last")
