"""Top-K recommendation for users of a trained model, seen items masked.

:func:`recommend` scores through :meth:`~sea_pyg.models.Recommender.score` (the path the
evaluation uses) and masks with :func:`~sea_pyg.train.metrics.mask_items`, so what a user is
recommended is exactly what the metrics rank.

Recommending from a run that is still training or was interrupted: :func:`load_model` warns
(:class:`~sea_pyg.train.UnfinishedRunWarning`: its ``best.pt`` is the best model *so far*) and
records the run's status in ``model.checkpoint["status"]``; :func:`recommend` itself does not
warn again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from sea_pyg.data.mmrec import EDGE_TYPE
from sea_pyg.models.base import Recommender
from sea_pyg.train.checkpoint import raw_ids
from sea_pyg.train.metrics import mask_items, split_csr

__all__ = ["resolve_users", "Recommendations", "recommend"]


def resolve_users(data: HeteroData, users: Sequence[str | int], internal: bool = False) -> Tensor:
    """Map user ids to node indices.

    With id maps (``data['user'].raw_id``) and ``internal=False``, ``users`` are original ids
    (``reviewerID``); otherwise they are 0-based ``userID`` s.

    Raises:
        ValueError: naming the unknown ids.
    """
    num_users = int(data["user"].num_nodes)
    raw = raw_ids(data, "user")
    if raw is not None and not internal:
        index = {u: i for i, u in enumerate(raw)}
        bad = [u for u in users if str(u) not in index]
        if bad:
            raise ValueError(
                f"unknown user id(s) {bad[:10]}: not in the dataset's u_id_mapping.csv "
                f"(use internal 0-based userIDs with --internal-ids)"
            )
        return torch.tensor([index[str(u)] for u in users], dtype=torch.long)
    out, bad = [], []
    for u in users:
        try:
            i = int(u)
        except (TypeError, ValueError):
            bad.append(u)
            continue
        if 0 <= i < num_users:
            out.append(i)
        else:
            bad.append(u)
    if bad:
        hint = "" if raw is not None else " (this dataset has no u_id_mapping.csv)"
        raise ValueError(
            f"unknown user id(s) {bad[:10]}: userIDs are integers in 0..{num_users - 1}{hint}"
        )
    return torch.tensor(out, dtype=torch.long)


@dataclass
class Recommendations:
    """Top-K items per user.

    Attributes:
        users: ``(B,)`` user node indices.
        items: ``(B, k)`` item node indices, best first; ``-1`` pads users with fewer than ``k``
            candidate items.
        scores: ``(B, k)`` model scores (``-inf`` where padded).
        user_ids: Original user ids (or the indices as strings).
        item_ids: Per user, the original ids of the recommended items (or indices as strings).
    """

    users: Tensor
    items: Tensor
    scores: Tensor
    user_ids: list[str]
    item_ids: list[list[str]]


@torch.no_grad()
def recommend(
    model: Recommender,
    data: HeteroData,
    users: Sequence[str | int] | Tensor,
    k: int = 10,
    exclude: str = "train",
    internal_ids: bool = False,
) -> Recommendations:
    """Top-``k`` items for ``users``, excluding items they already rated.

    Args:
        model: A trained model (e.g. from :func:`load_model`).
        data: Its dataset.
        users: Original user ids (when the dataset has id maps), or 0-based user indices (a
            tensor, or with ``internal_ids=True``).
        k: Items per user.
        exclude: ``"train"``: mask the user's training items (the protocol's masking);
            ``"all"``: mask training, validation and test items; ``"none"``: mask nothing.
        internal_ids: Read ``users`` as 0-based indices even when id maps exist.

    Returns:
        A :class:`Recommendations`.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if exclude not in ("train", "all", "none"):
        raise ValueError(f"exclude must be 'train', 'all' or 'none', got {exclude!r}")
    if isinstance(users, Tensor):
        index = users.to(torch.long).cpu()
        num_users = int(data["user"].num_nodes)
        if index.numel() and (index.min() < 0 or index.max() >= num_users):
            raise ValueError(f"user indices must lie in 0..{num_users - 1}")
    else:
        index = resolve_users(data, users, internal=internal_ids)
    num_items = int(data["item"].num_nodes)
    index, inverse = torch.unique(index, return_inverse=True)  # score each user once
    was_training = model.training
    model.eval()
    try:
        scores = model.score(index).float().cpu()
    finally:
        model.train(was_training)
    if exclude != "none":
        store = data[EDGE_TYPE]
        edge_sets = [store.edge_index]
        if exclude == "all":
            edge_sets += [store.val_edge_index, store.test_edge_index]
        edges = torch.cat([e.cpu() for e in edge_sets], dim=1)
        rowptr, items = split_csr(edges, int(data["user"].num_nodes))
        mask_items(scores, index, rowptr, items)
    kk = min(k, num_items)
    top_scores, top_items = torch.topk(scores, kk, dim=1)
    masked = top_scores == float("-inf")
    top_items = torch.where(masked, torch.full_like(top_items, -1), top_items)
    index, top_items, top_scores = index[inverse], top_items[inverse], top_scores[inverse]
    raw_users, raw_items = raw_ids(data, "user"), raw_ids(data, "item")
    user_ids = [raw_users[u] if raw_users else str(u) for u in index.tolist()]
    item_ids = [
        [raw_items[i] if raw_items else str(i) for i in row if i >= 0] for row in top_items.tolist()
    ]
    return Recommendations(index, top_items, top_scores, user_ids, item_ids)
