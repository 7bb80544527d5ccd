r"""Similarity-weighted item-item :math:`k`-NN graphs (MGCN, LATTICE).

:func:`~sea_pyg.nn.knn.knn_adjacency` builds the **binary** graph of FREEDOM / DRAGON / SEA.
MGCN (and LATTICE's frozen initial graph) keep the cosine similarity of every kept edge
instead, and normalise the weighted matrix with its row sums:

.. math::
    s_{ij} = \hat{\mathbf{x}}_i^\top \hat{\mathbf{x}}_j \ \text{ for } j \in \mathcal{N}_k(i)
    \ \text{(else 0)}, \qquad
    d_i = \sum_{j} s_{ij}, \qquad
    \hat{s}_{ij} = d_i^{-1/2}\, s_{ij}\, d_j^{-1/2}

with :math:`\mathcal{N}_k(i)` the top-:math:`k` cosine neighbours of item :math:`i` (itself
included, see :func:`~sea_pyg.nn.cosine_knn`). The graph is directed; :math:`d_j` is the row sum
of item :math:`j`'s **own** row (not a column sum), as in MMRec's
``get_sparse_laplacian(..., normalization='sym')`` and LATTICE's ``compute_normalized_laplacian``.
Wrap the result in :meth:`~sea_pyg.nn.ItemKNNGraph.from_adjacencies` for a fast frozen operator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sea_pyg.nn.knn import NORM_EPS, cosine_knn
from sea_pyg.nn.learned_graph import NORMALIZATIONS, normalize_edge_weight

__all__ = ["cosine_edge_weights", "weighted_knn_adjacency"]


# Elements of the gathered ``(edges, F)`` blocks in :func:`cosine_edge_weights` (64 MB float32).
_GATHER_ELEMENTS = 1 << 24


def cosine_edge_weights(x: Tensor, edge_index: Tensor) -> Tensor:
    r"""Cosine similarity :math:`\hat{\mathbf{x}}_i^\top \hat{\mathbf{x}}_j` of every edge
    :math:`(i, j)` of ``edge_index``, computed in edge chunks (no :math:`N \times N` matrix).

    Rows are normalised as in :func:`~sea_pyg.nn.cosine_knn` (norm clamped at
    :math:`10^{-12}`, so an all-zero row has similarity 0 with everything). No gradient.

    Args:
        x: Item features ``(N, F)``.
        edge_index: ``(2, E)`` item pairs.

    Returns:
        ``(E,)`` similarities in the dtype of ``x`` (floating) on its device.
    """
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError("`x` must be a (num_items, num_features) tensor")
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError("`edge_index` must be a (2, E) tensor of item ids")
    with torch.no_grad():
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        x_n = F.normalize(x.detach(), p=2.0, dim=1, eps=NORM_EPS)
        row, col = edge_index[0].long(), edge_index[1].long()
        out = x_n.new_empty(row.numel())
        step = max(1, _GATHER_ELEMENTS // max(1, x_n.size(1)))
        for start in range(0, row.numel(), step):
            end = start + step
            out[start:end] = (x_n[row[start:end]] * x_n[col[start:end]]).sum(dim=1)
    return out


def weighted_knn_adjacency(
    x: Tensor,
    k: int,
    normalization: str = "sym",
    chunk_size: int = 4096,
    backend: str = "auto",
) -> Tensor:
    r"""The cosine-weighted, normalised, directed :math:`k`-NN graph of the rows of ``x``.

    Edges are :func:`~sea_pyg.nn.cosine_knn`'s (each item's top-:math:`k` cosine neighbours,
    itself usually included); each keeps its similarity :math:`s_{ij}` (see the module
    docstring), and the matrix is normalised with the row sums :math:`d_i = \sum_j s_{ij}`:

    * ``"sym"`` (MGCN, LATTICE): :math:`\hat{s}_{ij} = s_{ij} / \sqrt{d_i d_j}` (both
      from row sums; no epsilon);
    * ``"rw"``: :math:`\hat{s}_{ij} = s_{ij} / d_i`;
    * ``"none"``: :math:`\hat{s}_{ij} = s_{ij}`.

    A row with :math:`d_i = 0` (an all-zero feature row) becomes a zero row, and its column
    entries are 0 too (MMRec maps the infinite inverse degree to 0; it gets NaN for an all-zero
    feature row, which we normalise to a zero vector). Individual negative similarities are kept,
    as in MMRec.

    Args:
        x: Item features ``(N, F)``, finite.
        k: Neighbours per item, self included, ``1 <= k <= N``.
        normalization: ``"sym"``, ``"rw"`` or ``"none"`` (the values are normalised by
            :func:`~sea_pyg.nn.learned_graph.normalize_edge_weight`, LATTICE's learned graphs'
            normalisation).
        chunk_size: Passed to :func:`~sea_pyg.nn.cosine_knn`.
        backend: Passed to :func:`~sea_pyg.nn.cosine_knn`.

    Returns:
        A coalesced sparse COO tensor ``(N, N)`` in the dtype of ``x`` (floating), with exactly
        ``N * k`` stored entries.

    Raises:
        ValueError: bad arguments, or (``"sym"`` / ``"rw"``) a row whose similarities sum
            to a negative number: its inverse square root does not exist (MMRec would produce
            NaN); use a smaller ``k``.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` must be one of {NORMALIZATIONS}, got {normalization!r}"
        )
    edge_index = cosine_knn(x, k, chunk_size, backend)
    value = cosine_edge_weights(x, edge_index)
    n = x.size(0)
    if normalization != "none":
        deg = value.new_zeros(n).index_add_(0, edge_index[0], value)
        if bool((deg < 0).any()):
            bad = int((deg < 0).nonzero()[0, 0])
            raise ValueError(
                f"item {bad}'s {k} nearest neighbours have cosine similarities summing to "
                f"{float(deg[bad]):.4g} < 0, so the {normalization!r} normalisation is undefined; "
                "use a smaller k (or features whose nearest neighbours are positively similar)"
            )
        value = normalize_edge_weight(edge_index, value, n, normalization)
    return torch.sparse_coo_tensor(edge_index, value, (n, n), check_invariants=False).coalesce()
