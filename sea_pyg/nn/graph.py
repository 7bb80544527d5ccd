r"""Operations on the user-item interaction graph itself (rather than on node features).

* :func:`unique_edges`: collapse duplicate ``(user, item)`` pairs, in a canonical order.
* :func:`degree_sensitive_edge_weights`: the per-edge weight
  :math:`1/\sqrt{(d_u + \epsilon)(d_i + \epsilon)}` of a user-item graph.
* :func:`degree_sensitive_edge_pruning`: FREEDOM's degree-sensitive edge pruning, which keeps a
  random subset of edges, drawn without replacement with probabilities proportional to those
  weights, so that edges between low-degree nodes are more likely to survive.

The kept edges are meant to be re-normalised with their own degrees by
:func:`~sea_pyg.nn.bipartite_norm_adj`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "unique_edges",
    "degree_sensitive_edge_weights",
    "degree_sensitive_edge_pruning",
]


def _check_bipartite(edge_index: Tensor, num_users: int, num_items: int) -> None:
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.size(0) != 2:
        shape = tuple(edge_index.shape) if isinstance(edge_index, Tensor) else None
        raise ValueError(f"`edge_index` must have shape (2, E), got {shape}")
    if edge_index.is_floating_point() or edge_index.dtype == torch.bool:
        raise ValueError(f"`edge_index` must hold integer ids, got dtype {edge_index.dtype}")
    if edge_index.numel():
        users, items = edge_index[0], edge_index[1]
        if int(users.min()) < 0 or int(users.max()) >= num_users:
            raise ValueError("`edge_index` holds user ids outside [0, num_users)")
        if int(items.min()) < 0 or int(items.max()) >= num_items:
            raise ValueError("`edge_index` holds item ids outside [0, num_items)")


def unique_edges(edge_index: Tensor, num_users: int, num_items: int) -> Tensor:
    """The distinct ``(user, item)`` pairs of ``edge_index``, sorted by user then item.

    This is the edge set of the binarised training graph that
    :func:`~sea_pyg.nn.bipartite_norm_adj` normalises (``binarize=True``).

    Args:
        edge_index: ``(2, E)`` interactions, row 0 user ids, row 1 item ids.
        num_users: ``U``.
        num_items: ``N``.

    Returns:
        A ``(2, E')`` long tensor, ``E' <= E``.
    """
    _check_bipartite(edge_index, num_users, num_items)
    keys = torch.unique(edge_index[0].long() * num_items + edge_index[1].long())
    return torch.stack([keys // num_items, keys % num_items])


def degree_sensitive_edge_weights(
    edge_index: Tensor,
    num_users: int,
    num_items: int,
    eps: float = 1e-7,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Per-edge weights :math:`w_{ui} = 1 / \sqrt{(d_u + \epsilon)(d_i + \epsilon)}`.

    :math:`d_u` and :math:`d_i` are the degrees of the user and the item in ``edge_index``
    (each column counts once, so duplicate pairs count as separate edges; pass
    :func:`unique_edges` for the binarised graph). These are the values of the symmetric
    normalised adjacency on the user-to-item edges, and FREEDOM's pruning probabilities up to
    a constant.

    Args:
        edge_index: ``(2, E)`` interactions, row 0 user ids, row 1 item ids.
        num_users: ``U``.
        num_items: ``N``.
        eps: Added to every degree (MMRec: ``1e-7``).
        dtype: Value dtype.

    Returns:
        A ``(E,)`` tensor on the device of ``edge_index``.
    """
    _check_bipartite(edge_index, num_users, num_items)
    users, items = edge_index[0].long(), edge_index[1].long()
    ones = torch.ones(users.numel(), dtype=dtype, device=edge_index.device)
    deg_u = torch.zeros(num_users, dtype=dtype, device=edge_index.device).index_add_(0, users, ones)
    deg_i = torch.zeros(num_items, dtype=dtype, device=edge_index.device).index_add_(0, items, ones)
    return (deg_u[users] + eps).pow(-0.5) * (deg_i[items] + eps).pow(-0.5)


def degree_sensitive_edge_pruning(
    edge_index: Tensor,
    num_users: int,
    num_items: int,
    dropout: float,
    weights: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""FREEDOM's degree-sensitive edge pruning of a user-item graph.

    Keeps :math:`K = \lfloor E\,(1 - p) \rfloor` of the :math:`E` edges, drawn **without
    replacement** (``torch.multinomial``) with probabilities

    .. math::
        \pi_{ui} \propto \frac{1}{\sqrt{(d_u + \epsilon)(d_i + \epsilon)}}

    computed from the degrees of the full graph (:func:`degree_sensitive_edge_weights`), so that
    edges between low-degree users and items are more likely to be kept and edges of hubs are
    pruned first. Re-normalise the result with its own degrees, e.g.
    ``bipartite_norm_adj(kept, num_users, num_items)``.

    Args:
        edge_index: ``(2, E)`` interactions, row 0 user ids, row 1 item ids.
        num_users: ``U``.
        num_items: ``N``.
        dropout: The fraction :math:`p \in [0, 1)` of edges to drop.
        weights: Precomputed ``(E,)`` sampling weights (default: computed from ``edge_index``
            with :func:`degree_sensitive_edge_weights`). Pass them to avoid recomputing the
            degrees at every call.
        generator: Random generator (default: the global torch RNG of the device).

    Returns:
        The kept edges, ``(2, K)``, in the order they were drawn.
    """
    _check_bipartite(edge_index, num_users, num_items)
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"`dropout` must lie in [0, 1), got {dropout}")
    num_edges = edge_index.size(1)
    if weights is None:
        weights = degree_sensitive_edge_weights(edge_index, num_users, num_items)
    elif weights.shape != (num_edges,):
        raise ValueError(
            f"`weights` must have one value per edge, shape ({num_edges},), "
            f"got {tuple(weights.shape)}"
        )
    num_keep = int(num_edges * (1.0 - float(dropout)))
    if num_keep < 1:
        raise ValueError(
            f"pruning {num_edges} edges with dropout={dropout} keeps none; lower `dropout`"
        )
    if num_keep == num_edges:
        return edge_index
    idx = torch.multinomial(weights, num_keep, replacement=False, generator=generator)
    return edge_index[:, idx]
