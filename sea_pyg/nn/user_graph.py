r"""The user-user co-occurrence graph of DualGNN and DRAGON, built from the training interactions.

MMRec ships it as ``user_graph_dict.npy`` (a pickled dict written by
``preprocessing/dualgnn-gen-u-u-matrix.py``); sea_pyg never reads that file (loading it needs
``allow_pickle=True``, which can execute code) and builds the same graph from the training
split instead. With :math:`\mathbf{R} \in \{0, 1\}^{U \times N}` the **binarised** training
interactions, the co-occurrence count of two users is the number of training items they share,

.. math::
    c_{uv} = (\mathbf{R}\mathbf{R}^\top)_{uv} = |\mathcal{I}_u \cap \mathcal{I}_v|,
    \qquad u \neq v,

and each user keeps the (at most) ``max_neighbors`` users with the largest :math:`c_{uv} > 0`
(MMRec: 200), in decreasing order of count.

Three pieces:

* :func:`user_cooccurrence_graph`: the sorted top-:math:`K` lists, computed in chunks of users
  with sparse matrix products (never a dense :math:`U \times U` matrix);
* :func:`sample_user_neighbors`: MMRec's per-epoch ``topk_sample``: the first ``k`` neighbours
  of every user, users with fewer padded by resampling their own list, weighted by a softmax
  over the counts (or uniformly);
* :class:`UserCooccurrenceGraph`: the module that holds the lists and the current sample and
  aggregates user embeddings over it, :math:`\mathbf{h}_u = \sum_j w_{uj}\, \mathbf{x}_{n_{uj}}`.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from sea_pyg.nn.graph import unique_edges
from sea_pyg.nn.precision import full_precision

__all__ = ["user_cooccurrence_graph", "sample_user_neighbors", "UserCooccurrenceGraph"]

WEIGHTINGS = ("softmax", "mean")

#: Default bound on the (user, user, item) triples multiplied per chunk (memory per chunk is
#: about 20 bytes per triple at most).
CHUNK_PAIRS = 1 << 22


def _csr(coo: Tensor) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()


def user_cooccurrence_graph(
    edge_index: Tensor,
    num_users: int,
    num_items: int,
    max_neighbors: int | None = 200,
    chunk_pairs: int = CHUNK_PAIRS,
) -> tuple[Tensor, Tensor]:
    r"""Top-:math:`K` co-occurrence neighbours of every user (MMRec's ``user_graph_dict``).

    :math:`c_{uv} = |\mathcal{I}_u \cap \mathcal{I}_v|` over the **distinct** training pairs
    (duplicates collapse, as MMRec's sets of items do), the user itself excluded. Each user's
    neighbours with :math:`c_{uv} > 0` are sorted by decreasing count, **ties by increasing
    user id**, and cut after ``max_neighbors``.

    The counts are computed chunk by chunk, ``C[a:b] = R[a:b] R^T`` with sparse products,
    where a chunk of users holds at most ``chunk_pairs`` (user, co-user, item) triples
    :math:`\sum_{u \in [a,b)} \sum_{i \in \mathcal{I}_u} d_i` (a single user above the bound
    gets a chunk of its own): memory is :math:`O(\texttt{chunk\_pairs} + E)`, never
    :math:`U \times U`.

    Args:
        edge_index: ``(2, E)`` training interactions (user ids, item ids).
        num_users: ``U``.
        num_items: ``N``.
        max_neighbors: Neighbours kept per user (MMRec: 200); ``None`` keeps all.
        chunk_pairs: Bound on the triples multiplied per chunk.

    Returns:
        ``(neighbors, counts)``: ``neighbors`` is a ``(2, E_u)`` long tensor ``[user;
        neighbour]`` grouped by user in increasing order and, within a user, in the order
        above; ``counts`` the ``(E_u,)`` long co-occurrence counts. Users without any
        co-occurrence have no entry.
    """
    if max_neighbors is not None and (isinstance(max_neighbors, bool) or max_neighbors < 1):
        raise ValueError(f"`max_neighbors` must be a positive int or None, got {max_neighbors!r}")
    if chunk_pairs < 1:
        raise ValueError(f"`chunk_pairs` must be >= 1, got {chunk_pairs}")
    users, items = unique_edges(edge_index, num_users, num_items)  # checks ids; sorted by user
    device = users.device
    dtype = torch.float32 if num_items < (1 << 24) else torch.float64  # exact integer counts
    ones = torch.ones(users.numel(), dtype=dtype, device=device)
    r_t = torch.sparse_coo_tensor(
        torch.stack([items, users]), ones, (num_items, num_users), check_invariants=False
    ).coalesce()
    user_ptr = torch.zeros(num_users + 1, dtype=torch.long, device=device)
    user_ptr[1:] = torch.bincount(users, minlength=num_users).cumsum(0)
    item_deg = torch.bincount(items, minlength=num_items)
    work = torch.zeros(num_users, dtype=torch.long, device=device).index_add_(
        0, users, item_deg[items]
    )
    cum = work.cumsum(0).cpu()

    out_user, out_nbr, out_cnt = [], [], []
    start = 0
    while start < num_users:
        base = int(cum[start - 1]) if start else 0
        end = int(torch.searchsorted(cum, base + chunk_pairs, right=True))
        end = min(max(end, start + 1), num_users)
        lo, hi = int(user_ptr[start]), int(user_ptr[end])
        if hi > lo:
            chunk = torch.sparse_coo_tensor(
                torch.stack([users[lo:hi] - start, items[lo:hi]]),
                ones[lo:hi],
                (end - start, num_items),
                check_invariants=False,
            )
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                prod = torch.sparse.mm(chunk, r_t).coalesce()  # sorted by (row, col)
            row, col = prod.indices()
            cnt = prod.values().round().long()
            keep = (col != row + start) & (cnt > 0)
            row, col, cnt = row[keep], col[keep], cnt[keep]
            if row.numel():
                # order by (row, -count, col): one stable sort keeps the col order of ties
                top = int(cnt.max())
                order = torch.sort(row * (top + 1) + (top - cnt), stable=True).indices
                row, col, cnt = row[order], col[order], cnt[order]
                if max_neighbors is not None:
                    first = torch.zeros(end - start + 1, dtype=torch.long, device=device)
                    first[1:] = torch.bincount(row, minlength=end - start).cumsum(0)
                    rank = torch.arange(row.numel(), device=device) - first[row]
                    keep = rank < max_neighbors
                    row, col, cnt = row[keep], col[keep], cnt[keep]
                out_user.append(row + start)
                out_nbr.append(col)
                out_cnt.append(cnt)
        start = end
    if not out_user:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return torch.stack([empty, empty]), empty
    return torch.stack([torch.cat(out_user), torch.cat(out_nbr)]), torch.cat(out_cnt)


def _check_grouped(neighbors: Tensor, counts: Tensor, num_users: int) -> None:
    if neighbors.dim() != 2 or neighbors.size(0) != 2:
        raise ValueError(f"`neighbors` must have shape (2, E), got {tuple(neighbors.shape)}")
    if counts.shape != (neighbors.size(1),):
        raise ValueError(
            f"`counts` must have one value per neighbour, shape ({neighbors.size(1)},), got "
            f"{tuple(counts.shape)}"
        )
    if neighbors.numel():
        if int(neighbors.min()) < 0 or int(neighbors.max()) >= num_users:
            raise ValueError("`neighbors` holds user ids outside [0, num_users)")
        if bool((neighbors[0, 1:] < neighbors[0, :-1]).any()):
            raise ValueError(
                "`neighbors` must be grouped by user in increasing order (as "
                "user_cooccurrence_graph returns it)"
            )


def sample_user_neighbors(
    neighbors: Tensor,
    counts: Tensor,
    num_users: int,
    num_neighbors: int = 40,
    weighting: str = "softmax",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    r"""MMRec's per-epoch neighbour sample of DualGNN / DRAGON (``topk_sample``).

    For user :math:`u` with the ordered list :math:`(n_{u1}, c_{u1}), \dots, (n_{uK_u},
    c_{uK_u})` of :func:`user_cooccurrence_graph` and :math:`k` = ``num_neighbors``:

    * :math:`K_u \geq k`: the first :math:`k` entries;
    * :math:`0 < K_u < k`: the :math:`K_u` entries, padded to :math:`k` one at a time, entry
      :math:`t` (0-based, :math:`t = K_u, \dots, k-1`) a copy of entry :math:`r`, with
      :math:`r` uniform in :math:`\{0, \dots, t-1\}` (a Pólya urn: the copies already added
      can be drawn again), so a neighbour appears :math:`m_{uj} \geq 1` times;
    * :math:`K_u = 0`: no neighbour, weights 0 (the user is left unchanged by the aggregation).

    Weights over the :math:`k` entries of a row (copies included):
    ``"softmax"`` (MMRec) :math:`w_{ut} = e^{c_{ut}} / \sum_{s} e^{c_{us}}`, so a neighbour's total
    weight is :math:`m_{uj} e^{c_{uj}} / \sum_l m_{ul} e^{c_{ul}}`; ``"mean"``
    :math:`w_{ut} = 1/k`.

    Only the padding is random. The draws are made on the CPU (the same sample on every
    device), step by step over all users that need one, so the random stream differs from
    MMRec's (numpy, user by user) while the distribution is the same.

    Args:
        neighbors: ``(2, E)`` ``[user; neighbour]`` grouped by user, each user's list in order
            (:func:`user_cooccurrence_graph`).
        counts: ``(E,)`` co-occurrence counts.
        num_users: ``U``.
        num_neighbors: :math:`k` (MMRec: 40).
        weighting: ``"softmax"`` (MMRec's ``user_aggr_mode``) or ``"mean"``.
        generator: CPU random generator for the padding (default: the global one).

    Returns:
        ``(index, weight)``: ``(U, k)`` neighbour ids (a user without neighbours gets its
        own id) and ``(U, k)`` float weights (rows sum to 1, or 0 without neighbours).
    """
    if isinstance(num_neighbors, bool) or not isinstance(num_neighbors, int) or num_neighbors < 1:
        raise ValueError(f"`num_neighbors` must be a positive int, got {num_neighbors!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"`weighting` must be one of {WEIGHTINGS}, got {weighting!r}")
    _check_grouped(neighbors, counts, num_users)
    k, device = num_neighbors, neighbors.device
    src, dst = neighbors[0].long(), neighbors[1].long()
    deg = torch.bincount(src, minlength=num_users)
    first = torch.zeros(num_users, dtype=torch.long, device=device)
    first[1:] = deg.cumsum(0)[:-1]
    n = deg.clamp(max=k)
    slot = torch.arange(k, device=device)
    valid = slot[None, :] < n[:, None]
    pos = (first[:, None] + slot[None, :]).clamp(max=max(src.numel() - 1, 0))
    own = torch.arange(num_users, device=device)[:, None].expand(-1, k)
    if src.numel():
        index = torch.where(valid, dst[pos], own)
        count = torch.where(valid, counts.to(torch.float32)[pos], 0.0)
    else:
        index, count = own.clone(), torch.zeros(num_users, k, device=device)
    # Padding: slot t of a user with n < k entries copies a slot drawn from 0..t-1. The draws
    # are composed on the CPU into a source slot per entry (one transfer each way, not one per
    # slot on an accelerator), then gathered once; the same draws and values as copying slot
    # by slot.
    n_host = n.cpu()
    source = torch.arange(k).repeat(num_users, 1)
    for t in range(1, k):
        rows = ((n_host > 0) & (n_host <= t)).nonzero().flatten()
        if rows.numel():
            pick = torch.randint(0, t, (rows.numel(),), generator=generator)
            source[rows, t] = source[rows, pick]
    source = source.to(device)
    index, count = index.gather(1, source), count.gather(1, source)
    has = (n > 0)[:, None]
    if weighting == "softmax":
        weight = torch.softmax(count, dim=1)
    else:
        weight = torch.full((num_users, k), 1.0 / k, device=device)
    return index, torch.where(has, weight, 0.0)


class _ConstSpMM(torch.autograd.Function):
    """``adj @ x`` for a constant sparse ``adj``; the backward uses the stored ``adj^T``."""

    @staticmethod
    def forward(ctx, adj: Tensor, adj_t: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.adj_t = adj_t
        return adj @ x

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        return None, None, ctx.adj_t @ grad_out


class UserCooccurrenceGraph(nn.Module):
    r"""User-user aggregation over MMRec's co-occurrence graph (DualGNN, DRAGON).

    Built once from the training interactions (:func:`user_cooccurrence_graph`, keeping
    ``min(num_neighbors, max_neighbors)`` neighbours per user, which is all that the sample
    reads); :meth:`resample` draws a neighbour sample (:func:`sample_user_neighbors`; the models
    call it before every training epoch, as MMRec's ``pre_epoch_processing``). The forward
    pass aggregates over the current sample,

    .. math::
        \mathbf{h}_u = \sum_{t=1}^{k} w_{ut}\, \mathbf{x}_{n_{ut}}
        = (\mathbf{W}\mathbf{X})_u, \qquad
        \mathbf{W}_{uv} = \sum_{t:\, n_{ut} = v} w_{ut},

    as one sparse product with the :math:`U \times U` matrix :math:`\mathbf{W}` (at most
    :math:`k` non-zeros per row; its transpose is stored for the backward pass). The graph has
    no parameters; gradients flow into :math:`\mathbf{X}`.

    The current sample (``index``, ``weight``, both ``(U, k)``) is part of the
    :meth:`state_dict`, so a saved model aggregates exactly as it did when saved; the
    co-occurrence lists and :math:`\mathbf{W}` are rebuilt, not saved.

    Args:
        edge_index: ``(2, E)`` training interactions (user ids, item ids).
        num_users: ``U``.
        num_items: ``N``.
        num_neighbors: :math:`k`, neighbours per user in a sample (MMRec: 40).
        weighting: ``"softmax"`` over the co-occurrence counts (MMRec) or ``"mean"``.
        max_neighbors: Length of MMRec's stored lists (200); only matters for
            ``num_neighbors > max_neighbors`` (padding then starts from 200 entries).
        chunk_pairs: See :func:`user_cooccurrence_graph`.

    Shapes:
        - **input:** user embeddings ``(U, d)``
        - **output:** aggregated neighbour embeddings ``(U, d)``
    """

    def __init__(
        self,
        edge_index: Tensor,
        num_users: int,
        num_items: int,
        num_neighbors: int = 40,
        weighting: str = "softmax",
        max_neighbors: int = 200,
        chunk_pairs: int = CHUNK_PAIRS,
    ) -> None:
        super().__init__()
        if (
            isinstance(num_neighbors, bool)
            or not isinstance(num_neighbors, int)
            or (num_neighbors < 1)
        ):
            raise ValueError(f"`num_neighbors` must be a positive int, got {num_neighbors!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"`weighting` must be one of {WEIGHTINGS}, got {weighting!r}")
        self.num_users, self.num_neighbors, self.weighting = num_users, num_neighbors, weighting
        nbr, cnt = user_cooccurrence_graph(
            edge_index, num_users, num_items, min(num_neighbors, max_neighbors), chunk_pairs
        )
        self.register_buffer("neighbors", nbr, persistent=False)
        self.register_buffer("counts", cnt, persistent=False)
        self.register_buffer("index", torch.empty(num_users, num_neighbors, dtype=torch.long))
        self.register_buffer("weight", torch.zeros(num_users, num_neighbors))
        self.register_buffer("adj", None, persistent=False)
        self.register_buffer("adj_t", None, persistent=False)
        self.resample()

    def resample(self, generator: torch.Generator | None = None) -> None:
        """Draw a new neighbour sample (``generator``: CPU generator, default global)."""
        index, weight = sample_user_neighbors(
            self.neighbors,
            self.counts,
            self.num_users,
            self.num_neighbors,
            self.weighting,
            generator,
        )
        with torch.no_grad():
            self.index.copy_(index)
            self.weight.copy_(weight)
        self._build()

    def _build(self) -> None:
        u, k = self.num_users, self.num_neighbors
        row = torch.arange(u, device=self.index.device).repeat_interleave(k)
        col, val = self.index.reshape(-1), self.weight.reshape(-1)
        keep = val != 0
        row, col, val = row[keep], col[keep], val[keep]
        adj = torch.sparse_coo_tensor(
            torch.stack([row, col]), val, (u, u), check_invariants=False
        ).coalesce()
        adj_t = torch.sparse_coo_tensor(
            torch.stack([col, row]), val, (u, u), check_invariants=False
        ).coalesce()
        self.adj, self.adj_t = _csr(adj), _csr(adj_t)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._build()  # the loaded sample

    def adjacency(self) -> Tensor:
        r"""The current :math:`\mathbf{W}` as a coalesced sparse COO ``(U, U)`` tensor."""
        return self.adj.to_sparse_coo().coalesce()

    @full_precision  # sparse product: float32 under autocast
    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.size(0) != self.num_users:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"`x` must have shape ({self.num_users}, d), got {shape}")
        adj, adj_t = self.adj, self.adj_t
        if adj.dtype != x.dtype:
            adj, adj_t = adj.to(x.dtype), adj_t.to(x.dtype)
        return _ConstSpMM.apply(adj, adj_t, x)

    def extra_repr(self) -> str:
        return (
            f"num_users={self.num_users}, num_neighbors={self.num_neighbors}, "
            f"weighting={self.weighting!r}, stored_neighbors={self.neighbors.size(1)}"
        )
