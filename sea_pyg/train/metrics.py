r"""Full-sort top-K ranking evaluation under the MMRec protocol.

For an evaluated user :math:`u` with held-out item set :math:`P_u` and top-K list whose
rank-:math:`j` item (1-based) is a hit when :math:`h_u(j) = 1`:

.. math::
    \mathrm{Recall@K} &= \frac{1}{|P_u|} \sum_{j \le K} h_u(j) \qquad
        \text{(denominator not capped by } K)

    \mathrm{Precision@K} &= \frac{1}{K} \sum_{j \le K} h_u(j)

    \mathrm{NDCG@K} &= \frac{\sum_{j \le K} h_u(j) / \log_2(j + 1)}
        {\sum_{i=1}^{\min(|P_u|, K)} 1 / \log_2(i + 1)}

    \mathrm{MAP@K} &= \frac{1}{\min(|P_u|, K)} \sum_{j \le K} \mathrm{Precision@}j \cdot h_u(j)

Each metric is averaged uniformly over the users that have at least one held-out item in the
split. Scores cover **all** items; only the user's **training** items are masked (at test time,
validation items stay candidates and count as misses, as in MMRec). Ties in the scores are broken
by :func:`torch.topk`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "METRICS",
    "ranking_metrics",
    "evaluate_ranking",
    "evaluate_ranking_per_user",
    "PerUserRanking",
    "full_sort_topk",
    "mask_items",
    "split_csr",
]

METRICS = ("recall", "ndcg", "precision", "map")


def ranking_metrics(
    hits: Tensor,
    num_pos: Tensor,
    ks: Sequence[int],
    metrics: Sequence[str] = METRICS,
    *,
    check_values: bool = True,
) -> dict[str, Tensor]:
    r"""Per-user ranking metrics from a hit matrix.

    Args:
        hits: ``(B, K_max)`` boolean/0-1 matrix, ``hits[u, j]`` says whether the item ranked
            ``j + 1`` for user ``u`` is one of the user's held-out items.
        num_pos: ``(B,)`` number of held-out items :math:`|P_u|` of each user (all > 0).
        ks: Cut-offs, each ``<= K_max``.
        metrics: Names among ``recall``, ``ndcg``, ``precision``, ``map``.
        check_values: Check ``num_pos > 0`` (reads the values: a host synchronisation on an
            accelerator); the evaluation loop, whose users all have held-out items, skips it.

    Returns:
        ``{f"{metric}@{k}": (B,) float64 tensor}``.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    if hits.dim() != 2 or num_pos.dim() != 1 or hits.size(0) != num_pos.size(0):
        raise ValueError(
            f"`hits` must be (B, K) and `num_pos` (B,), got {tuple(hits.shape)} and "
            f"{tuple(num_pos.shape)}"
        )
    if check_values and bool((num_pos <= 0).any()):
        raise ValueError("every evaluated user needs at least one held-out item (num_pos > 0)")
    kmax = hits.size(1)
    if any(k < 1 or k > kmax for k in ks):
        raise ValueError(f"cut-offs {list(ks)} must lie in [1, {kmax}] (the hit matrix width)")
    h = hits.to(torch.float64)
    n = num_pos.to(torch.float64)
    device = h.device
    ranks = torch.arange(1, kmax + 1, device=device, dtype=torch.float64)
    discount = 1.0 / torch.log2(ranks + 1.0)
    cum_hits = h.cumsum(dim=1)
    dcg_cum = (h * discount).cumsum(dim=1)
    ideal_cum = discount.cumsum(dim=0)
    ap_terms = (cum_hits / ranks) * h
    ap_cum = ap_terms.cumsum(dim=1)

    out: dict[str, Tensor] = {}
    for k in ks:
        capped = torch.clamp(num_pos, max=k).to(torch.long)  # min(|P_u|, K) >= 1
        for m in metrics:
            if m == "recall":
                v = cum_hits[:, k - 1] / n
            elif m == "precision":
                v = cum_hits[:, k - 1] / k
            elif m == "ndcg":
                v = dcg_cum[:, k - 1] / ideal_cum[capped - 1]
            else:  # map
                v = ap_cum[:, k - 1] / capped.to(torch.float64)
            out[f"{m}@{k}"] = v
    return out


def split_csr(edge_index: Tensor, num_users: int) -> tuple[Tensor, Tensor]:
    """Group a ``(2, E)`` user-item edge list by user: ``(rowptr (U+1,), items sorted by user)``.

    Duplicate pairs are collapsed (held-out items form a set).
    """
    num_items = int(edge_index[1].max()) + 1 if edge_index.numel() else 1
    keys = torch.unique(edge_index[0] * num_items + edge_index[1])
    users, items = keys // num_items, keys % num_items
    counts = torch.bincount(users, minlength=num_users)
    rowptr = torch.zeros(num_users + 1, dtype=torch.long, device=edge_index.device)
    rowptr[1:] = counts.cumsum(0)
    return rowptr, items


def mask_items(scores: Tensor, users: Tensor, rowptr: Tensor, items: Tensor) -> Tensor:
    """Sets ``scores[b, i] = -inf`` for every item ``i`` of user ``users[b]`` (in place).

    Args:
        scores: ``(B, N)`` scores of the users ``users`` over all items.
        users: ``(B,)`` user ids of the rows.
        rowptr, items: Items per user from :func:`split_csr` (e.g. the training items).

    Returns:
        ``scores``.
    """
    rowptr, items = rowptr.to(scores.device), items.to(scores.device)
    users = users.to(scores.device)
    start, end = rowptr[users], rowptr[users + 1]
    counts = end - start
    total = int(counts.sum())  # the one host synchronisation: the number of masked entries
    if total > 0:
        row = torch.repeat_interleave(
            torch.arange(users.numel(), device=scores.device), counts, output_size=total
        )
        offsets = torch.arange(total, device=scores.device) - torch.repeat_interleave(
            counts.cumsum(0) - counts, counts, output_size=total
        )
        cols = items[torch.repeat_interleave(start, counts, output_size=total) + offsets]
        scores[row, cols] = float("-inf")
    return scores


def full_sort_topk(
    scores: Tensor,
    users: Tensor,
    train_rowptr: Tensor,
    train_items: Tensor,
    k: int,
) -> Tensor:
    """Top-``k`` item indices per row of ``scores`` after masking each user's training items
    (:func:`mask_items`).

    Args:
        scores: ``(B, N)`` scores of the users ``users`` over all items (modified in place).
        users: ``(B,)`` user ids of the rows.
        train_rowptr, train_items: Training items per user from :func:`split_csr`.
        k: Number of items to return.
    """
    mask_items(scores, users, train_rowptr, train_items)
    return torch.topk(scores, k=min(k, scores.size(1)), dim=1).indices


class PerUserRanking(NamedTuple):
    """What :func:`evaluate_ranking_per_user` returns.

    Attributes:
        means: ``{f"{metric}@{k}": mean over the evaluated users}`` (exactly the floats
            :func:`evaluate_ranking` returns).
        users: ``(n,)`` ids of the evaluated users (those with a held-out item), ascending.
        values: ``{f"{metric}@{k}": (n,) float64 tensor}``, row ``j`` for ``users[j]``.
    """

    means: dict[str, float]
    users: Tensor
    values: dict[str, Tensor]


@torch.no_grad()
def evaluate_ranking(
    score_fn: Callable[[Tensor], Tensor],
    eval_edge_index: Tensor,
    train_edge_index: Tensor,
    num_users: int,
    num_items: int,
    ks: Sequence[int] = (10, 20),
    metrics: Sequence[str] = METRICS,
    chunk_size: int = 4096,
) -> dict[str, float]:
    """Full-sort ranking metrics of a split, users processed in chunks.

    Memory is bounded by ``chunk_size * num_items`` scores.

    Args:
        score_fn: Maps a ``(B,)`` tensor of user ids to their ``(B, num_items)`` scores.
        eval_edge_index: ``(2, E)`` held-out (user, item) pairs of the split.
        train_edge_index: ``(2, E)`` training pairs; these items are masked per user.
        num_users, num_items: Graph sizes.
        ks: Cut-offs.
        metrics: Metric names (see :data:`METRICS`).
        chunk_size: Users scored at once.

    Returns:
        ``{f"{metric}@{k}": mean over evaluated users}`` as Python floats (not rounded).
    """
    return _evaluate(
        score_fn, eval_edge_index, train_edge_index, num_users, num_items, ks, metrics,
        chunk_size, keep=False,
    ).means


@torch.no_grad()
def evaluate_ranking_per_user(
    score_fn: Callable[[Tensor], Tensor],
    eval_edge_index: Tensor,
    train_edge_index: Tensor,
    num_users: int,
    num_items: int,
    ks: Sequence[int] = (10, 20),
    metrics: Sequence[str] = METRICS,
    chunk_size: int = 4096,
) -> PerUserRanking:
    """:func:`evaluate_ranking` that also keeps each evaluated user's metrics (on the CPU),
    e.g. for a paired significance test between two models (:mod:`sea_pyg.train.significance`).

    The arguments are :func:`evaluate_ranking`'s; ``means`` are the same floats it returns
    (summed chunk by chunk in the same order), and ``values[name].mean()`` equals
    ``means[name]`` up to the rounding of the summation order.
    """
    return _evaluate(
        score_fn, eval_edge_index, train_edge_index, num_users, num_items, ks, metrics,
        chunk_size, keep=True,
    )


def _evaluate(
    score_fn: Callable[[Tensor], Tensor],
    eval_edge_index: Tensor,
    train_edge_index: Tensor,
    num_users: int,
    num_items: int,
    ks: Sequence[int],
    metrics: Sequence[str],
    chunk_size: int,
    keep: bool,
) -> PerUserRanking:
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}")
    device = eval_edge_index.device
    pos_rowptr, pos_items = split_csr(eval_edge_index, num_users)
    tr_rowptr, tr_items = split_csr(train_edge_index.to(device), num_users)
    num_pos_all = pos_rowptr[1:] - pos_rowptr[:-1]
    eval_users = (num_pos_all > 0).nonzero().view(-1)
    if eval_users.numel() == 0:
        raise ValueError("the evaluation split has no user with a held-out item")
    kmax = max(ks)
    if kmax > num_items:
        raise ValueError(f"max cut-off {kmax} exceeds the number of items {num_items}")
    pos_keys = _user_item_keys(pos_rowptr, pos_items, num_items)
    names = [f"{m}@{k}" for k in ks for m in metrics]
    # Sums stay on the device (float64, the same additions as Python floats): one host
    # transfer at the end, not one per chunk and metric.
    sums = torch.zeros(len(names), dtype=torch.float64, device=device)
    kept: dict[str, list[Tensor]] = {name: [] for name in names}
    for start in range(0, eval_users.numel(), chunk_size):
        users = eval_users[start : start + chunk_size]
        scores = score_fn(users)
        if scores.shape != (users.numel(), num_items):
            raise ValueError(
                f"score_fn returned shape {tuple(scores.shape)}, expected "
                f"({users.numel()}, {num_items})"
            )
        scores = scores.clone() if not scores.is_contiguous() else scores
        topk = full_sort_topk(scores, users, tr_rowptr, tr_items, kmax)
        # hits: is topk[u, j] among the user's held-out items? (sorted keys + searchsorted)
        keys = users.unsqueeze(1) * num_items + topk
        idx = torch.searchsorted(pos_keys, keys.reshape(-1)).clamp_(max=pos_keys.numel() - 1)
        hits = (pos_keys[idx] == keys.reshape(-1)).view_as(topk)
        per_user = ranking_metrics(hits, num_pos_all[users], ks, metrics, check_values=False)
        sums += torch.stack([per_user[name].sum().to(torch.float64) for name in names])
        if keep:
            for name in names:
                kept[name].append(per_user[name])
    n = eval_users.numel()
    means = {name: total / n for name, total in zip(names, sums.tolist(), strict=True)}
    if not keep:
        return PerUserRanking(means, eval_users.new_empty(0), {})
    values = {name: torch.cat(parts).cpu() for name, parts in kept.items()}
    return PerUserRanking(means, eval_users.cpu(), values)


def _user_item_keys(rowptr: Tensor, items: Tensor, num_items: int) -> Tensor:
    users = torch.repeat_interleave(
        torch.arange(rowptr.numel() - 1, device=rowptr.device), rowptr[1:] - rowptr[:-1]
    )
    return users * num_items + items  # sorted, since split_csr sorts by (user, item)
