r"""Synthetic interaction graphs at any scale, in time and memory linear in the interactions.

:func:`~sea_pyg.data.make_synthetic` scores every (user, item) pair (in chunks, but
:math:`O(UI)` work): right for the Amazon sizes, hopeless at millions of users. This generator
never touches a user-item pair it does not emit: :math:`O(E \log I + U + I)` time and
:math:`O(E + U + I)` memory for :math:`E` interactions. It plants the two things a
collaborative model exploits:

* **popularity**: item :math:`i` has weight :math:`w_i = r_i^{-\alpha}` (:math:`r` a random
  permutation of :math:`1..I`, :math:`\alpha` = ``popularity_skew``), a Zipf-like long tail;
* **communities**: items and users fall into ``num_clusters`` clusters uniformly at random;
  each interaction of a user is, with probability ``in_cluster``, drawn from its own cluster's
  items by popularity, else from all items by popularity.

User :math:`u` draws :math:`n_u = 5 + \mathrm{Geometric}` interactions (mean
``num_interactions / U``, so the total is about ``num_interactions``). Draws are done for all
users at once by inverse-CDF sampling (one ``searchsorted`` into the cumulative weights of the
cluster-sorted items), with an over-draw; duplicate (user, item) pairs are dropped, keeping the
first ``n_u`` distinct items of each user (a user left with fewer than 3 is topped up with
uniform items: at least 3 each, enough for the MMRec
split :func:`~sea_pyg.data.split.split_per_user`). There are no item features (LightGCN/MF
benchmarks); the communities are kept as ``data["user"].cluster`` and ``data["item"].cluster``.
:func:`scaled_baby` gives Amazon Baby's sizes times a factor.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import HeteroData

from sea_pyg.data.mmrec import EDGE_TYPE, REV_EDGE_TYPE
from sea_pyg.data.split import split_per_user

__all__ = ["BABY_SIZES", "make_scalable", "scaled_baby"]

#: Amazon Baby (MMRec): users, items, interactions (all splits).
BABY_SIZES = (19_445, 7_050, 160_792)


def _draw(rng: np.random.Generator, cum: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Indices ``j`` with probability proportional to ``cum[j] - cum[j - 1]`` restricted to the
    cumulative range ``(lo, hi]`` of each draw."""
    r = lo + rng.random(lo.size) * (hi - lo)
    return np.minimum(np.searchsorted(cum, r, side="right"), cum.size - 1)


def make_scalable(
    num_users: int,
    num_items: int,
    num_interactions: int,
    seed: int = 0,
    num_clusters: int = 64,
    in_cluster: float = 0.8,
    popularity_skew: float = 0.8,
    name: str | None = None,
) -> HeteroData:
    """An MMRec-layout dataset (train/valid/test edges, no features), see the module.

    Args:
        num_users: ``U``.
        num_items: ``I`` (unpopular items may get no interaction).
        num_interactions: Target total ``E`` (met on average, not exactly); at least ``5 U``.
        seed: Seeds everything.
        num_clusters: Communities of users and items.
        in_cluster: Probability that an interaction stays in the user's community.
        popularity_skew: Zipf exponent of the item popularity.
        name: Dataset name (default ``scalable-<U>x<I>``).

    Raises:
        ValueError: impossible sizes (the message names the argument).
    """
    if num_users < 1 or num_items < 10:
        raise ValueError(
            f"num_users must be >= 1 and num_items >= 10, got {num_users}, {num_items}"
        )
    if num_interactions < 5 * num_users:
        raise ValueError(
            f"num_interactions must be >= 5 * num_users ({5 * num_users}), got {num_interactions}"
        )
    if not 0.0 <= in_cluster <= 1.0:
        raise ValueError(f"in_cluster must lie in [0, 1], got {in_cluster}")
    rng = np.random.default_rng(seed)
    clusters = max(1, min(int(num_clusters), num_items // 50))  # >= 50 items each
    # items: popularity weight and community, sorted by community for the inverse CDF
    weight = rng.permutation(num_items).astype(np.float64) + 1.0
    weight = weight ** (-popularity_skew)
    item_cluster = rng.integers(clusters, size=num_items)
    order = np.argsort(item_cluster, kind="stable")
    cum = np.cumsum(weight[order])
    bounds = np.searchsorted(item_cluster[order], np.arange(clusters + 1), side="left")
    start = np.concatenate([[0.0], cum])[bounds[:-1]]
    stop = np.concatenate([[0.0], cum])[bounds[1:]]
    # users: community and count
    user_cluster = rng.integers(clusters, size=num_users)
    mean_extra = num_interactions / num_users - 5.0
    counts = 5 + (rng.geometric(1.0 / (mean_extra + 1.0), size=num_users) - 1)
    counts = np.minimum(counts, num_items // 2)
    # over-draw, then keep each user's first `count` distinct items
    draws = np.repeat(np.arange(num_users), np.ceil(counts * 1.3).astype(np.int64) + 2)
    local = rng.random(draws.size) < in_cluster
    c = user_cluster[draws]
    lo = np.where(local, start[c], 0.0)
    hi = np.where(local, stop[c], cum[-1])
    items = order[_draw(rng, cum, lo, hi)]
    keys = draws.astype(np.int64) * num_items + items
    _, first = np.unique(keys, return_index=True)
    first.sort()  # back in draw order (users ascending, random items inside each)
    users, items = draws[first], items[first]
    rank = np.arange(users.size) - np.searchsorted(users, users, side="left")
    keep = rank < counts[users]
    users, items = users[keep], items[keep]
    per_user = np.bincount(users, minlength=num_users)
    while int(per_user.min()) < 3:  # rare: top up with uniform items until 3 distinct each
        short = np.flatnonzero(per_user < 3)
        extra_u = np.repeat(short, 3)
        extra_i = rng.integers(num_items, size=extra_u.size)
        keys = np.concatenate(
            [
                users.astype(np.int64) * num_items + items,
                extra_u.astype(np.int64) * num_items + extra_i,
            ]
        )
        keys = np.sort(keys)
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
        users, items = keys // num_items, keys % num_items
        per_user = np.bincount(users, minlength=num_users)
    labels = split_per_user(users, seed)
    data = HeteroData()
    data.name = name or f"scalable-{num_users}x{num_items}"
    data.modalities = []
    data["user"].num_nodes = int(num_users)
    data["item"].num_nodes = int(num_items)
    split = {}
    for label in (0, 1, 2):
        m = labels == label
        split[label] = torch.from_numpy(np.stack([users[m], items[m]]).astype(np.int64))
    data["user"].cluster = torch.from_numpy(user_cluster.astype(np.int64))
    data["item"].cluster = torch.from_numpy(item_cluster.astype(np.int64))
    data[EDGE_TYPE].edge_index = split[0]
    data[REV_EDGE_TYPE].edge_index = split[0].flip(0)
    data[EDGE_TYPE].val_edge_index = split[1]
    data[EDGE_TYPE].test_edge_index = split[2]
    return data


def scaled_baby(scale: float, seed: int = 0, **kwargs) -> HeteroData:
    """:func:`make_scalable` at ``scale`` times Amazon Baby's users, items and interactions
    (19,445 / 7,050 / 160,792 at 1x)."""
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    u, i, e = (max(1, round(v * scale)) for v in BABY_SIZES)
    return make_scalable(
        max(u, 1),
        max(i, 10),
        max(e, 5 * u),
        seed=seed,
        name=kwargs.pop("name", f"baby-x{scale:g}"),
        **kwargs,
    )
