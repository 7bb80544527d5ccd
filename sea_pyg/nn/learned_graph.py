r"""Item-item graphs learned from trainable item representations: sparse, chunked, differentiable.

LATTICE (and MICRO after it) rebuilds an item-item :math:`k`-NN graph from the **current**
projections of the modality features during training, and lets the loss reach those projections
through the similarity values kept on the graph's edges. The reference code does this with a
dense :math:`N \times N` similarity matrix (and a dense graph and its autograd buffers), which
does not fit at Amazon-Clothing scale. This module computes the same graphs without ever holding
an :math:`N \times N` matrix:

* :func:`cosine_topk`: the weighted cosine :math:`k`-NN edges of the rows of :math:`\mathbf{X}`,
  found chunk by chunk (as :func:`~sea_pyg.nn.cosine_knn`), their values the cosine similarities,
  **differentiable** with respect to :math:`\mathbf{X}` exactly as the top-:math:`k` values of
  the dense similarity matrix are;
* :func:`normalize_edge_weight`: the degree normalisations of a weighted, directed edge list;
* :class:`WeightedGraph`: a square sparse matrix in CSR order whose values may carry gradients,
  with a sparse product :meth:`WeightedGraph.propagate` that is differentiable in the values and
  in the input (its transpose is built once per graph);
* :class:`LearnedItemGraph`: the frozen initial graphs of the raw features plus the graphs
  learned from given representations, mixed across modalities (LATTICE,
  :meth:`~LearnedItemGraph.mixed_graph`) or per modality (MICRO,
  :meth:`~LearnedItemGraph.modality_graph`).

Shapes: :math:`N` items, :math:`k` neighbours, :math:`E` edges, :math:`d` representation size.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from sea_pyg.nn import knn as _knn
from sea_pyg.nn import mips as _mips
from sea_pyg.nn.graph import unique_edges
from sea_pyg.nn.precision import full_precision

__all__ = [
    "cosine_topk",
    "normalize_edge_weight",
    "WeightedGraph",
    "self_loop_rw_graph",
    "LearnedItemGraph",
]

NORMALIZATIONS = ("sym", "rw", "none")
#: Edges per chunk when gradients of edge values are gathered (bounds the ``(chunk, d)`` buffers).
EDGE_CHUNK = 1 << 16


def _csr(crow: Tensor, col: Tensor, value: Tensor, num_nodes: int) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow, col, value, (num_nodes, num_nodes), check_invariants=False
        )


def _edge_dot(a: Tensor, b: Tensor, row: Tensor, col: Tensor) -> Tensor:
    r""":math:`v_e = \mathbf{a}_{row_e}^\top \mathbf{b}_{col_e}` for every edge, in chunks."""
    out = a.new_empty(row.numel())
    for s in range(0, row.numel(), EDGE_CHUNK):
        e = s + EDGE_CHUNK
        out[s:e] = (a[row[s:e]] * b[col[s:e]]).sum(-1)
    return out


def _scatter_edges(grad: Tensor, src: Tensor, dst: Tensor, gather: Tensor) -> Tensor:
    r""":math:`\mathbf{o}_i = \sum_{e: dst_e = i} g_e\, \mathbf{s}_{gather_e}`, in chunks."""
    out = torch.zeros_like(src)
    for s in range(0, grad.numel(), EDGE_CHUNK):
        e = s + EDGE_CHUNK
        out.index_add_(0, dst[s:e], grad[s:e, None] * src[gather[s:e]])
    return out


# Cosine top-k ################################################################################


class _SimilarityValues(torch.autograd.Function):
    r"""Returns the precomputed similarities :math:`s_e = \hat{\mathbf{x}}_{i}^\top
    \hat{\mathbf{x}}_{j}` of the edges :math:`e = (i, j)` and back-propagates
    :math:`\partial s_e / \partial \hat{\mathbf{x}}_i = \hat{\mathbf{x}}_j` and
    :math:`\partial s_e / \partial \hat{\mathbf{x}}_j = \hat{\mathbf{x}}_i` (both when
    :math:`i = j`), without the dense similarity matrix."""

    @staticmethod
    def forward(ctx, x_n: Tensor, value: Tensor, row: Tensor, col: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x_n, row, col)
        return value.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x_n, row, col = ctx.saved_tensors
        grad_x = _scatter_edges(grad, x_n, row, col) + _scatter_edges(grad, x_n, col, row)
        return grad_x, None, None, None


def cosine_topk(
    x: Tensor,
    k: int,
    chunk_size: int = 1024,
    backend: str = "auto",
    *,
    check_values: bool = True,
) -> tuple[Tensor, Tensor]:
    r"""The weighted cosine :math:`k`-NN graph of the rows of :obj:`x`: LATTICE's
    ``build_knn_neighbourhood(build_sim(x), k)`` as an edge list.

    .. math::
        \hat{\mathbf{x}}_i = \frac{\mathbf{x}_i}{\max(\|\mathbf{x}_i\|_2, \epsilon)}, \qquad
        s_{ij} = \hat{\mathbf{x}}_i^\top \hat{\mathbf{x}}_j, \qquad
        a_{ij} = \begin{cases} s_{ij} & j \in \operatorname{top-}k_j\, s_{ij} \\
        0 & \text{otherwise} \end{cases}

    The top-:math:`k` runs over the whole row, the item itself included (:math:`s_{ii} = 1`, so
    an item is its own first neighbour unless other items have the same direction; ties are
    broken by :func:`torch.topk`). The similarities are computed :obj:`chunk_size` rows at a
    time (a :obj:`chunk_size` :math:`\times N` block, never :math:`N \times N`).

    **Gradients.** The indices are constants; the values are differentiable in :obj:`x` exactly
    as the top-:math:`k` values of the dense matrix :math:`\hat{\mathbf{X}}\hat{\mathbf{X}}^\top`
    are: :math:`\partial a_{ij} / \partial \hat{\mathbf{x}}_i = \hat{\mathbf{x}}_j` and
    :math:`\partial a_{ij} / \partial \hat{\mathbf{x}}_j = \hat{\mathbf{x}}_i`, gathered over the
    :math:`Nk` edges in :math:`\mathcal{O}(Nkd)` (then through the row normalisation).

    Args:
        x: Item representations :math:`(N, d)`, finite; may require gradients.
        k: Neighbours per item, self included, :math:`1 \le k \le N`.
        chunk_size: Rows of the similarity matrix computed at once (memory
            :math:`\text{chunk\_size} \cdot N` values).
        backend: ``"auto"`` (exact, unless :func:`~sea_pyg.nn.mips.knn_backend` or the size rule
            of :mod:`sea_pyg.nn.mips` says otherwise), ``"exact"``, ``"mips"`` or ``"approx"``:
            with the last two the neighbours come from PyG's faiss index and the values are the
            exact cosines of the pairs found (same gradients).
        check_values: Check that ``x`` is finite (reads the values: a host synchronisation on
            an accelerator). A model's training step passes ``False`` for its own
            representations (a NaN there ends training through the non-finite loss).

    Returns:
        ``(edge_index, value)``: ``edge_index`` ``(2, N k)`` with ``edge_index[0]`` the item
        (each :math:`k` times, ascending) and ``edge_index[1]`` its neighbours by decreasing
        similarity; ``value`` ``(N k,)`` the similarities (with autograd attached when ``x``
        requires gradients).
    """
    x = _knn._check_features(x, "x", check_values)
    num_items = x.size(0)
    k = _knn._check_int(k, "k", 1)
    if k > num_items:
        raise ValueError(
            f"'k' must not exceed the number of items (got k={k} for {num_items} items); "
            f"choose k <= {num_items}"
        )
    chunk_size = _knn._check_int(chunk_size, "chunk_size", 1)
    x_n = F.normalize(x, p=2.0, dim=1, eps=_knn.NORM_EPS)
    index = torch.empty((num_items, k), dtype=torch.long, device=x.device)
    value = torch.empty((num_items, k), dtype=x.dtype, device=x.device)
    backend, params = _mips.resolve_backend(backend, num_items)
    with torch.no_grad():
        if backend == "exact":
            for start, block in _knn._similarity_blocks(x_n.detach(), chunk_size):
                top = block.topk(k, dim=1)
                index[start : start + block.size(0)] = top.indices
                value[start : start + block.size(0)] = top.values
        else:
            found = _mips.mips_topk(
                _mips.build_index(x_n, backend, params),
                x_n,
                x_n,
                k,
                params.rerank if backend == "approx" else 1,
                chunk_size=chunk_size,
            )[1].to(x.device)
            index.copy_(found)
            rows = torch.arange(num_items, device=x.device).repeat_interleave(k)
            value.view(-1).copy_(_edge_dot(x_n.detach(), x_n.detach(), rows, found.view(-1)))
    row = torch.arange(num_items, device=x.device).repeat_interleave(k)
    col = index.view(-1)
    value = value.view(-1)
    if x_n.requires_grad:
        value = _SimilarityValues.apply(x_n, value, row, col)
    return torch.stack([row, col]), value


# Normalisation ###############################################################################


def normalize_edge_weight(
    edge_index: Tensor, value: Tensor, num_nodes: int, normalization: str = "sym"
) -> Tensor:
    r"""Degree-normalised values of a weighted, directed edge list (differentiable).

    With the **row** sums :math:`r_i = \sum_{e: row_e = i} v_e` (duplicate edges count
    separately, so normalising before or after summing duplicates is the same):

    * ``"sym"``: :math:`v_e / \sqrt{r_i r_j}` for :math:`e = (i, j)`: LATTICE's
      ``compute_normalized_laplacian``, :math:`\mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}` with
      :math:`\mathbf{D} = \operatorname{diag}(\mathbf{A}\mathbf{1})` on **both** sides (row sums,
      also for the column node), no epsilon;
    * ``"rw"``: :math:`v_e / r_i` (:math:`\mathbf{D}^{-1}\mathbf{A}`);
    * ``"none"``: :math:`v_e`.

    A node with :math:`r \le 0` gets the factor 0 (the reference code maps :math:`r = 0` to 0,
    via its ``inf`` fix, and gives NaN for :math:`r < 0`; a :math:`k`-NN row sum with the item
    itself at similarity 1 is negative only when its other neighbours are strongly opposite).

    Args:
        edge_index: ``(2, E)`` edges :math:`(i, j)`.
        value: ``(E,)`` edge values :math:`v_e`.
        num_nodes: :math:`N`.
        normalization: ``"sym"``, ``"rw"`` or ``"none"``.

    Returns:
        ``(E,)`` normalised values.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"'normalization' must be one of {NORMALIZATIONS} (got {normalization!r})")
    if normalization == "none":
        return value
    row = edge_index[0]
    rowsum = value.new_zeros(num_nodes).index_add(0, row, value)
    positive = rowsum > 0
    safe = torch.where(positive, rowsum, torch.ones_like(rowsum))
    if normalization == "sym":
        d = torch.where(positive, safe.pow(-0.5), torch.zeros_like(safe))
        return d[row] * value * d[edge_index[1]]
    d = torch.where(positive, safe.reciprocal(), torch.zeros_like(safe))
    return d[row] * value


# Sparse matrix with differentiable values ####################################################


class _GraphSpMM(torch.autograd.Function):
    r""":math:`\mathbf{Y} = \mathbf{A}\mathbf{X}` for the CSR matrix of a :class:`WeightedGraph`;
    backward :math:`\partial \mathbf{X} = \mathbf{A}^\top \mathbf{G}` (the graph's cached
    transposed pattern) and :math:`\partial a_{ij} = \mathbf{g}_i^\top \mathbf{x}_j`."""

    @staticmethod
    def forward(ctx, value: Tensor, x: Tensor, graph: WeightedGraph) -> Tensor:  # type: ignore[override]
        ctx.graph = graph
        ctx.save_for_backward(value, x)
        return _csr(graph.crow, graph.col, value, graph.num_nodes) @ x

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        value, x = ctx.saved_tensors
        graph: WeightedGraph = ctx.graph
        grad_out = grad_out.contiguous()
        grad_value = grad_x = None
        if ctx.needs_input_grad[1]:
            crow_t, col_t, perm = graph.transpose_pattern()
            grad_x = _csr(crow_t, col_t, value[perm], graph.num_nodes) @ grad_out
        if ctx.needs_input_grad[0]:
            grad_value = _edge_dot(grad_out, x, graph.row, graph.col)
        return grad_value, grad_x, None


class WeightedGraph:
    r"""A square sparse matrix :math:`\mathbf{A} \in \mathbb{R}^{N \times N}` in CSR order
    (rows ascending, columns ascending within a row, no duplicate entry) whose values may carry
    gradients.

    :meth:`propagate` computes :math:`\mathbf{A}\mathbf{X}` with one CSR product; its backward
    pass gives :math:`\mathbf{A}^\top \mathbf{G}` to :math:`\mathbf{X}` (the transposed pattern
    is built at the first backward pass and kept with the graph, so a graph reused over many
    batches pays for it once) and :math:`\mathbf{g}_i^\top \mathbf{x}_j` to each value
    :math:`a_{ij}`, in chunks of edges (no :math:`E \times d` buffer). Memory beyond the inputs:
    :math:`\mathcal{O}(E + N d)`.

    Build one with :meth:`from_edges` (which sums duplicate edges, differentiably); the
    constructor takes an already coalesced CSR pattern. It is a plain object, not a module:
    a model keeps its tensors as buffers, or rebuilds it.

    Args:
        crow: ``(N + 1,)`` row pointers.
        col: ``(E,)`` column indices.
        value: ``(E,)`` values.
        transpose: Optional precomputed :meth:`transpose_pattern`.
    """

    def __init__(
        self,
        crow: Tensor,
        col: Tensor,
        value: Tensor,
        transpose: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> None:
        if crow.dim() != 1 or col.dim() != 1 or value.shape != col.shape:
            raise ValueError(
                f"'crow' (N + 1,), 'col' (E,) and 'value' (E,) expected, got shapes "
                f"{tuple(crow.shape)}, {tuple(col.shape)}, {tuple(value.shape)}"
            )
        self.crow, self.col, self.value = crow, col, value
        self.num_nodes = crow.numel() - 1
        self._row: Tensor | None = None
        self._transpose = transpose

    @classmethod
    def from_edges(
        cls, edge_index: Tensor, value: Tensor, num_nodes: int, *, check_values: bool = True
    ) -> WeightedGraph:
        r"""The matrix with :math:`a_{ij} = \sum_{e = (i, j)} v_e` (duplicates add up; the sum is
        differentiable in ``value``).

        Args:
            edge_index: ``(2, E)`` integer edges in :math:`[0, N)`.
            value: ``(E,)`` floating values.
            num_nodes: :math:`N`.
            check_values: Check that the ids lie in :math:`[0, N)` (reads them: a host
                synchronisation on an accelerator); ``False`` for edges a model built itself.
        """
        num_nodes = _knn._check_int(num_nodes, "num_nodes", 0)
        _knn._check_edge_index(edge_index, num_nodes, check_values)
        if value.dim() != 1 or value.numel() != edge_index.size(1):
            raise ValueError(
                f"'value' must have one entry per edge, shape ({edge_index.size(1)},), got "
                f"{tuple(value.shape)}"
            )
        if not value.is_floating_point():
            raise ValueError(f"'value' must be floating point (got {value.dtype})")
        edge_index = edge_index.long()
        key = edge_index[0] * num_nodes + edge_index[1]
        key, inverse = torch.unique(key, sorted=True, return_inverse=True)
        value = value.new_zeros(key.numel()).index_add(0, inverse, value)
        row = key.div(num_nodes, rounding_mode="floor")
        out = cls(_knn._ptr(row, num_nodes), key - row * num_nodes, value)
        out._row = row
        return out

    @classmethod
    def combine(
        cls,
        parts: Sequence[tuple[Tensor, Tensor]],
        num_nodes: int,
        coefficients: Sequence[float | Tensor] | None = None,
        *,
        check_values: bool = True,
    ) -> WeightedGraph:
        r""":math:`\sum_p c_p \mathbf{A}_p` for edge lists ``parts = [(edge_index, value)]``
        (``check_values``: see :meth:`from_edges`)."""
        if coefficients is None:
            coefficients = [1.0] * len(parts)
        if len(coefficients) != len(parts) or not parts:
            raise ValueError("'parts' must be non-empty with one coefficient per part")
        edges = torch.cat([ei for ei, _ in parts], dim=1)
        values = torch.cat([c * v for (_, v), c in zip(parts, coefficients, strict=True)])
        return cls.from_edges(edges, values, num_nodes, check_values=check_values)

    # ---- views ---------------------------------------------------------------------------------
    @property
    def num_edges(self) -> int:
        return int(self.col.numel())

    @property
    def row(self) -> Tensor:
        """``(E,)`` row index of each stored entry."""
        if self._row is None:
            counts = self.crow.diff()
            self._row = torch.arange(self.num_nodes, device=self.crow.device).repeat_interleave(
                counts
            )
        return self._row

    @property
    def edge_index(self) -> Tensor:
        """``(2, E)`` stored entries in CSR order."""
        return torch.stack([self.row, self.col])

    def transpose_pattern(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(crow_t, col_t, perm)``: the CSR pattern of :math:`\\mathbf{A}^\\top`, whose values
        are ``value[perm]`` (computed once, then cached)."""
        if self._transpose is None:
            n = self.num_nodes
            perm = torch.argsort(self.col * n + self.row)
            self._transpose = (_knn._ptr(self.col, n), self.row[perm], perm)
        return self._transpose

    def to_dense(self) -> Tensor:
        """The dense ``(N, N)`` matrix (for tests and small graphs only)."""
        out = self.value.new_zeros(self.num_nodes, self.num_nodes)
        return out.index_put((self.row, self.col), self.value, accumulate=True)

    def detach(self) -> WeightedGraph:
        """The same matrix with values cut from autograd (shares the pattern and its cache)."""
        out = WeightedGraph(self.crow, self.col, self.value.detach(), self._transpose)
        out._row = self._row
        return out

    def to(self, device: torch.device | str) -> WeightedGraph:
        move = [t.to(device) for t in (self.crow, self.col, self.value)]
        trans = None if self._transpose is None else tuple(t.to(device) for t in self._transpose)
        return WeightedGraph(*move, trans)  # type: ignore[arg-type]

    # ---- algebra -------------------------------------------------------------------------------
    @full_precision
    def propagate(self, x: Tensor) -> Tensor:
        r""":math:`\mathbf{A}\mathbf{X}` for ``x`` ``(N, d)`` (differentiable in both; in
        float32 under autocast, see :func:`~sea_pyg.nn.precision.full_precision`)."""
        if x.dim() != 2 or x.size(0) != self.num_nodes:
            raise ValueError(
                f"'x' must have shape [{self.num_nodes}, d] (one row per node), got {list(x.shape)}"
            )
        value = self.value if self.value.dtype == x.dtype else self.value.to(x.dtype)
        return _GraphSpMM.apply(value, x, self)

    def __repr__(self) -> str:
        return f"WeightedGraph(num_nodes={self.num_nodes}, num_edges={self.num_edges})"


# Learned item graphs #########################################################################


def self_loop_rw_graph(edge_index: Tensor, num_users: int, num_items: int) -> WeightedGraph:
    r""":math:`\tilde{\mathbf{D}}^{-1}(\mathbf{A} + \mathbf{I})` of the binarised user-item
    graph (users first, item ``i`` = node ``U + i``), :math:`\tilde{D}` its row sums: the
    random-walk user-item graph with self-loops of LATTICE and MICRO (the authors'
    ``norm_adj``), with its transpose pattern computed.

    Args:
        edge_index: ``(2, E)`` user-item interactions (duplicates are collapsed).
        num_users: ``U``.
        num_items: ``N``.
    """
    edges = unique_edges(edge_index, num_users, num_items)
    n = num_users + num_items
    loops = torch.arange(n, device=edges.device)
    row = torch.cat([edges[0], edges[1] + num_users, loops])
    col = torch.cat([edges[1] + num_users, edges[0], loops])
    deg = torch.bincount(row, minlength=n).to(torch.get_default_dtype())
    graph = WeightedGraph.from_edges(torch.stack([row, col]), deg.reciprocal()[row], n)
    graph.transpose_pattern()
    return graph


class LearnedItemGraph(torch.nn.Module):
    r"""Item-item graphs learned from item representations at training time, on top of frozen
    graphs of the raw features (LATTICE; the per-modality form is MICRO's).

    **Initial graphs** (built once from the raw features :math:`\mathbf{x}^m`, no gradient):
    :math:`\hat{\mathbf{A}}^{m}_0 = \operatorname{norm}(\operatorname{kNN}(\mathbf{x}^m))`, with
    :math:`\operatorname{kNN}` the weighted cosine graph of :func:`cosine_topk` and
    :math:`\operatorname{norm}` :func:`normalize_edge_weight` (``"sym"``:
    :math:`a_{ij}/\sqrt{r_i r_j}`).

    **Learned graphs**, from representations :math:`\mathbf{z}^m` (e.g. :math:`T_m(\mathbf{x}^m)`,
    with autograd), with modality weights :math:`w_m` and :math:`\lambda` = ``lambda_coeff``:

    .. math::
        \mathbf{S} = (1 - \lambda)\, \operatorname{norm}\Big(\sum_m w_m
        \operatorname{kNN}(\mathbf{z}^m)\Big) + \lambda \sum_m w_m \hat{\mathbf{A}}^{m}_0

    (:meth:`mixed_graph`, LATTICE) and, per modality (:meth:`modality_graph`, MICRO),

    .. math::
        \mathbf{S}^m = (1 - \lambda)\, \operatorname{norm}\big(\operatorname{kNN}(\mathbf{z}^m)
        \big) + \lambda\, \hat{\mathbf{A}}^{m}_0

    Note that LATTICE normalises the **mixture** of the unnormalised learned graphs (entries
    present in several modalities add up before the row sums are taken), but mixes the
    **normalised** initial graphs. The results are :class:`WeightedGraph` objects whose values
    are differentiable in :math:`\mathbf{z}^m` and :math:`w_m`; no :math:`N \times N` matrix is
    formed (:func:`cosine_topk` works in row chunks).

    Args:
        features: ``{modality: (N, F_m)}`` raw item features (for the initial graphs).
        k: Neighbours per item, self included (LATTICE ``knn_k``: 10).
        lambda_coeff: :math:`\lambda`, the weight of the initial graphs (LATTICE: 0.9).
        normalization: ``"sym"`` (LATTICE, MICRO's default) or ``"rw"``, see
            :func:`normalize_edge_weight`.
        chunk_size: Rows per similarity block of :func:`cosine_topk`.

    The initial graphs are non-persistent buffers (rebuilt from the features at construction,
    not stored in checkpoints), so they follow :meth:`to`.
    """

    def __init__(
        self,
        features: Mapping[str, Tensor],
        k: int = 10,
        lambda_coeff: float = 0.9,
        normalization: str = "sym",
        chunk_size: int = 1024,
    ) -> None:
        super().__init__()
        if not isinstance(features, Mapping) or not features:
            raise ValueError("'features' must be a non-empty dict {modality: (N, F_m) tensor}")
        if normalization not in ("sym", "rw"):
            raise ValueError(f"'normalization' must be 'sym' or 'rw' (got {normalization!r})")
        if not 0.0 <= float(lambda_coeff) <= 1.0:
            raise ValueError(f"'lambda_coeff' must lie in [0, 1] (got {lambda_coeff})")
        self.modalities = [str(m) for m in features]
        sizes = {m: x.size(0) for m, x in features.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"All modalities must have the same number of items (got {sizes})")
        self.num_items = next(iter(sizes.values()))
        self.k = _knn._check_int(k, "k", 1)
        self.lambda_coeff = float(lambda_coeff)
        self.normalization = normalization
        self.chunk_size = _knn._check_int(chunk_size, "chunk_size", 1)
        for i, x in enumerate(features.values()):
            edge_index, value = cosine_topk(x.detach(), self.k, self.chunk_size)
            value = normalize_edge_weight(edge_index, value, self.num_items, normalization)
            self.register_buffer(f"initial_index_{i}", edge_index, persistent=False)
            self.register_buffer(f"initial_value_{i}", value, persistent=False)

    def _position(self, modality: str) -> int:
        if modality not in self.modalities:
            raise ValueError(f"Unknown modality {modality!r}; the modalities are {self.modalities}")
        return self.modalities.index(modality)

    def initial_edges(self, modality: str) -> tuple[Tensor, Tensor]:
        r"""``(edge_index, value)`` of the frozen normalised graph
        :math:`\hat{\mathbf{A}}^m_0`."""
        i = self._position(modality)
        return getattr(self, f"initial_index_{i}"), getattr(self, f"initial_value_{i}")

    def initial_graph(self, modality: str) -> WeightedGraph:
        r""":math:`\hat{\mathbf{A}}^m_0` as a :class:`WeightedGraph`."""
        return WeightedGraph.from_edges(*self.initial_edges(modality), self.num_items)

    def knn_edges(self, z: Tensor) -> tuple[Tensor, Tensor]:
        r"""The unnormalised weighted cosine :math:`k`-NN edges of ``z`` (:func:`cosine_topk`)."""
        if z.dim() != 2 or z.size(0) != self.num_items:
            raise ValueError(
                f"representations must have shape [{self.num_items}, d], got {list(z.shape)}"
            )
        return cosine_topk(z, self.k, self.chunk_size, check_values=False)

    def _weights(self, weights: Tensor | Sequence[float] | None) -> Tensor | list[float]:
        m = len(self.modalities)
        if weights is None:
            return [1.0 / m] * m
        if len(weights) != m:
            raise ValueError(
                f"'weights' must give one weight per modality ({m}: {self.modalities}), "
                f"got {len(weights)}"
            )
        return weights

    def mixed_graph(
        self,
        representations: Mapping[str, Tensor],
        weights: Tensor | Sequence[float] | None = None,
    ) -> WeightedGraph:
        r"""LATTICE's item graph :math:`\mathbf{S} = (1 - \lambda)\,\operatorname{norm}(\sum_m
        w_m \operatorname{kNN}(\mathbf{z}^m)) + \lambda \sum_m w_m \hat{\mathbf{A}}^m_0`.

        Args:
            representations: ``{modality: (N, d_m)}`` for every modality (any :math:`d_m`).
            weights: ``(M,)`` modality weights in modality order (e.g. a softmax, with
                autograd); default :math:`1/M` each.
        """
        missing = [m for m in self.modalities if m not in representations]
        if missing:
            raise ValueError(f"'representations' lacks modalities {missing}")
        w = self._weights(weights)
        learned = [self.knn_edges(representations[m]) for m in self.modalities]
        edges = torch.cat([ei for ei, _ in learned], dim=1)
        values = torch.cat([w[i] * v for i, (_, v) in enumerate(learned)])
        values = normalize_edge_weight(edges, values, self.num_items, self.normalization)
        lam = self.lambda_coeff
        parts = [(edges, values)] + [self.initial_edges(m) for m in self.modalities]
        coefficients = [1.0 - lam] + [lam * w[i] for i in range(len(self.modalities))]
        return WeightedGraph.combine(parts, self.num_items, coefficients, check_values=False)

    def modality_graph(self, modality: str, representation: Tensor) -> WeightedGraph:
        r"""MICRO's per-modality item graph :math:`\mathbf{S}^m = (1 - \lambda)\,\operatorname{norm}
        (\operatorname{kNN}(\mathbf{z}^m)) + \lambda \hat{\mathbf{A}}^m_0`."""
        edges, values = self.knn_edges(representation)
        values = normalize_edge_weight(edges, values, self.num_items, self.normalization)
        lam = self.lambda_coeff
        return WeightedGraph.combine(
            [(edges, values), self.initial_edges(modality)],
            self.num_items,
            [1.0 - lam, lam],
            check_values=False,
        )

    def extra_repr(self) -> str:
        return (
            f"modalities={self.modalities}, num_items={self.num_items}, k={self.k}, "
            f"lambda_coeff={self.lambda_coeff}, normalization={self.normalization!r}"
        )
