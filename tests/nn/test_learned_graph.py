"""Learned item graphs (LATTICE / MICRO) against hand computations and dense references."""

import math

import pytest
import torch

from sea_pyg.nn import knn as knn_module
from sea_pyg.nn import learned_graph as lg
from sea_pyg.nn.learned_graph import (
    LearnedItemGraph,
    WeightedGraph,
    cosine_topk,
    normalize_edge_weight,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# Dense references: the formulas of LATTICE's reference code, on full N x N matrices ############


def dense_knn(z, k):
    """Weighted k-NN: the top-k cosine similarities of each row kept, the rest zero."""
    zn = z / z.norm(dim=1, keepdim=True)
    sim = zn @ zn.t()
    val, idx = sim.topk(k, dim=1)
    return torch.zeros_like(sim).scatter(1, idx, val)


def dense_sym(a):
    """D^-1/2 A D^-1/2 with D the row sums on both sides; 0 for a zero row sum."""
    d = a.sum(1).pow(-0.5)
    d = torch.where(torch.isinf(d), torch.zeros_like(d), d)
    return d[:, None] * a * d[None, :]


def dense_lattice(raw, z, w, k, lam):
    """(1 - lam) sym(sum_m w_m kNN(z_m)) + lam sum_m w_m sym(kNN(raw_m))."""
    learned = dense_sym(sum(w[i] * dense_knn(z[m], k) for i, m in enumerate(z)))
    initial = sum(w[i] * dense_sym(dense_knn(raw[m].detach(), k)) for i, m in enumerate(raw))
    return (1 - lam) * learned + lam * initial


# cosine_topk ##################################################################################


def test_cosine_topk_hand_computed():
    # x_1 = (3, 1) / sqrt(10): cos(0, 1) = 3 / sqrt(10), cos(1, 2) = 1 / sqrt(10), cos(0, 2) = 0
    x = torch.tensor([[2.0, 0.0], [3.0, 1.0], [0.0, 5.0]], dtype=torch.float64)
    edge_index, value = cosine_topk(x, k=2)
    assert edge_index.tolist() == [[0, 0, 1, 1, 2, 2], [0, 1, 1, 0, 2, 1]]
    c, s = 3 / math.sqrt(10), 1 / math.sqrt(10)
    assert value.tolist() == pytest.approx([1.0, c, 1.0, c, 1.0, s], abs=1e-12)
    # normalised: a_ij / sqrt(r_i r_j), r = (1 + c, 1 + c, 1 + s)
    norm = normalize_edge_weight(edge_index, value, 3, "sym")
    r = [1 + c, 1 + c, 1 + s]
    expected = [1 / r[0], c / r[0], 1 / r[1], c / r[1], 1 / r[2], s / math.sqrt(r[2] * r[1])]
    assert norm.tolist() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 4, 11, 64])
def test_cosine_topk_equals_the_dense_weighted_knn(chunk_size):
    torch.manual_seed(0)
    x = torch.randn(11, 5, dtype=torch.float64)
    edge_index, value = cosine_topk(x, k=4, chunk_size=chunk_size)
    assert edge_index[0].tolist() == torch.arange(11).repeat_interleave(4).tolist()
    dense = torch.zeros(11, 11, dtype=torch.float64).index_put(tuple(edge_index), value)
    assert torch.allclose(dense, dense_knn(x, 4), atol=1e-12)
    assert torch.equal(edge_index[1, ::4], torch.arange(11))  # self first (similarity 1)


@pytest.mark.parametrize("edge_chunk", [5, 1 << 16])
def test_cosine_topk_gradients_equal_the_dense_topk_gradients(monkeypatch, edge_chunk):
    monkeypatch.setattr(lg, "EDGE_CHUNK", edge_chunk)  # gradients gathered in chunks of edges
    torch.manual_seed(1)
    x = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    coef = torch.randn(9, 9, dtype=torch.float64)
    edge_index, value = cosine_topk(x, k=3, chunk_size=2)
    (value * coef[edge_index[0], edge_index[1]]).sum().backward()
    sparse_grad = x.grad.clone()
    x.grad = None
    (dense_knn(x, 3) * coef).sum().backward()
    assert torch.allclose(sparse_grad, x.grad, atol=1e-12)
    assert sparse_grad.abs().sum() > 0
    # and against finite differences, through the normalisation of x
    x0 = x.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: cosine_topk(t, 3, 4)[1] * coef[edge_index[0], edge_index[1]], (x0,)
    )


def test_cosine_topk_never_forms_the_full_similarity_matrix(monkeypatch):
    shapes = []
    blocks = knn_module._similarity_blocks

    def recording(x_n, chunk_size):
        for start, block in blocks(x_n, chunk_size):
            shapes.append(tuple(block.shape))
            yield start, block

    monkeypatch.setattr(knn_module, "_similarity_blocks", recording)
    x = torch.randn(50, 4)
    cosine_topk(x, 5, chunk_size=16)
    assert shapes == [(16, 50), (16, 50), (16, 50), (2, 50)]


def test_cosine_topk_errors():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="'k' must not exceed"):
        cosine_topk(x, 5)
    with pytest.raises(ValueError, match="'k' must be at least 1"):
        cosine_topk(x, 0)
    with pytest.raises(ValueError, match="two-dimensional"):
        cosine_topk(torch.randn(4), 2)
    with pytest.raises(ValueError, match="NaN"):
        cosine_topk(torch.tensor([[1.0, float("nan")], [1.0, 0.0]]), 1)


# normalize_edge_weight ########################################################################


def test_normalize_edge_weight_hand_computed():
    # row sums: r_0 = 1 + 3 = 4 (the duplicate (0, 1) counts twice), r_1 = 1, r_2 = 0, r_3 = -1
    edge_index = torch.tensor([[0, 0, 0, 1, 2, 3], [1, 1, 0, 0, 2, 3]])
    value = torch.tensor([1.0, 1.0, 2.0, 1.0, 0.0, -1.0])
    sym = normalize_edge_weight(edge_index, value, 4, "sym")
    assert sym.tolist() == pytest.approx([1 / 2, 1 / 2, 2 / 4, 1 / 2, 0.0, 0.0])
    rw = normalize_edge_weight(edge_index, value, 4, "rw")
    assert rw.tolist() == pytest.approx([1 / 4, 1 / 4, 2 / 4, 1.0, 0.0, 0.0])
    assert torch.equal(normalize_edge_weight(edge_index, value, 4, "none"), value)
    with pytest.raises(ValueError, match="'normalization'"):
        normalize_edge_weight(edge_index, value, 4, "col")
    # no NaN gradient from the masked rows
    value.requires_grad_()
    normalize_edge_weight(edge_index, value, 4, "sym").sum().backward()
    assert torch.isfinite(value.grad).all()


# WeightedGraph ################################################################################


@pytest.mark.parametrize("edge_chunk", [2, 1 << 16])
def test_weighted_graph_sums_duplicates_and_propagates(monkeypatch, edge_chunk):
    monkeypatch.setattr(lg, "EDGE_CHUNK", edge_chunk)
    edge_index = torch.tensor([[2, 0, 0, 2, 1], [0, 1, 1, 2, 2]])
    value = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64, requires_grad=True)
    g = WeightedGraph.from_edges(edge_index, value, 3)
    expected = torch.tensor([[0, 5, 0], [0, 0, 5], [1, 0, 4]], dtype=torch.float64)
    assert torch.equal(g.to_dense(), expected)
    assert g.crow.tolist() == [0, 1, 2, 4] and g.col.tolist() == [1, 2, 0, 2]
    assert g.edge_index.tolist() == [[0, 1, 2, 2], [1, 2, 0, 2]]
    x = torch.tensor([[1.0, -1.0], [2.0, 0.5], [0.0, 3.0]], dtype=torch.float64)
    x.requires_grad_()
    y = g.propagate(x)
    assert torch.allclose(y, expected @ x.detach())
    coef = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64)
    (y * coef).sum().backward()
    # dL/dx = A^T C; dL/da_ij = c_i . x_j, summed over the duplicates' sources
    assert torch.allclose(x.grad, expected.t() @ coef)
    cx = (coef @ x.detach().t()).tolist()  # cx[i][j] = c_i . x_j
    assert value.grad.tolist() == pytest.approx([cx[2][0], cx[0][1], cx[0][1], cx[2][2], cx[1][2]])


def test_weighted_graph_gradcheck_transpose_detach_and_combine():
    torch.manual_seed(2)
    edge_index = torch.randint(0, 6, (2, 15))
    value = torch.randn(15, dtype=torch.float64, requires_grad=True)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v, t: WeightedGraph.from_edges(edge_index, v, 6).propagate(t), (value, x)
    )
    g = WeightedGraph.from_edges(edge_index, value, 6)
    crow_t, col_t, perm = g.transpose_pattern()
    transposed = WeightedGraph(crow_t, col_t, g.value[perm])
    assert torch.equal(transposed.to_dense(), g.to_dense().t())
    d = g.detach()
    assert not d.value.requires_grad and d.transpose_pattern()[2] is perm
    assert torch.equal(d.propagate(x), g.propagate(x))
    # combine: 2 A + (-1) A = A
    parts = [(edge_index, value), (edge_index, value)]
    both = WeightedGraph.combine(parts, 6, [2.0, -1.0])
    assert torch.allclose(both.to_dense(), g.to_dense())
    with pytest.raises(ValueError, match="shape \\[6, d\\]"):
        g.propagate(torch.randn(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="outside"):
        WeightedGraph.from_edges(torch.tensor([[0], [6]]), torch.ones(1), 6)
    with pytest.raises(ValueError, match="one entry per edge"):
        WeightedGraph.from_edges(edge_index, torch.ones(3), 6)


# LearnedItemGraph #############################################################################


def _catalogue(n=9, seed=3):
    torch.manual_seed(seed)
    raw = {
        "image": torch.randn(n, 6, dtype=torch.float64),
        "text": torch.randn(n, 4, dtype=torch.float64),
    }
    trs = {m: torch.nn.Linear(x.size(1), 3, dtype=torch.float64) for m, x in raw.items()}
    return raw, trs


@pytest.mark.parametrize("lam", [0.9, 0.0, 1.0])
def test_mixed_graph_values_and_gradients_equal_the_dense_computation(lam):
    raw, trs = _catalogue()
    graph = LearnedItemGraph(raw, k=3, lambda_coeff=lam, chunk_size=4)
    feats = {m: x.clone().requires_grad_() for m, x in raw.items()}
    logits = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    e = torch.randn(9, 2, dtype=torch.float64, requires_grad=True)
    coef = torch.randn(9, 2, dtype=torch.float64)
    params = [logits, e, *feats.values()] + [p for t in trs.values() for p in t.parameters()]

    def run(dense):
        w = torch.softmax(logits, 0)
        z = {m: trs[m](feats[m]) for m in raw}
        if dense:
            s = dense_lattice(raw, z, w, 3, lam)
            out = s @ e
        else:
            g = graph.mixed_graph(z, w)
            s, out = g.to_dense(), g.propagate(e)
        grads = torch.autograd.grad((out * coef).sum(), params, allow_unused=True)
        return s.detach(), grads

    s_sparse, g_sparse = run(False)
    s_dense, g_dense = run(True)
    assert torch.allclose(s_sparse, s_dense, atol=1e-12)
    for p, a, b in zip(params, g_sparse, g_dense, strict=True):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        assert torch.allclose(a, b, atol=1e-10), p.shape
    # what should learn does: the projections and raw features unless lam = 1
    learns = [g.abs().sum() > 0 for g in g_sparse[2:] if g is not None]
    assert all(learns) if lam < 1 else not any(learns)
    assert g_sparse[0].abs().sum() > 0  # the modality weights: through both parts


def test_mixed_graph_hand_computed_one_modality():
    # kNN(z) with k = 2 of the hand example of test_cosine_topk_hand_computed; initial graph
    # from raw features whose neighbours differ: items 0 and 2 are close, item 1 alone
    raw = {"text": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]], dtype=torch.float64)}
    graph = LearnedItemGraph(raw, k=2, lambda_coeff=0.25)
    z = torch.tensor([[2.0, 0.0], [3.0, 1.0], [0.0, 5.0]], dtype=torch.float64)
    s = graph.mixed_graph({"text": z}).to_dense()
    c, t = 3 / math.sqrt(10), 1 / math.sqrt(10)
    r = [1 + c, 1 + c, 1 + t]
    learned = torch.tensor(
        [
            [1 / r[0], c / r[0], 0],
            [c / r[1], 1 / r[1], 0],
            [0, t / math.sqrt(r[2] * r[1]), 1 / r[2]],
        ],
        dtype=torch.float64,
    )
    q = 1 / math.sqrt(1.01)  # cos(item 0, item 2)
    # row 1: its most similar other item, at cosine 0.1 / sqrt(1.01), is item 2
    p = 0.1 / math.sqrt(1.01)
    rr = [1 + q, 1 + p, 1 + q]
    initial = torch.tensor(
        [
            [1 / rr[0], 0, q / rr[0]],
            [0, 1 / rr[1], p / math.sqrt(rr[1] * rr[2])],
            [q / rr[2], 0, 1 / rr[2]],
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(s, 0.75 * learned + 0.25 * initial, atol=1e-12)


def test_modality_graph_is_micro_per_modality_mix():
    raw, trs = _catalogue(seed=4)
    graph = LearnedItemGraph(raw, k=3, lambda_coeff=0.7)
    z = trs["image"](raw["image"]).detach().requires_grad_()
    g = graph.modality_graph("image", z)
    expected = 0.3 * dense_sym(dense_knn(z, 3)) + 0.7 * dense_sym(dense_knn(raw["image"], 3))
    assert torch.allclose(g.to_dense(), expected, atol=1e-12)
    g.propagate(torch.ones(9, 1, dtype=torch.float64)).sum().backward()
    assert z.grad.abs().sum() > 0
    assert torch.allclose(
        graph.initial_graph("text").to_dense(), dense_sym(dense_knn(raw["text"], 3))
    )
    rw = LearnedItemGraph(raw, k=3, normalization="rw").initial_graph("image").to_dense()
    assert torch.allclose(rw, dense_knn(raw["image"], 3) / dense_knn(raw["image"], 3).sum(1, True))
    with pytest.raises(ValueError, match="Unknown modality"):
        graph.modality_graph("audio", z)
    with pytest.raises(ValueError, match="shape \\[9, d\\]"):
        graph.modality_graph("image", z[:5])
    with pytest.raises(ValueError, match="lacks modalities"):
        graph.mixed_graph({"image": z})
    with pytest.raises(ValueError, match="one weight per modality"):
        graph.mixed_graph({"image": z, "text": z}, [1.0])
    with pytest.raises(ValueError, match="lambda_coeff"):
        LearnedItemGraph(raw, lambda_coeff=1.5)


def test_no_n_by_n_tensor_is_saved_for_backward():
    """Everything autograd keeps for the backward pass of a learned graph is O(N k + N d)."""
    n = 64
    raw, trs = _catalogue(n=n, seed=5)
    graph = LearnedItemGraph(raw, k=4, chunk_size=8)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        z = {m: trs[m](x) for m, x in raw.items()}
        g = graph.mixed_graph(z, torch.softmax(torch.zeros(2, requires_grad=True), 0))
        out = g.propagate(torch.randn(n, 2, dtype=torch.float64, requires_grad=True))
    out.sum().backward()
    assert saved and max(saved) < n * n


def test_self_loop_rw_graph_hand_computed():
    # user 0 rated items 0 and 1 (item 1 twice: binarised), user 1 rated item 1; nodes: users
    # 0, 1, items 2, 3. Row sums of A + I: user 0: 3, user 1: 2, item 0: 2, item 1: 3.
    edges = torch.tensor([[0, 0, 0, 1], [0, 1, 1, 1]])
    g = lg.self_loop_rw_graph(edges, num_users=2, num_items=2)
    third, half = 1 / 3, 1 / 2
    expected = torch.tensor([
        [third, 0.0, third, third],
        [0.0, half, 0.0, half],
        [half, 0.0, half, 0.0],
        [third, third, 0.0, third],
    ])  # fmt: skip
    assert torch.allclose(g.to_dense(), expected)
    x = torch.arange(8.0).view(4, 2)
    assert torch.allclose(g.propagate(x), expected @ x)
