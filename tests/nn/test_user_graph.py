import math

import pytest
import torch

from sea_pyg.nn import UserCooccurrenceGraph, user_cooccurrence_graph
from sea_pyg.nn.user_graph import sample_user_neighbors

pytestmark = pytest.mark.usefixtures("one_thread")

# 6 users, 4 items; (1, 0) twice (binarised away); user 4 has no interaction.
#   u0: {0, 1, 2}   u1: {0, 1}   u2: {2, 3}   u3: {3}   u4: {}   u5: {1}
EDGES = torch.tensor([[0, 0, 0, 1, 1, 1, 2, 2, 3, 5], [0, 1, 2, 0, 1, 0, 2, 3, 3, 1]])
# shared items: c01 = 2, c02 = 1, c05 = 1, c15 = 1, c23 = 1, all others 0
LISTS = {
    0: [(1, 2), (2, 1), (5, 1)],  # the tie 2 / 5 at count 1: smaller id first
    1: [(0, 2), (5, 1)],
    2: [(0, 1), (3, 1)],
    3: [(2, 1)],
    4: [],
    5: [(0, 1), (1, 1)],
}


def _as_lists(neighbors, counts, num_users):
    out = {u: [] for u in range(num_users)}
    for (u, v), c in zip(neighbors.t().tolist(), counts.tolist(), strict=True):
        out[u].append((v, c))
    return out


def _dense_reference(edges, num_users, num_items, max_neighbors):
    r = torch.zeros(num_users, num_items)
    r[edges[0], edges[1]] = 1.0
    c = r @ r.t()
    c.fill_diagonal_(0)
    out = {}
    for u in range(num_users):
        nz = [v for v in range(num_users) if c[u, v] > 0]
        nz.sort(key=lambda v: (-c[u, v].item(), v))
        out[u] = [(v, int(c[u, v])) for v in nz[:max_neighbors]]
    return out


def test_cooccurrence_lists_hand_computed():
    nbr, cnt = user_cooccurrence_graph(EDGES, 6, 4)
    assert nbr.dtype == torch.long and cnt.dtype == torch.long
    assert _as_lists(nbr, cnt, 6) == LISTS
    # cut after max_neighbors, the tie broken by id
    nbr, cnt = user_cooccurrence_graph(EDGES, 6, 4, max_neighbors=2)
    assert _as_lists(nbr, cnt, 6)[0] == [(1, 2), (2, 1)]
    nbr, cnt = user_cooccurrence_graph(EDGES, 6, 4, max_neighbors=1)
    assert _as_lists(nbr, cnt, 6) == {u: lst[:1] for u, lst in LISTS.items()}


@pytest.mark.parametrize("chunk_pairs", [1, 37, 1 << 30])
def test_chunked_products_match_a_dense_reference(chunk_pairs):
    g = torch.Generator().manual_seed(0)
    num_users, num_items = 120, 30
    edges = torch.stack(
        [
            torch.randint(0, num_users, (700,), generator=g),
            torch.randint(0, num_items, (700,), generator=g),
        ]
    )
    nbr, cnt = user_cooccurrence_graph(edges, num_users, num_items, 9, chunk_pairs)
    assert _as_lists(nbr, cnt, num_users) == _dense_reference(edges, num_users, num_items, 9)
    assert bool((nbr[0, 1:] >= nbr[0, :-1]).all())  # grouped by user
    full, _ = user_cooccurrence_graph(edges, num_users, num_items, None, chunk_pairs)
    assert full.size(1) == int((_dense_counts(edges, num_users, num_items) > 0).sum())


def _dense_counts(edges, num_users, num_items):
    r = torch.zeros(num_users, num_items)
    r[edges[0], edges[1]] = 1.0
    c = r @ r.t()
    return c.fill_diagonal_(0)


def test_chunks_respect_the_pair_budget(monkeypatch):
    """Each sparse product covers a block of users whose (user, co-user, item) triples stay
    within the budget, unless the block is a single user: never a U x U matrix."""
    g = torch.Generator().manual_seed(1)
    edges = torch.stack(
        [torch.randint(0, 200, (900,), generator=g), torch.randint(0, 40, (900,), generator=g)]
    )
    keys = torch.unique(edges[0] * 40 + edges[1])
    deg_i = torch.bincount(keys % 40, minlength=40)
    assert int(deg_i[keys % 40].sum()) > 10 * 300  # the budget must force many chunks
    seen = []
    real = torch.sparse.mm

    def spy(a, b):
        seen.append((a.size(0), int(deg_i[a.coalesce().indices()[1]].sum())))
        return real(a, b)

    monkeypatch.setattr(torch.sparse, "mm", spy)
    nbr, cnt = user_cooccurrence_graph(edges, 200, 40, chunk_pairs=300)
    assert len(seen) > 10
    assert all(triples <= 300 or rows == 1 for rows, triples in seen), seen
    assert sum(rows for rows, _ in seen) <= 200
    assert _as_lists(nbr, cnt, 200) == _dense_reference(edges, 200, 40, 200)


def test_sample_hand_computed():
    nbr, cnt = user_cooccurrence_graph(EDGES, 6, 4)
    index, weight = sample_user_neighbors(nbr, cnt, 6, num_neighbors=2)
    s = 1 / (1 + math.e)  # softmax([2, 1]) = (e / (1 + e), 1 / (1 + e))
    assert index.tolist()[:3] == [[1, 2], [0, 5], [0, 3]]
    assert torch.allclose(weight[:3], torch.tensor([[1 - s, s], [1 - s, s], [0.5, 0.5]]))
    # user 3 has one neighbour: padded with copies of it; user 4 has none: weight 0
    assert index[3].tolist() == [2, 2] and weight[3].tolist() == [0.5, 0.5]
    assert index[4].tolist() == [4, 4] and weight[4].tolist() == [0.0, 0.0]
    assert index[5].tolist() == [0, 1] and weight[5].tolist() == [0.5, 0.5]
    _, mean = sample_user_neighbors(nbr, cnt, 6, num_neighbors=2, weighting="mean")
    assert mean.tolist() == [[0.5, 0.5]] * 4 + [[0.0, 0.0]] + [[0.5, 0.5]]


def test_padding_is_a_polya_urn_and_softmax_counts_copies():
    # every user has the same two neighbours with counts (3, 1); k = 4 pads two slots
    num_users = 3000
    users = torch.arange(num_users).repeat_interleave(2)
    nbr = torch.stack([users, torch.tensor([0, 1]).repeat(num_users)])
    cnt = torch.tensor([3, 1]).repeat(num_users)
    g = torch.Generator().manual_seed(0)
    index, weight = sample_user_neighbors(nbr, cnt, num_users, 4, generator=g)
    assert index[:, :2].tolist() == [[0, 1]] * num_users  # the lists come first
    mult = (index == 0).sum(1)  # copies of neighbour 0: 1, 2 or 3
    freq = torch.bincount(mult, minlength=4)[1:].float() / num_users
    # Polya urn from (1, 1): each split (1, 3), (2, 2), (3, 1) with probability 1/3 (an
    # independent uniform padding would give 1/4, 1/2, 1/4)
    assert torch.allclose(freq, torch.full((3,), 1 / 3), atol=0.03), freq
    # softmax over the padded counts: neighbour 0 gets m e^3 / (m e^3 + (4 - m) e)
    w0 = (weight * (index == 0)).sum(1)
    m = mult.float()
    assert torch.allclose(w0, m * math.e**3 / (m * math.e**3 + (4 - m) * math.e), atol=1e-6)
    # the same generator state gives the same sample
    again, _ = sample_user_neighbors(
        nbr, cnt, num_users, 4, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(index, again)


def _hand_w():
    """W of the k = 2 softmax sample above (deterministic: no user needs a random copy)."""
    s = 1 / (1 + math.e)
    w = torch.zeros(6, 6)
    w[0, 1], w[0, 2] = 1 - s, s
    w[1, 0], w[1, 5] = 1 - s, s
    w[2, 0], w[2, 3] = 0.5, 0.5
    w[3, 2] = 1.0  # two copies of user 2
    w[5, 0], w[5, 1] = 0.5, 0.5
    return w


def test_module_forward_and_backward_hand_computed():
    graph = UserCooccurrenceGraph(EDGES, 6, 4, num_neighbors=2)
    assert list(graph.parameters()) == []
    w = _hand_w()
    assert torch.allclose(graph.adjacency().to_dense(), w)
    x = torch.arange(12.0).reshape(6, 2).requires_grad_()
    y = graph(x)
    assert torch.allclose(y, w @ x.detach())
    assert torch.allclose(y[4], torch.zeros(2))  # no neighbour: nothing aggregated
    g = torch.randn(6, 2)
    y.backward(g)
    assert torch.allclose(x.grad, w.t() @ g)


def test_sample_is_saved_and_restored():
    torch.manual_seed(0)
    a = UserCooccurrenceGraph(EDGES, 6, 4, num_neighbors=5)  # every user needs copies
    assert set(a.state_dict()) == {"index", "weight"}  # the lists are rebuilt, not saved
    torch.manual_seed(1)
    b = UserCooccurrenceGraph(EDGES, 6, 4, num_neighbors=5)
    samples = set()
    for seed in range(8):
        b.resample(torch.Generator().manual_seed(seed))
        samples.add(tuple(b.index.flatten().tolist()))
    assert len(samples) > 1  # the padding is random
    x = torch.randn(6, 3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.index, a.index) and torch.equal(b(x), a(x))
    assert torch.allclose(b.weight.sum(1), torch.tensor([1.0, 1, 1, 1, 0, 1]))


def test_clear_errors():
    with pytest.raises(ValueError, match="num_neighbors"):
        UserCooccurrenceGraph(EDGES, 6, 4, num_neighbors=0)
    with pytest.raises(ValueError, match="weighting"):
        UserCooccurrenceGraph(EDGES, 6, 4, weighting="sum")
    with pytest.raises(ValueError, match="max_neighbors"):
        user_cooccurrence_graph(EDGES, 6, 4, max_neighbors=0)
    with pytest.raises(ValueError, match="user ids outside"):
        user_cooccurrence_graph(EDGES, 5, 4)
    nbr, cnt = user_cooccurrence_graph(EDGES, 6, 4)
    with pytest.raises(ValueError, match="grouped by user"):
        sample_user_neighbors(nbr.flip(1), cnt, 6)
    with pytest.raises(ValueError, match="one value per neighbour"):
        sample_user_neighbors(nbr, cnt[:-1], 6)
    with pytest.raises(ValueError, match=r"shape \(6, d\)"):
        UserCooccurrenceGraph(EDGES, 6, 4)(torch.zeros(5, 2))
