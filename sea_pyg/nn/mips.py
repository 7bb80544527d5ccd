r"""Catalogue-scale top-:math:`k` by maximum inner product (MIPS) through PyG's faiss indexes.

Item :math:`k`-NN graphs (:func:`~sea_pyg.nn.cosine_knn`, :class:`~sea_pyg.nn.ItemKNNGraph`,
:func:`~sea_pyg.nn.cosine_topk`) and :func:`~sea_pyg.train.recommend` find, for each query
vector :math:`\mathbf{q}`, the :math:`k` items maximising :math:`\mathbf{q}^\top \mathbf{e}_j`
(cosine similarity is the inner product of unit vectors). The exact dense search costs
:math:`\mathcal{O}(N^2 d)` for a :math:`k`-NN graph of :math:`N` items: fine at the Amazon
datasets' scale (:math:`N \le 23\,033`), hours at a million items. This module runs the search
through PyG's :class:`~torch_geometric.nn.pool.MIPSKNNIndex` (exact, ``faiss.IndexFlatIP``) or
:class:`~torch_geometric.nn.pool.ApproxMIPSKNNIndex` (approximate, ``faiss.IndexIVFPQ``), which
need the ``knn`` extra: ``pip install "sea_pyg[knn]"`` (that is, ``faiss-cpu``).

Backends (the ``backend`` argument, or the process default set with :func:`knn_backend`):

* ``"exact"`` (the dense, chunked :mod:`torch` search of each caller; named ``"torch"`` or
  ``"pyg"`` by :func:`~sea_pyg.nn.cosine_knn`);
* ``"mips"`` (alias ``"faiss"``): exact search by ``MIPSKNNIndex`` (float32);
* ``"approx"``: ``ApproxMIPSKNNIndex``: an inverted file of ``num_cells`` k-means cells, of
  which the ``num_cells_to_visit`` nearest to the query are scanned, vectors compressed by a
  product quantiser; its ``rerank * k`` best candidates are then **re-scored exactly** with the
  original vectors and the best :math:`k` kept (:class:`ApproxParams`), so scores are exact and
  only the candidate set is approximate;
* ``"auto"``: ``"exact"`` below :data:`AUTO_APPROX_MIN_ITEMS` items (every dataset of the paper,
  so no number changes by default); from there on ``"approx"`` when faiss is installed, with a
  warning that says so (otherwise ``"exact"``, with a warning naming the install command).

The index lives on the CPU (faiss-cpu); inputs on another device are copied to the CPU and the
results moved back.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "ApproxParams",
    "AUTO_APPROX_MIN_ITEMS",
    "build_index",
    "faiss_available",
    "knn_backend",
    "knn_scope",
    "mips_topk",
    "resolve_backend",
]

#: ``backend="auto"`` switches to ``"approx"`` from this many items on: the exact :math:`k`-NN
#: graph costs :math:`2 N^2 d` flops plus a top-:math:`k` over :math:`N^2` scores, about half
#: an hour of one CPU core at :math:`N = 500\,000`, :math:`d = 64` (and 4x that at :math:`2N`).
AUTO_APPROX_MIN_ITEMS = 500_000
#: faiss returns at most this many neighbours per query (PyG caps ``k`` there).
FAISS_MAX_K = 2048
#: The product quantiser trains :math:`2^8` centroids per sub-vector, so it needs as many items.
PQ_MIN_ITEMS = 256
BACKENDS = ("auto", "exact", "mips", "approx")
INSTALL = 'pip install "sea_pyg[knn]" (or pip install faiss-cpu)'


def faiss_available() -> bool:
    """Whether :mod:`faiss` can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def require_faiss(backend: str) -> None:
    """Raises :class:`ImportError` naming the install command when faiss is missing."""
    if not faiss_available():
        raise ImportError(
            f"backend={backend!r} searches through PyG's faiss indexes and needs the 'faiss' "
            f"package: {INSTALL}; or use the exact dense search (backend='exact' / 'torch')"
        )


@dataclass(frozen=True)
class ApproxParams:
    r"""Parameters of the ``"approx"`` backend (``None``: chosen from :math:`N` and :math:`d`).

    Attributes:
        num_cells: k-means cells of the inverted file (``nlist``); default
            :math:`\mathrm{round}(4\sqrt{N})`, at most :math:`\lfloor N / 39 \rfloor` (faiss asks
            for 39 training points per centroid) and at least 1.
        num_cells_to_visit: Cells scanned per query (``nprobe``); default
            :math:`\max(\min(8, \text{num\_cells}), \lceil \text{num\_cells} / 32 \rceil)`.
            Raising it raises recall and query time.
        bits_per_vector: PyG's name for the number :math:`M` of product-quantiser sub-vectors
            (each coded on 8 bits, so :math:`M` bytes per item); must divide :math:`d`;
            default the largest divisor of :math:`d` not above :math:`d / 8` (sub-vectors of 8
            dimensions: faiss trains sub-vectors of 4 or fewer dimensions 10-30x slower).
        rerank: Candidates re-scored exactly per query, as a multiple of :math:`k`
            (capped at 2048 and :math:`N`); 1 keeps faiss's candidate set as it is. The
            re-scoring makes the product quantiser's coarse scores matter only for which
            candidates are kept (on clustered data, ``benchmarks/bench_knn.py``: recall@10 0.84
            with 4, 0.9996 with 10 at :math:`N = 20\,000`, :math:`d = 64`).
    """

    num_cells: int | None = None
    num_cells_to_visit: int | None = None
    bits_per_vector: int | None = None
    rerank: int = 10

    @classmethod
    def of(cls, params: ApproxParams | Mapping[str, Any] | None) -> ApproxParams:
        """``params`` as :class:`ApproxParams` (a dict names its fields)."""
        if params is None:
            return cls()
        if isinstance(params, ApproxParams):
            return params
        if not isinstance(params, Mapping):
            raise ValueError(
                f"'index_params' must be an ApproxParams or a dict (got {type(params).__name__})"
            )
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ValueError(f"'index_params' has unknown keys {unknown}; known: {names}")
        return cls(**params)

    def resolve(self, num_items: int, dim: int) -> tuple[int, int, int]:
        """``(num_cells, num_cells_to_visit, bits_per_vector)`` for ``num_items`` of ``dim``."""
        cells = self.num_cells
        if cells is None:
            cells = max(1, min(round(4 * math.sqrt(num_items)), num_items // 39))
        cells = _positive(cells, "num_cells")
        if cells > num_items:
            raise ValueError(
                f"'num_cells' must not exceed the number of items (got {cells} for {num_items})"
            )
        visit = self.num_cells_to_visit
        if visit is None:
            visit = max(min(8, cells), math.ceil(cells / 32))
        visit = _positive(visit, "num_cells_to_visit")
        sub = self.bits_per_vector
        if sub is None:
            sub = max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)
        sub = _positive(sub, "bits_per_vector")
        if dim % sub:
            raise ValueError(
                f"'bits_per_vector' (the product quantiser's sub-vectors) must divide the "
                f"dimension {dim} (got {sub})"
            )
        _positive(self.rerank, "rerank")
        return cells, min(visit, cells), sub


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"'{name}' must be a positive integer (got {value!r})")
    return value


# Process default ###########################################################################

_DEFAULT: ContextVar[tuple[str, ApproxParams]] = ContextVar(
    "sea_pyg_knn_backend", default=("auto", ApproxParams())
)


def _check_backend(backend: str) -> str:
    backend = "mips" if backend == "faiss" else backend
    if backend not in BACKENDS:
        raise ValueError(f"'backend' must be one of {BACKENDS + ('faiss',)} (got {backend!r})")
    return backend


@contextmanager
def knn_backend(
    backend: str = "auto", params: ApproxParams | Mapping[str, Any] | None = None
) -> Iterator[None]:
    """Within the block, every search given ``backend="auto"`` (the default of
    :func:`~sea_pyg.nn.cosine_knn`, :class:`~sea_pyg.nn.ItemKNNGraph`,
    :func:`~sea_pyg.nn.cosine_topk`, :func:`~sea_pyg.train.recommend`) uses ``backend`` and
    ``params`` instead: the way to run a model's own item-graph code (FREEDOM, DRAGON, SEA,
    MGCN, LATTICE, MICRO) through faiss without changing it::

        with knn_backend("approx", {"num_cells_to_visit": 64}):
            model = FREEDOM.from_data(data)
    """
    backend = _check_backend(backend)
    if backend in ("mips", "approx"):
        require_faiss(backend)
    token = _DEFAULT.set((backend, ApproxParams.of(params)))
    try:
        yield
    finally:
        _DEFAULT.reset(token)


def knn_scope(backend: str, inherit: bool = False) -> contextlib.AbstractContextManager[None]:
    """The context of a run trained with ``TrainConfig.knn_backend = backend``:
    :func:`knn_backend` ``(backend)``, except that nothing changes when ``backend`` is
    ``"auto"`` (the surrounding default holds) or is already the default in force (its
    :class:`ApproxParams` are kept); with ``inherit``, nothing changes either when a
    :func:`knn_backend` block other than ``"auto"`` is in force (it wins: :func:`load_model
    <sea_pyg.train.load_model>` and :func:`recommend <sea_pyg.train.recommend>` rebuild a
    trained model's graphs with its training backend unless the caller chose one).

    Raises:
        ValueError: an unknown ``backend``.
        ImportError: ``"mips"`` / ``"approx"`` without faiss (naming the install command).
    """
    backend = _check_backend(backend)
    current = _DEFAULT.get()[0]
    if backend == "auto" or current == backend or (inherit and current != "auto"):
        return contextlib.nullcontext()
    return knn_backend(backend)


def resolve_backend(
    backend: str, num_items: int, params: ApproxParams | Mapping[str, Any] | None = None
) -> tuple[str, ApproxParams]:
    """``("exact" | "mips" | "approx", params)`` for a search over ``num_items`` items.

    ``"auto"`` takes the :func:`knn_backend` default, then the size rule of the module
    docstring; explicit ``params`` win over the default's.
    """
    backend = _check_backend(backend)
    if backend == "auto":
        backend, default = _DEFAULT.get()
        params = default if params is None else params
    if backend == "auto":
        backend = "exact"
        if num_items >= AUTO_APPROX_MIN_ITEMS:
            if faiss_available():
                backend = "approx"
                warnings.warn(
                    f"{num_items} items: backend='auto' searches approximately through PyG's "
                    f"ApproxMIPSKNNIndex (see benchmarks/bench_knn.py for its recall); use "
                    f"backend='exact' or knn_backend('exact') for the exact search",
                    stacklevel=3,
                )
            else:
                warnings.warn(
                    f"{num_items} items: the exact dense k-NN search is slow at this size; "
                    f"{INSTALL} to search approximately (backend='auto' then uses 'approx')",
                    stacklevel=3,
                )
    if backend in ("mips", "approx"):
        require_faiss(backend)
    return backend, ApproxParams.of(params)


# Index and search ##########################################################################


def build_index(items: Tensor, backend: str, params: ApproxParams | None = None) -> Any:
    """A PyG ``MIPSKNNIndex`` (``"mips"``) or ``ApproxMIPSKNNIndex`` (``"approx"``) over the
    rows of ``items`` ``(N, d)`` (copied to CPU float32; the approximate index is trained on
    them)."""
    backend = _check_backend(backend)
    require_faiss(backend)
    from torch_geometric.nn.pool import MIPSKNNIndex

    emb = items.detach().to("cpu", torch.float32).contiguous()
    if backend == "mips":
        return MIPSKNNIndex(emb)
    if backend != "approx":
        raise ValueError(f"build_index makes 'mips' or 'approx' indexes (got {backend!r})")
    if emb.size(0) < PQ_MIN_ITEMS:
        raise ValueError(
            f"backend='approx' needs at least {PQ_MIN_ITEMS} items (its product quantiser "
            f"trains 256 centroids per sub-vector; got {emb.size(0)}); use backend='mips'"
        )
    cells, visit, sub = (params or ApproxParams()).resolve(emb.size(0), emb.size(1))
    return _quiet_approx_class()(cells, visit, sub, emb=emb)


@functools.cache
def _quiet_approx_class() -> type:
    from torch_geometric.nn.pool import ApproxMIPSKNNIndex

    class QuietApproxMIPSKNNIndex(ApproxMIPSKNNIndex):
        """PyG's index, without faiss's "please provide at least 39 training points per
        centroid" line on stderr for each of the product quantiser's sub-vectors (the sizes
        are checked above; fewer points only make the k-means coarser)."""

        def _create_index(self, channels: int) -> Any:
            index = super()._create_index(channels)
            index.cp.min_points_per_centroid = 1
            index.pq.cp.min_points_per_centroid = 1
            return index

    return QuietApproxMIPSKNNIndex


def mips_topk(
    index: Any,
    items: Tensor,
    queries: Tensor,
    k: int,
    rerank: int = 1,
    exclude: tuple[Tensor, Tensor] | None = None,
    chunk_size: int = 4096,
) -> tuple[Tensor, Tensor]:
    r"""The ``k`` items of largest inner product with each query, through ``index``.

    Each chunk of ``chunk_size`` queries asks ``index`` for
    :math:`k' = \min(\text{rerank} \cdot k, 2048, N)` candidates (faiss's own order, minus the
    excluded items: PyG's ``exclude_links`` asks for :math:`k'` plus the chunk's largest
    exclusion count, then drops them), re-scores them exactly as
    :math:`\mathbf{q}^\top \mathbf{e}_j` in float32 and keeps the best ``k``.

    Args:
        index: From :func:`build_index` over ``items``.
        items: The indexed vectors ``(N, d)``.
        queries: ``(Q, d)``.
        k: Results per query, :math:`1 \le k \le \min(N, 2048)`.
        rerank: Candidate multiple (1 for the exact index).
        exclude: ``(rowptr (Q + 1,), cols)``: the items excluded for each query, in CSR; the
            caller keeps :math:`k'` plus each query's count at most 2048 (PyG would cap it).
        chunk_size: Queries per faiss call.

    Returns:
        ``(score (Q, k), index (Q, k))`` on the CPU, best first; ``-inf`` / ``-1`` where fewer
        than ``k`` items remain.
    """
    items = items.detach().to("cpu", torch.float32)
    queries = queries.detach().to("cpu", torch.float32)
    num_items = items.size(0)
    if not 1 <= k <= min(num_items, FAISS_MAX_K):
        raise ValueError(
            f"'k' must lie in [1, {min(num_items, FAISS_MAX_K)}] for a faiss search over "
            f"{num_items} items (got {k}); use the exact backend for larger k"
        )
    cand_k = min(max(1, rerank) * k, FAISS_MAX_K, num_items)
    # The exact re-scoring gathers (chunk, k', d) vectors: at most 2^25 values (128 MiB).
    chunk_size = max(1, min(chunk_size, (1 << 25) // (cand_k * max(1, items.size(1)))))
    scores, indices = [], []
    for start in range(0, queries.size(0), chunk_size):
        q = queries[start : start + chunk_size].contiguous()
        links = None
        if exclude is not None:
            ptr = exclude[0][start : start + q.size(0) + 1]
            counts = ptr.diff()
            row = torch.arange(q.size(0)).repeat_interleave(counts)
            links = torch.stack([row, exclude[1][int(ptr[0]) : int(ptr[-1])]])
        cand = index.search(q, cand_k, exclude_links=links).index.long()
        valid = cand >= 0
        vec = items[cand.clamp(min=0)]  # (n, k', d)
        exact = torch.einsum("nd,nkd->nk", q, vec).masked_fill(~valid, float("-inf"))
        top = exact.topk(k, dim=1)
        picked = cand.gather(1, top.indices)
        picked = picked.masked_fill(top.values == float("-inf"), -1)
        scores.append(top.values)
        indices.append(picked)
    if not scores:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat(scores), torch.cat(indices)
