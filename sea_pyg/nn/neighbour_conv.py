r"""Neighbour aggregation of linearly transformed features on a user-item graph (MMGCN's layer).

* :func:`bipartite_adjacency`: the **binary**, symmetric ``(U+N) x (U+N)`` adjacency of a
  user-item graph (users first, item ``i`` is node ``U + i``), built once as a sparse CSR tensor.
* :class:`NeighbourConv`: :math:`\mathbf{x}'_v = \operatorname{agg}_{j \in \mathcal{N}(v)}
  \mathbf{x}_j \mathbf{W}` with ``agg`` the mean or the sum over the neighbours, no self-loop,
  no degree normalisation and no bias (the ``BaseModel`` layer of MMGCN in MMRec, and of the
  authors' code). It is a PyG ``MessagePassing`` layer: on an ``edge_index`` PyG gathers and
  scatters the messages; on the adjacency of :func:`bipartite_adjacency` the aggregation is
  one sparse matmul (mean: divided by the degree afterwards), whose backward reuses the
  symmetric matrix (:func:`~sea_pyg.nn.symmetric_spmm`).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import is_torch_sparse_tensor

from sea_pyg.nn.conv import symmetric_spmm
from sea_pyg.nn.graph import unique_edges

__all__ = ["bipartite_adjacency", "NeighbourConv"]


def bipartite_adjacency(
    edge_index: Tensor,
    num_users: int,
    num_items: int,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Binary symmetric adjacency :math:`A = \begin{pmatrix} 0 & R \\ R^\top & 0
    \end{pmatrix}` of a user-item graph, as a sparse CSR tensor.

    Duplicate ``(user, item)`` pairs are collapsed (every entry is 0 or 1), so that the number
    of stored entries in row ``v`` is the node's degree. No self-loops; nodes without edges
    have empty rows.

    Args:
        edge_index: ``(2, E)`` interactions, row 0 user ids, row 1 item ids.
        num_users: ``U``.
        num_items: ``N``.
        dtype: Value dtype.

    Returns:
        A ``(U + N, U + N)`` sparse CSR tensor.
    """
    edges = unique_edges(edge_index, num_users, num_items)
    users, items = edges[0], edges[1] + num_users
    row, col = torch.cat([users, items]), torch.cat([items, users])
    n = num_users + num_items
    value = torch.ones(row.numel(), dtype=dtype, device=edge_index.device)
    adj = torch.sparse_coo_tensor(
        torch.stack([row, col]), value, (n, n), check_invariants=False
    ).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return adj.to_sparse_csr()


class NeighbourConv(MessagePassing):
    r"""Aggregate the linearly transformed features of a node's neighbours.

    .. math::
        \mathbf{x}'_v = \operatorname{agg}_{j \in \mathcal{N}(v)} \mathbf{x}_j \mathbf{W},
        \qquad \operatorname{agg} \in \{\text{mean}, \text{sum}\}

    (MMGCN's graph convolution, Wei et al. 2019, Eq. 1, as in MMRec: no self term, no
    normalisation, no bias; ``W`` initialised ``xavier_normal_``). A node without neighbours
    gets zeros.

    ``edge_index`` is either a PyG ``(2, E)`` edge list (both directions of every user-item
    edge, users and items in one id space; messages flow ``edge_index[0] -> edge_index[1]``)
    or the sparse adjacency of :func:`bipartite_adjacency` (binary and symmetric: the mean
    divides by the number of stored entries per row, and the backward pass reuses the matrix
    as its own transpose; pass no other sparse matrix).

    Args:
        in_channels: Input size ``F``.
        out_channels: Output size ``F'``.
        aggr: ``"mean"`` (MMRec's MMGCN) or ``"add"``.

    Shapes:
        - **input:** ``x`` ``(U + N, F)``, ``edge_index`` ``(2, E)`` or sparse
          ``(U + N, U + N)``
        - **output:** ``(U + N, F')``
    """

    def __init__(self, in_channels: int, out_channels: int, aggr: str = "mean") -> None:
        if aggr not in ("mean", "add"):
            raise ValueError(f"`aggr` must be 'mean' or 'add', got {aggr!r}")
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise ValueError(
                f"`in_channels` and `out_channels` must be >= 1, got {in_channels}, {out_channels}"
            )
        super().__init__(aggr=aggr)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.weight = torch.nn.Parameter(torch.empty(self.in_channels, self.out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        torch.nn.init.xavier_normal_(self.weight)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = x @ self.weight
        return self.propagate(edge_index, x=x, size=(x.size(0), x.size(0)))

    def message(self, x_j: Tensor) -> Tensor:
        return x_j

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor) -> Tensor:
        if not is_torch_sparse_tensor(adj_t):
            raise TypeError(
                "NeighbourConv takes an edge_index (2, E) or the sparse adjacency of "
                f"bipartite_adjacency(), got {type(adj_t).__name__}"
            )
        out = symmetric_spmm(adj_t, x)
        if self.aggr == "mean":
            if adj_t.layout == torch.sparse_csr:
                ptr = adj_t.crow_indices()
                deg = ptr[1:] - ptr[:-1]
            else:
                rows = adj_t.coalesce().indices()[0]
                deg = torch.bincount(rows, minlength=adj_t.size(0))
            out = out / deg.clamp(min=1).to(out.dtype).unsqueeze(-1)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, aggr={self.aggr!r})"
