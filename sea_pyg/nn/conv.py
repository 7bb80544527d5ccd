r"""LightGCN propagation on a user-item graph, normalised once.

PyG's :class:`~torch_geometric.nn.conv.LGConv` normalises ``edge_index`` on every call. For a
fixed training graph we instead build the symmetric-normalised adjacency

.. math::
    \hat{A} = D^{-1/2} A D^{-1/2}, \qquad
    A = \begin{pmatrix} 0 & R \\ R^\top & 0 \end{pmatrix} \in \mathbb{R}^{(U+N)\times(U+N)}

once, as a torch sparse CSR tensor (users first, then items: item ``i`` is node ``U + i``), and
call ``LGConv(normalize=False)`` on it, which PyG fuses into one sparse matmul.  Because
:math:`\hat{A}` is symmetric, the backward pass of :math:`\hat{A} X` is :math:`\hat{A}\,
\partial L/\partial Y` as well: :class:`SymLGConv` reuses the same CSR matrix instead of letting
autograd transpose it (about 2x faster at Amazon-Baby scale on a CPU; see ``benchmarks/``).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch_geometric.nn import LGConv
from torch_geometric.utils import is_torch_sparse_tensor

from sea_pyg.nn.precision import full_precision

__all__ = [
    "bipartite_norm_adj",
    "symmetric_spmm",
    "SymLGConv",
    "LightGCNPropagation",
]


def bipartite_norm_adj(
    edge_index: Tensor,
    num_users: int,
    num_items: int,
    binarize: bool = True,
    eps: float = 1e-7,
    dtype: torch.dtype = torch.float32,
    layout: torch.layout = torch.sparse_csr,
) -> Tensor:
    r"""Symmetric-normalised ``(U+N) x (U+N)`` adjacency of a user-item graph.

    .. math::
        \hat{A}_{uv} = \frac{A_{uv}}{\sqrt{(d_u + \epsilon)(d_v + \epsilon)}}

    with no self-loops. Nodes without edges get zero rows.

    Args:
        edge_index: ``(2, E)`` training interactions, row 0 user ids, row 1 item ids.
        num_users: ``U``.
        num_items: ``N``.
        binarize: Collapse duplicate (user, item) pairs to one edge of weight 1 (MMRec's
            LightGCN/FREEDOM/BM3). With ``False`` duplicates add up (the official SEA graph).
        eps: Added to every degree (MMRec: ``1e-7``; the official SEA graph: ``0``).
        dtype: Value dtype.
        layout: ``torch.sparse_csr`` (default, fastest for ``LGConv``) or ``torch.sparse_coo``.

    Returns:
        A coalesced sparse tensor of shape ``(U + N, U + N)``.
    """
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"`edge_index` must have shape (2, E), got {tuple(edge_index.shape)}")
    users, items = edge_index[0].long(), edge_index[1].long()
    if users.numel() and (int(users.max()) >= num_users or int(users.min()) < 0):
        raise ValueError("`edge_index` holds user ids outside [0, num_users)")
    if items.numel() and (int(items.max()) >= num_items or int(items.min()) < 0):
        raise ValueError("`edge_index` holds item ids outside [0, num_items)")
    n = num_users + num_items
    if binarize:
        keys = torch.unique(users * num_items + items)
        users, items = keys // num_items, keys % num_items
    row = torch.cat([users, items + num_users])
    col = torch.cat([items + num_users, users])
    weight = torch.ones(row.numel(), dtype=dtype, device=edge_index.device)
    deg = torch.zeros(n, dtype=dtype, device=edge_index.device).index_add_(0, row, weight)
    dinv = (deg + eps).pow(-0.5)
    dinv[deg + eps == 0] = 0.0
    value = dinv[row] * weight * dinv[col]
    adj = torch.sparse_coo_tensor(
        torch.stack([row, col]), value, (n, n), check_invariants=False
    ).coalesce()
    if layout == torch.sparse_csr:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return adj.to_sparse_csr()
    if layout == torch.sparse_coo:
        return adj
    raise ValueError(f"`layout` must be torch.sparse_csr or torch.sparse_coo, got {layout}")


class _SymmetricSpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, adj: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        # d(A X)/dX applied to G is A^T G = A G for a symmetric A.
        return None, ctx.adj @ grad_out


@full_precision
def symmetric_spmm(adj: Tensor, x: Tensor) -> Tensor:
    """``adj @ x`` for a constant symmetric sparse ``adj``; the backward reuses ``adj``.

    ``adj`` gets no gradient (it is a fixed graph). Use only when ``adj`` is symmetric. Under
    autocast the product runs in float32 (:func:`~sea_pyg.nn.precision.full_precision`).
    """
    if adj.requires_grad:
        return adj @ x
    return _SymmetricSpMM.apply(adj, x)


class SymLGConv(LGConv):
    r""":class:`~torch_geometric.nn.conv.LGConv` on a precomputed symmetric normalised adjacency.

    .. math::
        \mathbf{X}' = \hat{A} \mathbf{X}

    Pass the output of :func:`bipartite_norm_adj` (a torch sparse tensor) as ``edge_index``.
    The layer has no parameters and does not normalise (``normalize=False``); its backward pass
    reuses the symmetric ``adj`` instead of transposing it. Any other input type is handled by
    :class:`LGConv` unchanged.

    Shapes:
        - **input:** node features ``(U + N, F)``, sparse adjacency ``(U + N, U + N)``
        - **output:** node features ``(U + N, F)``
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(normalize=False, **kwargs)

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor) -> Tensor:
        if is_torch_sparse_tensor(adj_t):
            return symmetric_spmm(adj_t, x)
        return super().message_and_aggregate(adj_t, x)


class LightGCNPropagation(torch.nn.Module):
    r"""``num_layers`` parameter-free LightGCN propagations and a layer aggregation.

    .. math::
        \mathbf{E}^{(l+1)} = \hat{A} \mathbf{E}^{(l)}, \qquad
        \mathbf{E} = \operatorname{agg}\big(\mathbf{E}^{(0)}, \dots, \mathbf{E}^{(L)}\big)

    with ``agg`` the mean (LightGCN, FREEDOM, BM3), the sum (the official SEA/DRAGON encoder) or
    the last layer.

    Args:
        num_layers: ``L >= 0``.
        aggregation: ``"mean"``, ``"sum"`` or ``"last"``.

    Shapes:
        - **input:** ``x`` ``(U + N, F)``, ``adj`` sparse ``(U + N, U + N)`` (or an
          ``edge_index`` that :class:`SymLGConv` normalises itself, slowly)
        - **output:** ``(U + N, F)``
    """

    def __init__(self, num_layers: int, aggregation: str = "mean") -> None:
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"`num_layers` must be >= 0, got {num_layers}")
        if aggregation not in ("mean", "sum", "last"):
            raise ValueError(f"`aggregation` must be 'mean', 'sum' or 'last', got {aggregation!r}")
        self.num_layers = num_layers
        self.aggregation = aggregation
        self.conv = SymLGConv()

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        if self.aggregation == "last":
            for _ in range(self.num_layers):
                x = self.conv(x, adj)
            return x
        out = x
        for _ in range(self.num_layers):
            x = self.conv(x, adj)
            out = out + x
        if self.aggregation == "mean":
            out = out / (self.num_layers + 1)
        return out

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, aggregation={self.aggregation!r}"
