"""The linear-time synthetic generator of bench_scale.py."""

import time

import numpy as np
import pytest
import torch

from sea_pyg.data.mmrec import EDGE_TYPE
from sea_pyg.data.scalable import BABY_SIZES, make_scalable, scaled_baby
from sea_pyg.data.split import split_counts


def _all_edges(data):
    s = data[EDGE_TYPE]
    return torch.cat([s.edge_index, s.val_edge_index, s.test_edge_index], 1)


def test_sizes_split_and_no_duplicates():
    data = scaled_baby(0.1, seed=3)
    u, i, e = (round(v * 0.1) for v in BABY_SIZES)
    assert data["user"].num_nodes == u and data["item"].num_nodes == i
    edges = _all_edges(data)
    assert abs(edges.size(1) - e) < 0.1 * e  # about the target
    keys = edges[0] * i + edges[1]
    assert torch.unique(keys).numel() == keys.numel()  # no repeated (user, item)
    per_user = torch.bincount(edges[0], minlength=u)
    assert int(per_user.min()) >= 3
    # the MMRec split per user
    s = data[EDGE_TYPE]
    train, val, test = (torch.bincount(x[0], minlength=u).numpy()
                        for x in (s.edge_index, s.val_edge_index, s.test_edge_index))
    want = split_counts(per_user.numpy())
    assert np.array_equal(train, want[0]) and np.array_equal(val, want[1])
    assert np.array_equal(test, want[2])
    assert torch.equal(data["item", "rated_by", "user"].edge_index, s.edge_index.flip(0))


def test_deterministic_and_seeded():
    a, b, c = scaled_baby(0.05, seed=1), scaled_baby(0.05, seed=1), scaled_baby(0.05, seed=2)
    assert torch.equal(_all_edges(a), _all_edges(b))
    assert not torch.equal(_all_edges(a)[:, :100], _all_edges(c)[:, :100])


@pytest.mark.parametrize("in_cluster", [1.0, 0.8, 0.0])
def test_planted_communities_and_popularity(in_cluster):
    data = make_scalable(2000, 5000, 20000, seed=0, num_clusters=10, in_cluster=in_cluster)
    e = _all_edges(data)
    same = (data["user"].cluster[e[0]] == data["item"].cluster[e[1]]).float().mean().item()
    # in the user's community with probability in_cluster, else by popularity over all items
    # (about a tenth of which falls in the user's community again)
    assert same == pytest.approx(in_cluster + (1 - in_cluster) * 0.1, abs=0.04)
    pop = torch.bincount(e[1], minlength=5000).sort(descending=True).values
    assert pop[:50].sum() > pop[-2500:].sum()  # a long tail: top 1% of items > bottom half


def test_nothing_quadratic():
    t = time.perf_counter()
    data = make_scalable(20_000, 2_000_000, 120_000, seed=0)  # U x I = 4e10 pairs
    assert time.perf_counter() - t < 15
    assert _all_edges(data).size(1) > 100_000


def test_errors():
    with pytest.raises(ValueError, match="num_interactions must be >= 5"):
        make_scalable(100, 100, 10)
    with pytest.raises(ValueError, match="in_cluster"):
        make_scalable(100, 100, 1000, in_cluster=2)
    with pytest.raises(ValueError, match="scale must be > 0"):
        scaled_baby(0)
