import math

import pytest
import torch

from sea_pyg.nn import ItemKNNGraph, weighted_knn_adjacency
from sea_pyg.nn import weighted_knn as wk

pytestmark = pytest.mark.usefixtures("one_thread")

# cos(x0, x1) = 0.6, cos(x1, x2) = 0.8, cos(x0, x2) = 0, x3 opposite x0.
X = torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, 1.0], [-1.0, 0.0]])


def _dense_reference(x, k, normalization="sym"):
    """MMRec: dense cosine matrix, top-k values scattered back, then row-sum normalisation."""
    xn = x / x.norm(dim=1, keepdim=True)
    sim = xn @ xn.t()
    val, ind = sim.topk(k, dim=1)
    w = torch.zeros_like(sim).scatter_(1, ind, val)
    if normalization == "none":
        return w
    d = w.sum(1)
    if normalization == "rw":
        return w / d[:, None]
    inv = d.pow(-0.5)
    inv[torch.isinf(inv)] = 0.0
    return inv[:, None] * w * inv[None, :]


def test_sym_hand_computed():
    # k = 2 (self + 1): rows 0 -> {0, 1 (0.6)}, 1 -> {1, 2 (0.8)}, 2 -> {2, 1 (0.8)},
    # 3 -> {3, 2 (0.0)}; row sums 1.6, 1.8, 1.8, 1.0 (used on both sides)
    adj = weighted_knn_adjacency(X, 2, backend="torch")
    assert adj.is_sparse and adj._nnz() == 8
    expected = torch.zeros(4, 4)
    expected[0, 0] = 1 / 1.6
    expected[0, 1] = 0.6 / math.sqrt(1.6 * 1.8)
    expected[1, 1] = expected[2, 2] = 1 / 1.8
    expected[1, 2] = expected[2, 1] = 0.8 / 1.8
    expected[3, 3] = 1.0
    expected[3, 2] = 0.0  # a kept edge of similarity 0
    assert torch.allclose(adj.to_dense(), expected, atol=1e-6)


def test_row_and_none_hand_computed():
    row = weighted_knn_adjacency(X, 2, normalization="rw", backend="torch").to_dense()
    assert row[0].tolist() == pytest.approx([1 / 1.6, 0.6 / 1.6, 0, 0], abs=1e-6)
    assert row[1].tolist() == pytest.approx([0, 1 / 1.8, 0.8 / 1.8, 0], abs=1e-6)
    none = weighted_knn_adjacency(X, 2, normalization="none", backend="torch").to_dense()
    assert none[0].tolist() == pytest.approx([1.0, 0.6, 0, 0], abs=1e-6)
    assert none[2].tolist() == pytest.approx([0, 0.8, 1.0, 0], abs=1e-6)


@pytest.mark.parametrize("normalization", ["sym", "rw", "none"])
def test_matches_dense_reference_on_random_features(normalization):
    torch.manual_seed(0)
    x = torch.rand(30, 6, dtype=torch.float64)  # positive: every row sum is positive
    adj = weighted_knn_adjacency(x, 4, normalization=normalization, backend="torch")
    assert adj.dtype == torch.float64
    assert torch.allclose(adj.to_dense(), _dense_reference(x, 4, normalization), atol=1e-12)


def test_edge_weights_are_chunked_exactly(monkeypatch):
    torch.manual_seed(1)
    x = torch.randn(20, 7, dtype=torch.float64)
    edges = torch.randint(0, 20, (2, 50))
    full = wk.cosine_edge_weights(x, edges)
    monkeypatch.setattr(wk, "_GATHER_ELEMENTS", 7 * 3)  # 3 edges per chunk
    chunked = wk.cosine_edge_weights(x, edges)
    xn = x / x.norm(dim=1, keepdim=True)
    assert torch.allclose(full, (xn[edges[0]] * xn[edges[1]]).sum(1), atol=1e-12)
    assert torch.equal(full, chunked)


def test_zero_feature_row_gives_a_zero_row_and_column():
    x = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    adj = weighted_knn_adjacency(x, 2, backend="torch").to_dense()
    assert torch.isfinite(adj).all()
    assert adj[1].abs().sum() == 0 and adj[:, 1].abs().sum() == 0
    # row 0: self (1) and item 2 (1/sqrt 2); row sums 1 + 1/sqrt 2 for rows 0 and 2
    d = 1 + 1 / math.sqrt(2)
    assert adj[0, 2].item() == pytest.approx((1 / math.sqrt(2)) / d, rel=1e-6)


def test_negative_row_sum_is_a_clear_error():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.01], [-1.0, -0.01]])
    with pytest.raises(ValueError, match="smaller k"):
        weighted_knn_adjacency(x, 3, backend="torch")
    # the un-normalised graph is still defined
    assert weighted_knn_adjacency(x, 3, normalization="none", backend="torch")._nnz() == 9


def test_bad_arguments():
    with pytest.raises(ValueError, match="normalization"):
        weighted_knn_adjacency(X, 2, normalization="sym_row")
    with pytest.raises(ValueError, match="'k'"):
        weighted_knn_adjacency(X, 5)
    with pytest.raises(ValueError, match="edge_index"):
        wk.cosine_edge_weights(X, torch.zeros(3, 2, dtype=torch.long))


def test_as_a_frozen_item_knn_operator():
    adj = weighted_knn_adjacency(X, 2, backend="torch")
    graph = ItemKNNGraph.from_adjacencies({"image": adj})
    h = torch.randn(4, 3, requires_grad=True)
    out = graph(h)
    assert torch.allclose(out, adj.to_dense() @ h, atol=1e-6)
    out.sum().backward()
    assert torch.allclose(h.grad, adj.to_dense().t() @ torch.ones(4, 3), atol=1e-6)
    assert list(graph.parameters()) == []
