"""The pure-torch neighbour sampler (PyG SamplerOutput) and the NodeLoader around it."""

import itertools

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.sampler import NodeSamplerInput

from sea_pyg.data.neighbor import (
    TorchNeighborSampler,
    _floyd_subsets,
    check_fanout,
    neighbor_loader,
    neighbor_sampler,
    pyg_sampler_available,
    sampling_graph,
)
from sea_pyg.nn import bipartite_norm_adj

pytestmark = pytest.mark.usefixtures("one_thread")


def _graph():
    """Users 0-2, items 3-6 of a bipartite graph (both directions), shuffled edge order.

    u0: i3 i4 i5 i6 (degree 4), u1: i3, u2: i3 i4; i3: u0 u1 u2, i4: u0 u2, i5: u0, i6: u0.
    """
    pairs = [(0, 3), (0, 4), (0, 5), (0, 6), (1, 3), (2, 3), (2, 4)]
    src = [a for a, b in pairs] + [b for a, b in pairs]
    dst = [b for a, b in pairs] + [a for a, b in pairs]
    perm = torch.randperm(len(src), generator=torch.Generator().manual_seed(3))
    edge_index = torch.tensor([src, dst])[:, perm]
    return Data(edge_index=edge_index, num_nodes=7)


def _neighbours(data, v):
    src, dst = data.edge_index
    return sorted(src[dst == v].tolist())


def _sample(sampler, seeds):
    return sampler.sample_from_nodes(NodeSamplerInput(None, torch.tensor(seeds)))


def _check_valid(data, out, seeds, fanout):
    """Every SamplerOutput invariant: seeds first, hop blocks, real distinct edges, fan-out."""
    node, row, col = out.node, out.row, out.col
    assert node[: len(seeds)].tolist() == seeds
    assert len(set(node.tolist())) == node.numel()  # no node twice
    assert sum(out.num_sampled_nodes) == node.numel()
    assert sum(out.num_sampled_edges) == row.numel() == col.numel() == out.edge.numel()
    ids = out.edge  # positions: the permutation maps them to input edges
    perm = TorchNeighborSampler(data, [1]).edge_permutation
    true = data.edge_index[:, ids if perm is None else perm[ids]]
    assert torch.equal(node[row], true[0]) and torch.equal(node[col], true[1])
    assert len(set(ids.tolist())) == ids.numel()  # without replacement
    start = 0
    offsets = [0, *itertools.accumulate(out.num_sampled_nodes)]
    for hop, (f, ne) in enumerate(zip(fanout, out.num_sampled_edges, strict=True)):
        c = col[start : start + ne]
        assert bool(((c >= offsets[hop]) & (c < offsets[hop + 1])).all())
        for local in range(offsets[hop], offsets[hop + 1]):
            d = len(_neighbours(data, int(node[local])))
            assert int((c == local).sum()) == (d if f == -1 else min(f, d))
        start += ne


def test_full_fanout_is_the_whole_neighbourhood():
    data = _graph()
    out = _sample(TorchNeighborSampler(data, [-1]), [0, 4])
    # hop 1: u0's items 3 4 5 6 (4 is a seed already), i4's users 0 (seed) and 2 -> new 2 3 5 6
    assert out.node.tolist() == [0, 4, 2, 3, 5, 6]
    assert out.num_sampled_nodes == [2, 4]
    got = sorted(zip(out.node[out.col].tolist(), out.node[out.row].tolist(), strict=True))
    assert got == [(0, 3), (0, 4), (0, 5), (0, 6), (4, 0), (4, 2)]
    _check_valid(data, out, [0, 4], [-1])


@pytest.mark.parametrize("fanout", [[1], [2, 1], [3, 2], [-1, 2], [2, -1, 1]])
def test_sampler_output_is_valid(fanout):
    data = _graph()
    torch.manual_seed(0)
    for seeds in ([0], [0, 3], [1, 2, 5], [6, 0, 4]):
        for _ in range(20):
            _check_valid(data, _sample(TorchNeighborSampler(data, fanout), seeds), seeds, fanout)


def test_sorted_input_is_shared_not_copied():
    """A destination-sorted graph (as sampling_graph builds it) is the sampler's CSC itself:
    no permutation, the source row shared, and the same subgraphs as from a shuffled copy."""
    data = _graph()
    order = torch.argsort(data.edge_index[1], stable=True)
    srt = Data(edge_index=data.edge_index[:, order].contiguous(), num_nodes=7)
    sampler = TorchNeighborSampler(srt, [2, 1])
    assert sampler.edge_permutation is None
    assert sampler.row.data_ptr() == srt.edge_index[0].data_ptr()
    shuffled = TorchNeighborSampler(data, [2, 1])
    for seeds in ([0], [0, 3], [6, 0, 4]):
        torch.manual_seed(5)
        a = _sample(sampler, seeds)
        _check_valid(srt, a, seeds, [2, 1])
        torch.manual_seed(5)
        b = _sample(shuffled, seeds)
        for key in ("node", "row", "col", "edge"):
            assert torch.equal(getattr(a, key), getattr(b, key)), key


def test_floyd_subsets_are_uniform():
    # 5 choose 2 = 10 subsets, each with probability 1/10
    g = torch.Generator().manual_seed(0)
    draws = _floyd_subsets(torch.full((20000,), 5), 2, g)
    assert bool((draws[:, 0] != draws[:, 1]).all()) and bool(((draws >= 0) & (draws < 5)).all())
    keys = draws.sort(dim=1).values
    freq = torch.bincount(keys[:, 0] * 5 + keys[:, 1], minlength=25).float() / 20000
    pairs = [a * 5 + b for a, b in itertools.combinations(range(5), 2)]
    assert torch.allclose(freq[pairs], torch.full((10,), 0.1), atol=0.012), freq[pairs]
    # mixed degrees in one call: every row stays inside its own range
    deg = torch.tensor([3, 7, 3, 12])
    rows = _floyd_subsets(deg, 3, g)
    assert bool((rows < deg.unsqueeze(1)).all())
    assert all(len(set(r)) == 3 for r in rows.tolist())
    assert sorted(rows[0].tolist()) == [0, 1, 2]  # degree == fan-out: all of them


def test_deterministic_under_a_seed():
    data = _graph()
    a = _sample(TorchNeighborSampler(data, [2, 1], torch.Generator().manual_seed(5)), [0, 3])
    b = _sample(TorchNeighborSampler(data, [2, 1], torch.Generator().manual_seed(5)), [0, 3])
    assert torch.equal(a.node, b.node) and torch.equal(a.edge, b.edge)
    torch.manual_seed(1)
    c = _sample(TorchNeighborSampler(data, [2, 1]), [0, 3])
    torch.manual_seed(1)
    d = _sample(TorchNeighborSampler(data, [2, 1]), [0, 3])
    assert torch.equal(c.node, d.node) and torch.equal(c.edge, d.edge)


def test_errors():
    data = _graph()
    with pytest.raises(ValueError, match="distinct"):
        _sample(TorchNeighborSampler(data, [1]), [0, 0])
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        _sample(TorchNeighborSampler(data, [1]), [7])
    with pytest.raises(ValueError, match="num_neighbors"):
        TorchNeighborSampler(data, [0])
    with pytest.raises(NotImplementedError, match="seed nodes"):
        TorchNeighborSampler(data, [1]).sample_from_edges(None)
    with pytest.raises(ValueError, match="one fan-out per propagation layer: 2"):
        check_fanout([10], 2, "fanout (--fanout)")
    with pytest.raises(ValueError, match=">= 1 or -1"):
        check_fanout([10, 0], 2)
    assert check_fanout(["3", -1], 2) == [3, -1]
    with pytest.raises(ValueError, match="backend"):
        neighbor_sampler(data, [1], backend="fast")


def test_loader_carries_the_normalised_weights():
    ei = torch.tensor([[0, 0, 1, 2, 2], [0, 1, 1, 1, 2]])  # users 0-2, items 0-2
    adj = bipartite_norm_adj(ei, 3, 3)
    graph = sampling_graph(adj)
    assert graph.deg.tolist() == [2, 1, 2, 1, 3, 1]
    dense = adj.to_dense()
    loader = neighbor_loader(graph, [-1, -1], backend="torch")
    sub = loader(torch.tensor([4, 0]))  # item 1 (degree 3) and user 0
    assert sub.n_id[:2].tolist() == [4, 0] and sub.batch_size == 2
    src, dst = sub.n_id[sub.edge_index]
    assert torch.equal(sub.edge_weight, dense[dst, src])
    assert torch.equal(sub.deg, graph.deg[sub.n_id])
    assert torch.equal(graph.edge_index[:, sub.e_id], torch.stack([src, dst]))
    # layer-wise iteration: every node once as a destination, in order
    chunks = list(neighbor_loader(graph, [-1], backend="torch", batch_size=4))
    assert torch.cat([c.n_id[: c.batch_size] for c in chunks]).tolist() == list(range(6))
    assert sum(c.edge_index.size(1) for c in chunks) == graph.edge_index.size(1)


@pytest.mark.skipif(not pyg_sampler_available(), reason="needs pyg-lib or torch-sparse")
def test_pyg_sampler_agrees_with_full_fanout():
    data = _graph()
    ours = _sample(TorchNeighborSampler(data, [-1, -1]), [0, 4])
    theirs = neighbor_sampler(data, [-1, -1], backend="pyg").sample_from_nodes(
        NodeSamplerInput(None, torch.tensor([0, 4]))
    )
    edges = lambda o: sorted(zip(o.node[o.row].tolist(), o.node[o.col].tolist(), strict=True))  # noqa: E731
    assert edges(ours) == edges(theirs)
    assert set(ours.node.tolist()) == set(theirs.node.tolist())
