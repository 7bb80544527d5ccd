"""Top-K recommendation for users of a trained model, seen items masked.

:func:`recommend` scores through :meth:`~sea_pyg.models.Recommender.score` (the path the
evaluation uses) and masks with :func:`~sea_pyg.train.metrics.mask_items`, so what a user is
recommended is exactly what the metrics rank.

Recommending from a run that is still training or was interrupted: :func:`load_model` warns
(:class:`~sea_pyg.train.UnfinishedRunWarning`: its ``best.pt`` is the best model *so far*) and
records the run's status in ``model.checkpoint["status"]``; :func:`recommend` itself does not
warn again.

At catalogue scale (millions of items) :func:`recommend` scores users in chunks and can search
through PyG's faiss indexes (``index="mips"`` exact, ``"approx"`` approximate; the ``knn``
extra, see :mod:`sea_pyg.nn.mips`) instead of scoring every item.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from sea_pyg.data.mmrec import EDGE_TYPE
from sea_pyg.models.base import Recommender
from sea_pyg.nn import mips
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


def dot_product_model(model: Recommender) -> Recommender | None:
    """The model whose default dot-product scoring ``model`` uses (itself, or a plug-in's
    ``host``), or ``None`` for a model with its own :meth:`~sea_pyg.models.Recommender.score`
    (PAMD): its :meth:`~sea_pyg.models.Recommender.scoring_state` is then
    ``(user_emb (U, d), item_emb^T (d, N))``, the score ``user_emb[u] @ item_emb^T``."""
    while (
        type(model).score is not Recommender.score
        or type(model).scoring_state is not Recommender.scoring_state
    ):
        host = getattr(model, "host", None)
        if not isinstance(host, Recommender):
            return None
        model = host
    return model


def _exact_topk(
    model: Recommender, state: Any, users: Tensor, seen: tuple[Tensor, Tensor] | None, k: int
) -> tuple[Tensor, Tensor]:
    scores = model.score(users, state).float().cpu()
    if seen is not None:
        mask_items(scores, users, *seen)
    return torch.topk(scores, k, dim=1)


def _index_topk(
    model: Recommender,
    users: Tensor,
    seen: tuple[Tensor, Tensor] | None,
    k: int,
    backend: str,
    params: mips.ApproxParams,
    user_chunk: int,
) -> tuple[Tensor, Tensor]:
    """Top-``k`` through a faiss index over the item embeddings. A user whose seen items plus
    the candidates exceed faiss's 2048 results is scored exactly (PyG would cap the search and
    could return fewer than ``k`` unseen items); the others are searched in chunks of users of
    similar seen counts, so that one heavy user does not widen its whole chunk's search."""
    inner = dot_product_model(model)
    if inner is None:
        raise ValueError(
            f"index={backend!r} needs a model that scores by a dot product of user and item "
            f"embeddings; {type(model).__name__} has its own score(): use index='exact'"
        )
    state = inner.scoring_state()
    user_emb = state[0].detach().float().cpu()
    item_emb = state[1].detach().t().float().cpu()
    num_items = item_emb.size(0)
    rerank = params.rerank if backend == "approx" else 1
    cand = min(rerank * k, mips.FAISS_MAX_K, num_items)
    counts = torch.zeros(users.numel(), dtype=torch.long)
    if seen is not None:
        rowptr, items = seen
        counts = rowptr[users + 1] - rowptr[users]
    heavy = (counts + cand > mips.FAISS_MAX_K) | (k > mips.FAISS_MAX_K)
    top_scores = torch.full((users.numel(), k), float("-inf"))
    top_items = torch.full((users.numel(), k), -1, dtype=torch.long)
    rows = heavy.nonzero().view(-1)
    for chunk in rows.split(user_chunk):
        top_scores[chunk], top_items[chunk] = _exact_topk(inner, state, users[chunk], seen, k)
    light = (~heavy).nonzero().view(-1)
    light = light[torch.argsort(counts[light], stable=True)]
    if light.numel():
        index = mips.build_index(item_emb, backend, params)
        exclude = None
        if seen is not None:
            n = counts[light]
            ptr = torch.zeros(light.numel() + 1, dtype=torch.long)
            ptr[1:] = n.cumsum(0)
            start = torch.repeat_interleave(rowptr[users[light]], n)
            offset = torch.arange(int(ptr[-1])) - torch.repeat_interleave(ptr[:-1], n)
            exclude = (ptr, items[start + offset])
        score, item = mips.mips_topk(
            index, item_emb, user_emb[users[light]], k, rerank, exclude, user_chunk
        )
        top_scores[light], top_items[light] = score, item
    return top_scores, top_items


@torch.no_grad()
def recommend(
    model: Recommender,
    data: HeteroData,
    users: Sequence[str | int] | Tensor,
    k: int = 10,
    exclude: str = "train",
    internal_ids: bool = False,
    index: str = "auto",
    index_params: mips.ApproxParams | Mapping[str, Any] | None = None,
    user_chunk: int = 4096,
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
        index: ``"exact"``: score every item (the evaluation's path), ``user_chunk`` users at
            a time; ``"mips"``: exact search through PyG's ``MIPSKNNIndex`` (faiss) over the
            item embeddings, same items up to float32 ties; ``"approx"``: PyG's
            ``ApproxMIPSKNNIndex`` with exact re-ranking of ``index_params.rerank * k``
            candidates (scores exact, candidate set approximate); ``"auto"``: the
            :func:`~sea_pyg.nn.mips.knn_backend` default if set, else ``"exact"`` below
            :data:`~sea_pyg.nn.mips.AUTO_APPROX_MIN_ITEMS` items and ``"approx"`` from there
            on when faiss is installed. Seen items are excluded inside the search (each chunk
            asks for the candidates plus its users' largest seen count, then drops them);
            users whose seen count plus the candidates exceed faiss's 2048 results are scored
            exactly. Models whose score is not a dot product (PAMD) are always scored exactly
            (an error for an explicit ``"mips"`` / ``"approx"``).
        index_params: :class:`~sea_pyg.nn.mips.ApproxParams` (or a dict) for ``"approx"``.
        user_chunk: Users scored (or searched) at once.

    A model from :func:`load_model` that rebuilds item graphs to score (LATTICE, MICRO) does
    so with the :math:`k`-NN backend it was trained with (``model.checkpoint["knn_backend"]``,
    ``TrainConfig.knn_backend``), unless a :func:`~sea_pyg.nn.knn_backend` block is in force.

    Returns:
        A :class:`Recommendations`.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if exclude not in ("train", "all", "none"):
        raise ValueError(f"exclude must be 'train', 'all' or 'none', got {exclude!r}")
    if isinstance(users, Tensor):
        users_index = users.to(torch.long).cpu()
        num_users = int(data["user"].num_nodes)
        if users_index.numel() and (users_index.min() < 0 or users_index.max() >= num_users):
            raise ValueError(f"user indices must lie in 0..{num_users - 1}")
    else:
        users_index = resolve_users(data, users, internal=internal_ids)
    if isinstance(user_chunk, bool) or not isinstance(user_chunk, int) or user_chunk < 1:
        raise ValueError(f"user_chunk must be a positive integer, got {user_chunk!r}")
    num_items = int(data["item"].num_nodes)
    backend, params = mips.resolve_backend(
        "exact" if index == "exact" else _check_index(index), num_items, index_params
    )
    users_u, inverse = torch.unique(users_index, return_inverse=True)  # score each user once
    seen = None
    if exclude != "none":
        store = data[EDGE_TYPE]
        edge_sets = [store.edge_index]
        if exclude == "all":
            edge_sets += [store.val_edge_index, store.test_edge_index]
        edges = torch.cat([e.cpu() for e in edge_sets], dim=1)
        seen = split_csr(edges, int(data["user"].num_nodes))
    kk = min(k, num_items)
    was_training = model.training
    model.eval()
    # LATTICE and MICRO rebuild their item graphs to score: with the k-NN backend they were
    # trained with (load_model records it), unless a knn_backend block is in force
    saved = getattr(model, "checkpoint", None)
    trained = saved.get("knn_backend", "auto") if isinstance(saved, Mapping) else "auto"
    try:
        with mips.knn_scope(trained, inherit=True):
            top_scores, top_items = _top_items(
                model, users_u, seen, kk, backend, index == "auto", params, user_chunk
            )
    finally:
        model.train(was_training)
    masked = top_scores == float("-inf")
    top_items = torch.where(masked, torch.full_like(top_items, -1), top_items)
    index, top_items, top_scores = users_u[inverse], top_items[inverse], top_scores[inverse]
    raw_users, raw_items = raw_ids(data, "user"), raw_ids(data, "item")
    user_ids = [raw_users[u] if raw_users else str(u) for u in index.tolist()]
    item_ids = [
        [raw_items[i] if raw_items else str(i) for i in row if i >= 0] for row in top_items.tolist()
    ]
    return Recommendations(index, top_items, top_scores, user_ids, item_ids)


def _top_items(
    model: Recommender,
    users: Tensor,
    seen: tuple[Tensor, Tensor] | None,
    k: int,
    backend: str,
    auto: bool,
    params: mips.ApproxParams,
    user_chunk: int,
) -> tuple[Tensor, Tensor]:
    """``(scores, items)`` ``(len(users), k)`` of :func:`recommend`, by ``backend``
    (``auto``: ``index="auto"``, so a model that does not score by a dot product is scored
    exactly)."""
    if backend != "exact" and auto and dot_product_model(model) is None:
        backend = "exact"
    if backend == "exact":
        state = model.scoring_state()
        parts = [_exact_topk(model, state, chunk, seen, k) for chunk in users.split(user_chunk)]
        if not parts:
            return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*TypedStorage is deprecated.*")
        return _index_topk(model, users, seen, k, backend, params, user_chunk)


def _check_index(index: str) -> str:
    if index not in ("auto", "exact", "mips", "approx"):
        raise ValueError(f"index must be 'auto', 'exact', 'mips' or 'approx', got {index!r}")
    return index
