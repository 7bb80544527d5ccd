r"""LightGCN propagation on a sampled neighbourhood, and exact layer-wise full-graph inference.

**Sampled training.** Full-graph LightGCN computes
:math:`\mathbf{e}^{(l+1)}_v = \sum_{w \in \mathcal{N}(v)} \hat A_{vw}\,\mathbf{e}^{(l)}_w`
with :math:`\hat A_{vw} = 1/\sqrt{(d_v+\epsilon)(d_w+\epsilon)}` and **global** degrees
:math:`d`. On a sampled neighbourhood node :math:`v` keeps a subset
:math:`S(v) \subseteq \mathcal{N}(v)` of size :math:`k_v = \min(f, d_v)` (all of them when
:math:`d_v \le f` or :math:`f = -1`), uniform without replacement (see
:mod:`sea_pyg.data.neighbor`), so each neighbour is kept with probability :math:`k_v / d_v`.
The layer is estimated by

.. math::
    \tilde{\mathbf{e}}^{(l+1)}_v = \frac{d_v}{k_v} \sum_{w \in S(v)} \hat A_{vw}\,
    \tilde{\mathbf{e}}^{(l)}_w,

keeping the global normalisation :math:`\hat A_{vw}` (not the degrees of the sampled
subgraph) and rescaling by the inverse inclusion probability :math:`d_v / k_v`. Given
:math:`\tilde{\mathbf{e}}^{(l)}`, this is unbiased for one layer; PyG samples each node's
neighbours once per hop, independently of how the node was reached, so by linearity the
:math:`L`-layer seed embeddings (and the mean over layers) are unbiased for the full-graph ones,
while the BPR loss of them is a (slightly biased, as for any non-linear loss) estimate.
When every :math:`k_v = d_v` (a fan-out of ``-1`` or at least the largest degree) the factor is
1 and the result **equals** the full-graph LightGCN exactly. Node :math:`v` added at hop
:math:`h` has sampled neighbours only if :math:`h < L`; layer :math:`l` of it is correct for
:math:`h \le L - l`, which is all the seeds need.

**Layer-wise inference.** :func:`layerwise_propagation` computes the full-graph propagation
layer by layer over node chunks with complete neighbourhoods (fan-out ``-1``): the exact
embeddings of all nodes, with per-chunk temporaries of ``chunk x degree x d`` and no autograd
graph (PyG's layer-wise inference).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from sea_pyg.nn.precision import sparse_mm

__all__ = ["sampled_edge_weight", "sampled_propagation", "layerwise_propagation"]


def sampled_edge_weight(edge_index: Tensor, edge_weight: Tensor, deg: Tensor) -> Tensor:
    r"""Unbiased weights :math:`\frac{d_v}{k_v}\hat A_{vw}` of the sampled edges ``w -> v``.

    Args:
        edge_index: ``(2, e)`` local ids, row 0 the neighbour :math:`w`, row 1 the node
            :math:`v`.
        edge_weight: ``(e,)`` the full-graph :math:`\hat A_{vw}`.
        deg: ``(n,)`` global degrees :math:`d` of the subgraph's nodes.

    Returns:
        ``(e,)``; :math:`k_v` is the number of sampled edges into :math:`v`.
    """
    dst = edge_index[1]
    k = torch.bincount(dst, minlength=deg.numel()).to(edge_weight.dtype)
    scale = deg.to(edge_weight.dtype)[dst] / k[dst]
    return edge_weight * scale


def sampled_propagation(
    x: Tensor,
    edge_index: Tensor,
    edge_weight: Tensor,
    num_layers: int,
    aggregation: str = "mean",
    num_sampled_edges: Sequence[int] | None = None,
) -> Tensor:
    r"""``num_layers`` propagations :math:`\mathbf{x}'_v = \sum_{(w, v)} a_{wv}\mathbf{x}_w` on a
    subgraph, aggregated over layers as :class:`~sea_pyg.nn.LightGCNPropagation` does.

    Args:
        x: ``(n, d)`` layer-0 rows of the subgraph's nodes (local order).
        edge_index: ``(2, e)`` local ``[source; destination]``.
        edge_weight: ``(e,)`` weights, e.g. :func:`sampled_edge_weight`.
        num_layers: ``L``.
        aggregation: ``"mean"``, ``"sum"`` or ``"last"``.
        num_sampled_edges: Edges per hop, in the order of ``edge_index`` (PyG's
            ``num_sampled_edges``). When given, layer :math:`l` (1-based) propagates only the
            edges of hops :math:`1..L-l+1`, into the nodes it is needed for (PyG's
            ``trim_to_layer``): the last layer only into the seeds. The seeds' rows are the
            same; the other rows are then partial.

    Returns:
        ``(n, d)``; exact (for the sampled estimate) on the nodes whose sampled neighbourhood
        reaches ``L`` hops (the seeds).
    """
    if aggregation not in ("mean", "sum", "last"):
        raise ValueError(f"`aggregation` must be 'mean', 'sum' or 'last', got {aggregation!r}")
    src, dst = edge_index
    w = edge_weight.to(x.dtype)
    if dst.numel() > 1 and not bool((dst[1:] >= dst[:-1]).all()):  # CSR needs rows in order
        if num_sampled_edges is not None:
            raise ValueError("num_sampled_edges needs edges sorted by destination within hops "
                             "and hops in order (as the samplers return them)")
        order = torch.argsort(dst, stable=True)
        src, dst, w = src[order], dst[order], w[order]
    n = x.size(0)
    out = x
    for layer in range(num_layers):
        keep = dst.numel()
        if num_sampled_edges is not None:
            keep = int(sum(num_sampled_edges[: num_layers - layer]))
        crow = torch.zeros(n + 1, dtype=torch.long, device=x.device)
        torch.cumsum(torch.bincount(dst[:keep], minlength=n), 0, out=crow[1:])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            adj = torch.sparse_csr_tensor(
                crow, src[:keep], w[:keep], (n, n), check_invariants=False
            )
        x = sparse_mm(adj, x)  # sum over sampled w -> v of a_wv x_w (fp32 under autocast)
        out = x if aggregation == "last" else out + x
    if aggregation == "mean":
        out = out / (num_layers + 1)
    return out


@torch.no_grad()
def layerwise_propagation(
    x: Tensor | Sequence[Tensor],
    chunks: Iterable,
    num_layers: int,
    aggregation: str = "mean",
) -> Tensor:
    r"""Exact full-graph propagation, one layer at a time over chunks of nodes.

    Memory: besides ``x`` (read, never modified), ``(n, d)`` buffers: for ``"mean"``/``"sum"``
    the result (which starts as layer 0 and is read as such during the first layer) and one
    layer buffer, two from ``L = 3`` (the last layer is added into the result chunk by chunk);
    two layer buffers for ``"last"``; plus the per-chunk temporaries of ``chunk x degree x d``.

    Args:
        x: ``(n, d)`` layer-0 embeddings of all nodes, or a sequence of tables whose row
            concatenation they are (e.g. the user and the item table: concatenated straight
            into the result buffer, no other copy for ``"mean"``/``"sum"`` and ``L >= 2``).
        chunks: Re-iterable (once per layer) over subgraphs of one hop with full
            neighbourhoods, e.g. a :func:`~sea_pyg.data.neighbor.neighbor_loader` with fan-out
            ``[-1]`` and ``batch_size``: each yields ``n_id`` (its ``batch_size`` destination
            nodes first), local ``edge_index`` and ``edge_weight`` (:math:`\hat A`).
        num_layers: ``L``.
        aggregation: ``"mean"``, ``"sum"`` or ``"last"``.

    Returns:
        ``(n, d)``: equal to ``LightGCNPropagation(L, aggregation)(x, adj)`` up to float
        summation order.
    """
    if aggregation not in ("mean", "sum", "last"):
        raise ValueError(f"`aggregation` must be 'mean', 'sum' or 'last', got {aggregation!r}")
    tables = [x] if isinstance(x, Tensor) else list(x)
    if not tables or any(t.dim() != 2 or t.shape[1:] != tables[0].shape[1:] for t in tables):
        raise ValueError("`x` must be an (n, d) tensor or a non-empty sequence of (n_i, d) tables")
    if num_layers == 0:
        return torch.cat(tables)
    like = {"dtype": tables[0].dtype, "device": tables[0].device}
    out = None if aggregation == "last" else torch.cat(tables)  # starts as layer 0
    # the current layer. Layer 0 is read from ``out`` while it still holds it (to the end of
    # the first layer, unless that is also the last, which adds into ``out`` chunk by chunk),
    # else from ``x`` itself or, for a sequence of tables, their concatenation
    if out is not None and num_layers > 1:
        cur = out
    else:
        cur = x if isinstance(x, Tensor) else torch.cat(tables)
    for layer in range(num_layers):
        into_out = out is not None and layer == num_layers - 1
        nxt = out if into_out else torch.zeros_like(cur)
        for sub in chunks:
            n_id = sub.n_id.to(like["device"])
            src, dst = sub.edge_index.to(like["device"])
            w = sub.edge_weight.to(**like).unsqueeze(-1)
            msg = torch.zeros(sub.batch_size, cur.size(1), **like)
            msg.index_add_(0, dst, cur[n_id[src]] * w)
            if into_out:  # the last layer goes straight into the sum over layers
                out[n_id[: sub.batch_size]] += msg
            else:
                nxt[n_id[: sub.batch_size]] = msg
        if into_out:
            break
        cur = nxt
        if out is not None:
            out += cur
    if out is None:
        return cur
    if aggregation == "mean":
        out /= num_layers + 1
    return out
