import math
import warnings

import pytest
import torch
import torch_geometric.nn.pool
import torch_geometric.typing

from sea_pyg.nn import knn as knn_module
from sea_pyg.nn.knn import ItemKNNGraph, cosine_knn, knn_adjacency

warnings.filterwarnings('ignore', '.*Sparse CSR tensor support is in beta.*')


def circle(degrees, radii=None):
    angle = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    radius = torch.ones_like(angle) if radii is None else torch.tensor(radii).double()
    return torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)


def neighbour_sets(edge_index, num_items):
    sets = [set() for _ in range(num_items)]
    for i, j in edge_index.t().tolist():
        sets[i].add(j)
    return sets


def brute_force_sets(x, k):
    x_n = x / x.norm(dim=1, keepdim=True)
    index = (x_n @ x_n.t()).topk(k, dim=1).indices
    return [set(row) for row in index.tolist()]


# cosine_knn ##################################################################


def test_cosine_knn_hand_built_circle():
    # Angles 0, 20, 90, 180, 250 degrees; the radii differ so that Euclidean
    # neighbours would differ from cosine ones (item 2 is closest to item 0 in
    # Euclidean distance, but at 70 degrees from item 1 against 90 from item 0).
    x = circle([0, 20, 90, 180, 250], radii=[1.0, 5.0, 0.5, 2.0, 3.0])
    edge_index = cosine_knn(x, k=2, backend='torch')
    assert edge_index.shape == (2, 10)
    assert edge_index.dtype == torch.long
    assert edge_index[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert neighbour_sets(edge_index, 5) == [{0, 1}, {1, 0}, {2, 1}, {3, 4}, {4, 3}]
    # Within a row, neighbours come by decreasing similarity: self first.
    assert edge_index[1, 0::2].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize('chunk_size', [1, 5, 36, 37, 100])
def test_cosine_knn_equals_dense_reference(chunk_size):
    torch.manual_seed(0)
    x = torch.randn(37, 8)
    edge_index = cosine_knn(x, k=5, chunk_size=chunk_size, backend='torch')
    assert edge_index[0].tolist() == torch.arange(37).repeat_interleave(5).tolist()
    sets = neighbour_sets(edge_index, 37)
    assert sets == brute_force_sets(x.double(), 5)
    assert all(i in s and len(s) == 5 for i, s in enumerate(sets))  # Self included.


def test_cosine_knn_k_equals_n_and_k_one():
    torch.manual_seed(1)
    x = torch.randn(6, 3)
    assert neighbour_sets(cosine_knn(x, k=6), 6) == [set(range(6))] * 6
    assert cosine_knn(x, k=1).tolist() == [list(range(6)), list(range(6))]


def test_cosine_knn_never_builds_full_similarity(monkeypatch):
    shapes = []
    blocks = knn_module._similarity_blocks

    def recording(x_n, chunk_size):
        for start, block in blocks(x_n, chunk_size):
            shapes.append((start, tuple(block.shape)))
            yield start, block

    monkeypatch.setattr(knn_module, '_similarity_blocks', recording)
    torch.manual_seed(2)
    x = torch.randn(50, 4)
    edge_index = cosine_knn(x, k=3, chunk_size=7, backend='torch')
    assert shapes == [(s, (7, 50)) for s in range(0, 49, 7)] + [(49, (1, 50))]
    assert neighbour_sets(edge_index, 50) == brute_force_sets(x.double(), 3)


def test_cosine_knn_zero_rows_dtypes_and_no_grad():
    torch.manual_seed(3)
    x = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        x[4] = 0.0
    edge_index = cosine_knn(x, k=3)
    assert edge_index.shape == (2, 30) and not edge_index.requires_grad
    assert int(edge_index.min()) >= 0 and int(edge_index.max()) < 10
    # Other rows never pick the zero row over a positively similar item, and
    # keep their dense-reference neighbours (computed without the zero row).
    keep = [i for i in range(10) if i != 4]
    x_n = x.detach()[keep] / x.detach()[keep].norm(dim=1, keepdim=True)
    sim = x_n @ x_n.t()
    for r, i in enumerate(keep):
        expected = {keep[j] for j in sim[r].topk(3).indices.tolist()}
        if sim[r].topk(3).values.min() > 0:
            assert neighbour_sets(edge_index, 10)[i] == expected
    # Integer features are accepted and cast.
    assert cosine_knn(torch.tensor([[1, 0], [0, 1], [1, 1]]), k=1)[1].tolist() == [0, 1, 2]


def test_cosine_knn_errors():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="'k' must be at least 1"):
        cosine_knn(x, k=0)
    with pytest.raises(ValueError, match="'k' must not exceed"):
        cosine_knn(x, k=6)
    with pytest.raises(ValueError, match="'k' must be an integer"):
        cosine_knn(x, k=2.5)
    with pytest.raises(ValueError, match='two-dimensional'):
        cosine_knn(torch.randn(5), k=1)
    with pytest.raises(ValueError, match='NaN'):
        cosine_knn(torch.tensor([[1.0, float('nan')], [0.0, 1.0]]), k=1)
    with pytest.raises(ValueError, match="'chunk_size' must be at least 1"):
        cosine_knn(x, k=2, chunk_size=0)
    with pytest.raises(ValueError, match="'backend' must be one of"):
        cosine_knn(x, k=2, backend='annoy')


def fake_knn_graph(x, k, batch=None, loop=False, flow='source_to_target', cosine=False):
    # Mimics PyG's convention: pairs (neighbour, center) for 'source_to_target',
    # here in a scrambled order.
    assert loop and cosine and flow == 'source_to_target'
    x_n = x / x.norm(dim=1, keepdim=True)
    neighbour = (x_n @ x_n.t()).topk(k, dim=1).indices.reshape(-1)
    center = torch.arange(x.size(0)).repeat_interleave(k)
    perm = torch.randperm(center.numel(), generator=torch.Generator().manual_seed(0))
    return torch.stack([neighbour, center])[:, perm]


def test_cosine_knn_pyg_backend_orientation(monkeypatch):
    monkeypatch.setattr(torch_geometric.nn.pool, 'knn_graph', fake_knn_graph)
    monkeypatch.setattr(torch_geometric.typing, 'WITH_KNN', True, raising=False)
    torch.manual_seed(4)
    x = torch.randn(20, 5)
    expected = neighbour_sets(cosine_knn(x, k=4, backend='torch'), 20)
    for backend in ['pyg', 'auto']:
        edge_index = cosine_knn(x, k=4, backend=backend)
        assert edge_index[0].tolist() == torch.arange(20).repeat_interleave(4).tolist()
        assert neighbour_sets(edge_index, 20) == expected


def test_cosine_knn_auto_falls_back_to_torch(monkeypatch):
    def failing(*args, **kwargs):
        raise ImportError("'knn_graph' requires 'pyg-lib>=0.6.0'")

    monkeypatch.setattr(torch_geometric.nn.pool, 'knn_graph', failing)
    monkeypatch.setattr(torch_geometric.typing, 'WITH_KNN', True, raising=False)
    torch.manual_seed(5)
    x = torch.randn(15, 3)
    assert torch.equal(cosine_knn(x, k=3), cosine_knn(x, k=3, backend='torch'))
    with pytest.raises(ImportError):
        cosine_knn(x, k=3, backend='pyg')


def test_cosine_knn_faiss_backend():
    pytest.importorskip('faiss')
    torch.manual_seed(6)
    x = torch.randn(40, 16)
    edge_index = cosine_knn(x, k=5, backend='faiss')
    assert edge_index[0].tolist() == torch.arange(40).repeat_interleave(5).tolist()
    assert neighbour_sets(edge_index, 40) == brute_force_sets(x.double(), 5)


def test_cosine_knn_faiss_missing_message():
    try:
        import faiss  # noqa: F401
        pytest.skip('faiss is installed')
    except ImportError:
        pass
    with pytest.raises(ImportError, match='faiss-cpu'):
        cosine_knn(torch.randn(5, 2), k=2, backend='faiss')


# knn_adjacency ###############################################################


def test_knn_adjacency_sym_row_on_knn_graph():
    torch.manual_seed(7)
    k = 4
    adj = knn_adjacency(cosine_knn(torch.randn(25, 6), k=k), 25)
    assert adj.layout == torch.sparse_coo and adj.is_coalesced()
    assert adj.shape == (25, 25) and adj.dtype == torch.float32
    assert adj._nnz() == 25 * k
    assert torch.allclose(adj.values(), torch.full((25 * k, ), 1 / (k + 1e-7)))
    assert torch.allclose(torch.sparse.sum(adj, dim=1).to_dense(), torch.ones(25))


def test_knn_adjacency_hand_computed():
    # Binary A (the duplicate (0, 1) counts once): row sums r = [2, 1, 1],
    # column sums c = [1, 1, 2].
    edge_index = torch.tensor([[0, 0, 1, 2, 0], [1, 2, 2, 0, 1]])
    eps = 1e-7

    def dense(normalization):
        adj = knn_adjacency(edge_index, 3, normalization, dtype=torch.float64)
        assert adj.is_coalesced() and adj.dtype == torch.float64
        return adj.to_dense()

    expected = {
        'none': [[0, 1, 1], [0, 0, 1], [1, 0, 0]],
        'row': [[0, 1 / 2, 1 / 2], [0, 0, 1], [1, 0, 0]],
        'sym': [[0, 1 / math.sqrt(2), 1 / 2], [0, 0, 1 / math.sqrt(2)], [1, 0, 0]],
        'sym_row': [
            [0, ((2 + eps) * (1 + eps))**-0.5, ((2 + eps) * (1 + eps))**-0.5],
            [0, 0, 1 / (1 + eps)],
            [((1 + eps) * (2 + eps))**-0.5, 0, 0],
        ],
    }
    for normalization, matrix in expected.items():
        assert torch.allclose(dense(normalization), torch.tensor(matrix, dtype=torch.float64),
                              rtol=0, atol=1e-12), normalization


def test_knn_adjacency_errors():
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]])
    with pytest.raises(ValueError, match="'normalization' must be one of"):
        knn_adjacency(edge_index, 3, 'mean')
    with pytest.raises(ValueError, match="outside"):
        knn_adjacency(edge_index, 2)
    with pytest.raises(ValueError, match=r"shape \[2, num_edges\]"):
        knn_adjacency(edge_index.t(), 3)
    with pytest.raises(ValueError, match='integer indices'):
        knn_adjacency(edge_index.float(), 3)


# ItemKNNGraph ################################################################


def test_item_knn_graph_fixed_weights_hand_computed():
    # k = 2.  Image angles 0, 10, 100, 110: neighbours {0,1}, {1,0}, {2,3}, {3,2}.
    # Text angles 0, 5, 200, 300: neighbours {0,1}, {1,0}, {2,3}, {3,0}.
    feats = {'image': circle([0, 10, 100, 110]), 'text': circle([0, 5, 200, 300])}
    graph = ItemKNNGraph(feats, k=2, weights={'image': 0.1, 'text': 0.9})
    assert graph.modalities == ['image', 'text']
    assert torch.allclose(graph.modality_weights(), torch.tensor([0.1, 0.9]))
    expected = torch.tensor([
        [0.5, 0.5, 0.0, 0.0],
        [0.5, 0.5, 0.0, 0.0],
        [0.0, 0.0, 0.5, 0.5],
        [0.45, 0.0, 0.05, 0.5],  # Text only: 0.9 / 2; image only: 0.1 / 2.
    ])
    adj = graph.adjacency()
    assert adj.layout == torch.sparse_coo and adj.is_coalesced()
    assert torch.allclose(adj.to_dense(), expected, atol=1e-6)
    x = torch.randn(4, 3)
    assert torch.allclose(graph(x), expected @ x, atol=1e-6)
    assert torch.allclose(graph.adjacency('text').to_dense()[3], torch.tensor([0.5, 0, 0, 0.5]))


def test_item_knn_graph_entries_add_up_like_reference():
    # k = 10 on 11 items: image i -> i, ..., i + 9 and text i -> i - 9, ..., i
    # (mod 11).  Pairs in both graphs get 0.1 * 0.1 + 0.9 * 0.1 = 0.01 + 0.09.
    n, k = 11, 10
    center = torch.arange(n).repeat_interleave(k)
    offset = torch.arange(k).repeat(n)
    adjs = {
        'image': knn_adjacency(torch.stack([center, (center + offset) % n]), n),
        'text': knn_adjacency(torch.stack([center, (center - offset) % n]), n),
    }
    graph = ItemKNNGraph.from_adjacencies(adjs, weights=[0.1, 0.9])
    dense = graph.adjacency().to_dense()
    for i in range(n):
        assert dense[i, (i + 1) % n] == pytest.approx(0.01)  # Image only.
        assert dense[i, (i - 1) % n] == pytest.approx(0.09)  # Text only.
        assert dense[i, i] == pytest.approx(0.1)  # Both.
        assert dense[i, (i + 5) % n] == pytest.approx(0.1)  # Both.
    assert torch.allclose(dense.sum(dim=1), torch.ones(n))
    # Dense and CSR inputs are accepted too.
    other = ItemKNNGraph.from_adjacencies(
        {'image': adjs['image'].to_dense(), 'text': adjs['text'].to_sparse_csr()},
        weights={'image': 0.1, 'text': 0.9})
    assert torch.allclose(other.adjacency().to_dense(), dense)


def random_features(num_items=30, seed=8):
    gen = torch.Generator().manual_seed(seed)
    return {
        'image': torch.randn(num_items, 12, generator=gen),
        'text': torch.randn(num_items, 5, generator=gen),
    }


def test_item_knn_graph_forward_equals_dense_product_and_grad():
    feats = random_features()
    graph = ItemKNNGraph(feats, k=4, weights=[0.3, 0.7])
    dense = (0.3 * knn_adjacency(cosine_knn(feats['image'], 4), 30).to_dense() +
             0.7 * knn_adjacency(cosine_knn(feats['text'], 4), 30).to_dense())
    assert torch.allclose(graph.adjacency().to_dense(), dense)
    x = torch.randn(30, 6, requires_grad=True)
    out = graph(x)
    assert out.shape == (30, 6)
    assert torch.allclose(out, dense @ x, atol=1e-6)
    grad_out = torch.randn(30, 6)
    out.backward(grad_out)
    assert torch.allclose(x.grad, dense.t() @ grad_out, atol=1e-5)
    # Default weights are equal; the precomputed graph is frozen.
    assert torch.allclose(ItemKNNGraph(feats, k=4).modality_weights(), torch.tensor([0.5, 0.5]))
    assert list(graph.parameters()) == []


def test_item_knn_graph_gradcheck_float64():
    graph = ItemKNNGraph(random_features(12), k=3, learnable=True).double()
    x = torch.randn(12, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(graph, (x, ))


def test_item_knn_graph_learnable_weights():
    feats = random_features()
    graph = ItemKNNGraph(feats, k=4, weights={'text': 0.9, 'image': 0.1}, learnable=True)
    assert [name for name, _ in graph.named_parameters()] == ['weight_logits']
    assert torch.allclose(graph.modality_weights(), torch.tensor([0.1, 0.9]))
    adjs = [graph.adjacency(name).to_dense() for name in graph.modalities]

    x = torch.randn(30, 6, requires_grad=True)
    grad_out = torch.randn(30, 6)
    graph(x).backward(grad_out)

    logits = graph.weight_logits.detach().clone().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    weight = torch.softmax(logits, dim=0)
    (weight[0] * adjs[0] @ x_ref + weight[1] * adjs[1] @ x_ref).backward(grad_out)
    assert graph.weight_logits.grad is not None
    assert graph.weight_logits.grad.abs().sum() > 0
    assert torch.allclose(graph.weight_logits.grad, logits.grad, atol=1e-5)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)

    # The mixed adjacency follows the weights; reset restores them.
    with torch.no_grad():
        graph.weight_logits.copy_(torch.tensor([0.0, 0.0]))
    assert torch.allclose(graph.adjacency().to_dense(), 0.5 * adjs[0] + 0.5 * adjs[1])
    graph.reset_parameters()
    assert torch.allclose(graph.modality_weights(), torch.tensor([0.1, 0.9]))


def test_item_knn_graph_to_dtype_and_state_dict():
    feats = random_features()
    graph = ItemKNNGraph(feats, k=4, weights=[0.1, 0.9])
    x = torch.randn(30, 3)
    out32 = graph(x)
    graph64 = graph.to(torch.float64)
    assert graph64.value.dtype == torch.float64 and graph64.mixed_value.dtype == torch.float64
    assert graph64.crow.dtype == torch.long
    out64 = graph64(x.double())
    assert out64.dtype == torch.float64
    assert torch.allclose(out64.float(), out32, atol=1e-6)

    # A module rebuilt from cached adjacencies gives the same operator.
    cached = {name: graph.adjacency(name) for name in graph.modalities}
    rebuilt = ItemKNNGraph.from_adjacencies(cached, weights={'image': 0.1, 'text': 0.9})
    assert torch.allclose(rebuilt(x.double()), out64)
    rebuilt.load_state_dict(graph.state_dict())


def test_item_knn_graph_sequence_input_and_repr():
    feats = random_features()
    graph = ItemKNNGraph([feats['image'], feats['text']], k=3, weights=(0.25, 0.75))
    assert graph.modalities == ['0', '1']
    assert 'ItemKNNGraph(' in repr(graph) and 'k=3' in repr(graph)


def test_item_knn_graph_errors():
    feats = random_features()
    with pytest.raises(ValueError, match='same number of items'):
        ItemKNNGraph({'image': torch.randn(30, 4), 'text': torch.randn(29, 4)}, k=3)
    with pytest.raises(ValueError, match="unknown modalities \\['audio'\\]"):
        ItemKNNGraph(feats, k=3, weights={'image': 0.5, 'audio': 0.5})
    with pytest.raises(ValueError, match="lacks modalities \\['text'\\]"):
        ItemKNNGraph(feats, k=3, weights={'image': 1.0})
    with pytest.raises(ValueError, match='one weight per modality'):
        ItemKNNGraph(feats, k=3, weights=[1.0])
    with pytest.raises(ValueError, match='must be positive'):
        ItemKNNGraph(feats, k=3, weights=[0.0, 1.0], learnable=True)
    with pytest.raises(ValueError, match="'k' must not exceed"):
        ItemKNNGraph(feats, k=31)
    ItemKNNGraph(feats, k=30)  # k = N is allowed.
    with pytest.raises(ValueError, match="'normalization' must be one of"):
        ItemKNNGraph(feats, k=3, normalization='mean')
    with pytest.raises(ValueError, match='at least one modality'):
        ItemKNNGraph({}, k=3)
    graph = ItemKNNGraph(feats, k=3)
    with pytest.raises(ValueError, match=r"shape \[30, d\]"):
        graph(torch.randn(29, 4))
    with pytest.raises(ValueError, match='Unknown modality'):
        graph.adjacency('audio')
    with pytest.raises(ValueError, match='square'):
        ItemKNNGraph.from_adjacencies([torch.zeros(3, 4)])
