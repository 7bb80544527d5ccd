r"""Neighbour sampling for mini-batch training, on PyG's sampler and loader machinery.

Mini-batch training of a graph recommender computes each batch's rows on the batch's sampled
``L``-hop neighbourhood instead of the whole graph. The sampling is PyG's: a
:class:`~torch_geometric.loader.NodeLoader` over the homogeneous user-item graph, called on the
batch's seed nodes, with a :class:`~torch_geometric.sampler.BaseSampler` returning a
:class:`~torch_geometric.sampler.SamplerOutput`:

* PyG's own :class:`~torch_geometric.sampler.NeighborSampler` when ``pyg-lib`` or
  ``torch-sparse`` is importable (it needs one of them to sample);
* otherwise :class:`TorchNeighborSampler`, a vectorised pure-torch sampler (no compiled
  extension; no Python loop over nodes) producing the same ``SamplerOutput``: seeds first, then
  each hop's new nodes; ``row`` (source) and ``col`` (destination) local ids; ``edge`` the
  sampled edges' positions, mapped back to the input edge ids by ``edge_permutation``.

Sampling follows PyG's ``replace=False`` semantics: a node of degree :math:`d_v` keeps all its
in-neighbours when :math:`d_v \le f` (or :math:`f = -1`), else a uniformly random subset of
exactly :math:`f` of them, drawn by Floyd's algorithm vectorised over the frontier
(:math:`O(n f^2)` work and :math:`O(n f)` memory for :math:`n` frontier nodes): the cost of a
hop is bounded by the frontier and the fan-out, never by the graph.

Randomness comes from ``generator`` (default: torch's global generator, which the trainer's
checkpoints save, so a resumed mini-batch run is exact with this sampler; PyG's compiled
samplers draw from their own generators).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch_geometric.typing as pyg_typing
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.loader import NodeLoader
from torch_geometric.sampler import BaseSampler, NodeSamplerInput, SamplerOutput
from torch_geometric.sampler.neighbor_sampler import node_sample

__all__ = [
    "TorchNeighborSampler",
    "neighbor_sampler",
    "neighbor_loader",
    "sampling_graph",
    "check_fanout",
    "pyg_sampler_available",
]


def pyg_sampler_available() -> bool:
    """Whether PyG's :class:`~torch_geometric.sampler.NeighborSampler` can sample here
    (``pyg-lib`` or ``torch-sparse`` importable)."""
    return bool(pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE)


def check_fanout(fanout: Sequence[int], num_layers: int, owner: str = "fanout") -> list[int]:
    """``fanout`` as a list of ints, one per layer, each ``>= 1`` or ``-1`` (all neighbours).

    Raises:
        ValueError: wrong length or value (the message names ``owner`` and the fix).
    """
    try:
        out = [int(f) for f in fanout]
    except (TypeError, ValueError):
        raise ValueError(f"{owner} must be a list of integers, got {fanout!r}") from None
    if len(out) != num_layers:
        raise ValueError(
            f"{owner} needs one fan-out per propagation layer: {num_layers} value(s) (e.g. "
            f"{' '.join(['10'] * num_layers) or 'none'}), got {len(out)} ({out})"
        )
    bad = [f for f in out if f < 1 and f != -1]
    if bad:
        raise ValueError(f"{owner}: every fan-out must be >= 1 or -1 (all neighbours), got {out}")
    return out


def _floyd_subsets(deg: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    r"""``(m, k)`` offsets: row ``r`` a uniformly random ``k``-subset of ``[0, deg[r])``
    (every ``deg[r] >= k``), by Floyd's algorithm run for all rows at once: for
    ``j = deg - k, ..., deg - 1`` draw ``t`` uniform on ``[0, j]`` and insert ``j`` if ``t`` is
    already chosen, else ``t``. Every ``k``-subset has probability :math:`1/\binom{d}{k}`."""
    m = deg.numel()
    out = torch.empty(m, k, dtype=torch.long)
    for step in range(k):
        j = deg - k + step
        u = torch.rand(m, dtype=torch.float64, generator=generator)
        t = torch.minimum((u * (j + 1).double()).long(), j)
        dup = (
            (out[:, :step] == t.unsqueeze(1)).any(dim=1)
            if step
            else torch.zeros_like(j, dtype=torch.bool)
        )
        out[:, step] = torch.where(dup, j, t)
    return out


class TorchNeighborSampler(BaseSampler):
    r"""Pure-torch neighbour sampler (PyG's ``replace=False`` semantics), vectorised.

    For each hop ``h`` with fan-out :math:`f_h`, every node added at the previous hop (the
    seeds at hop 0) keeps its in-neighbours :math:`\mathcal{N}(v)` if
    :math:`|\mathcal{N}(v)| \le f_h` or :math:`f_h = -1`, else a uniform random subset of size
    :math:`f_h` (Floyd's algorithm, see the module). Nodes already in the subgraph are not
    added again (PyG's non-disjoint mode); new nodes are appended in increasing id order.

    Args:
        data: A homogeneous graph (``edge_index`` ``(2, E)``: messages flow from row 0 to
            row 1, and ``num_nodes``).
        num_neighbors: Fan-out per hop (``-1``: all neighbours).
        generator: Source of randomness (default: torch's global generator).

    Returns (:meth:`sample_from_nodes`): a :class:`~torch_geometric.sampler.SamplerOutput`
    with ``node`` (global ids, the seeds first, in the given order), ``row``/``col`` (local
    source/destination ids), ``edge`` (positions in the destination-sorted edge list:
    ``edge_permutation[edge]`` are the input edge ids), ``num_sampled_nodes`` and
    ``num_sampled_edges`` per hop.
    """

    def __init__(
        self,
        data: Data,
        num_neighbors: Sequence[int],
        generator: torch.Generator | None = None,
    ) -> None:
        num_nodes = int(data.num_nodes)
        src, dst = data.edge_index.detach().cpu().long()
        if dst.numel() < 2 or bool((dst[1:] >= dst[:-1]).all()):
            # already destination-sorted (e.g. sampling_graph's): the CSC is the input, shared,
            # not copied, and edge positions are the input edge ids (no permutation)
            self.perm = None
            self.row = src.contiguous()
        else:
            dst, perm = torch.sort(dst, stable=True)
            self.perm = perm
            self.row = src[perm].contiguous()
        counts = torch.bincount(dst, minlength=num_nodes)
        self.colptr = torch.zeros(num_nodes + 1, dtype=torch.long)
        torch.cumsum(counts, 0, out=self.colptr[1:])
        self.num_nodes = num_nodes
        self.num_neighbors = [int(f) for f in num_neighbors]
        bad = [f for f in self.num_neighbors if f < 1 and f != -1]
        if bad:
            raise ValueError(
                f"TorchNeighborSampler: num_neighbors must be >= 1 or -1 (all), got "
                f"{self.num_neighbors}"
            )
        self.generator = generator

    @property
    def edge_permutation(self) -> Tensor | None:
        """``(E,)``: input edge id of each position of the destination-sorted edge list;
        ``None`` when the input edges were already sorted by destination (the identity)."""
        return self.perm

    def sample_from_nodes(self, inputs: NodeSamplerInput) -> SamplerOutput:
        """The sampled neighbourhood of ``inputs.node`` (distinct seed ids), see the class
        documentation; ``metadata`` is ``(input_id, time)`` as PyG's samplers set it."""
        return node_sample(inputs, self._sample)

    def sample_from_edges(self, inputs, neg_sampling=None):  # noqa: ANN001
        """Not supported: sample around the seed edges' end nodes with
        :meth:`sample_from_nodes` (raises ``NotImplementedError``)."""
        raise NotImplementedError(
            "TorchNeighborSampler samples around seed nodes only (sample_from_nodes): pass the "
            "batch's users and items as seed nodes"
        )

    def _hop(self, frontier: Tensor, fanout: int) -> tuple[Tensor, Tensor]:
        """``(dst index into frontier, CSC position)`` of the sampled in-edges of
        ``frontier``."""
        start = self.colptr[frontier]
        deg = self.colptr[frontier + 1] - start
        full = deg <= fanout if fanout >= 0 else torch.ones_like(deg, dtype=torch.bool)
        # nodes that keep all their neighbours
        idx_full = full.nonzero().view(-1)
        d_full = deg[idx_full]
        dst_a = torch.repeat_interleave(idx_full, d_full)
        first = torch.cumsum(d_full, 0) - d_full
        off_a = torch.arange(dst_a.numel()) - torch.repeat_interleave(first, d_full)
        pos_a = start[dst_a] + off_a
        # nodes with more neighbours than the fan-out: a uniform fanout-subset each
        idx_part = (~full).nonzero().view(-1)
        if idx_part.numel():
            offs = _floyd_subsets(deg[idx_part], fanout, self.generator)
            dst_b = idx_part.repeat_interleave(fanout)
            pos_b = (start[idx_part].unsqueeze(1) + offs).view(-1)
            dst = torch.cat([dst_a, dst_b])
            pos = torch.cat([pos_a, pos_b])
            order = torch.argsort(dst, stable=True)  # edges grouped by destination
            return dst[order], pos[order]
        return dst_a, pos_a

    def _sample(self, seed: Tensor, seed_time: Tensor | None = None, **kwargs) -> SamplerOutput:
        if isinstance(seed, dict):
            raise ValueError("TorchNeighborSampler samples homogeneous graphs only")
        if seed_time is not None:
            raise ValueError("TorchNeighborSampler does not do temporal sampling")
        seed = seed.long().cpu()
        if seed.numel() and (int(seed.min()) < 0 or int(seed.max()) >= self.num_nodes):
            raise ValueError(
                f"TorchNeighborSampler: seed node ids must lie in [0, {self.num_nodes})"
            )
        known, known_local = torch.sort(seed)
        if known.numel() > 1 and bool((known[1:] == known[:-1]).any()):
            raise ValueError("TorchNeighborSampler: the seed nodes must be distinct")
        nodes = [seed]
        rows, cols, edges = [], [], []
        num_nodes, num_edges = [seed.numel()], []
        frontier, offset, total = seed, 0, seed.numel()
        for fanout in self.num_neighbors:
            dst_idx, pos = self._hop(frontier, fanout)
            src = self.row[pos]
            at = torch.searchsorted(known, src).clamp_(max=max(known.numel() - 1, 0))
            hit = known[at] == src if known.numel() else torch.zeros_like(src, dtype=torch.bool)
            local = torch.empty_like(src)
            local[hit] = known_local[at[hit]]
            new, inv = torch.unique(src[~hit], return_inverse=True)
            local[~hit] = total + inv
            rows.append(local)
            cols.append(offset + dst_idx)
            edges.append(pos)
            num_edges.append(pos.numel())
            nodes.append(new)
            num_nodes.append(new.numel())
            known, order = torch.sort(torch.cat([known, new]))
            known_local = torch.cat([known_local, torch.arange(total, total + new.numel())])[order]
            frontier, offset, total = new, total, total + new.numel()
        cat = (lambda ts: torch.cat(ts)) if rows else (lambda ts: torch.empty(0, dtype=torch.long))
        return SamplerOutput(
            node=torch.cat(nodes),
            row=cat(rows),
            col=cat(cols),
            edge=cat(edges),
            batch=None,
            num_sampled_nodes=num_nodes,
            num_sampled_edges=num_edges,
        )


def neighbor_sampler(
    data: Data,
    num_neighbors: Sequence[int],
    backend: str = "auto",
    generator: torch.Generator | None = None,
) -> BaseSampler:
    """The neighbour sampler for ``data``: PyG's ``NeighborSampler`` (``backend="pyg"``, or
    ``"auto"`` when ``pyg-lib``/``torch-sparse`` is importable), else
    :class:`TorchNeighborSampler` (``"torch"``).

    Raises:
        ValueError: unknown ``backend``, or ``"pyg"`` without ``pyg-lib``/``torch-sparse``.
    """
    if backend not in ("auto", "pyg", "torch"):
        raise ValueError(f"sampler backend must be 'auto', 'pyg' or 'torch', got {backend!r}")
    if backend == "pyg" or (backend == "auto" and pyg_sampler_available()):
        if not pyg_sampler_available():
            raise ValueError(
                "sampler backend 'pyg' needs pyg-lib or torch-sparse; install one, or use "
                "backend 'torch' (the pure-torch sampler)"
            )
        from torch_geometric.sampler import NeighborSampler

        return NeighborSampler(data, num_neighbors=list(num_neighbors), replace=False)
    return TorchNeighborSampler(data, num_neighbors, generator=generator)


def neighbor_loader(
    data: Data,
    num_neighbors: Sequence[int],
    backend: str = "auto",
    generator: torch.Generator | None = None,
    **kwargs,
) -> NodeLoader:
    """A :class:`~torch_geometric.loader.NodeLoader` over ``data`` with
    :func:`neighbor_sampler`; ``loader(seeds)`` returns the sampled subgraph of ``seeds`` as a
    :class:`~torch_geometric.data.Data` (``n_id``, local ``edge_index``, ``e_id``, every node
    and edge attribute of ``data`` restricted to it). ``kwargs`` go to the loader (e.g.
    ``batch_size`` when iterating over all nodes)."""
    sampler = neighbor_sampler(data, num_neighbors, backend, generator)
    return NodeLoader(data, node_sampler=sampler, filter_per_worker=False, **kwargs)


def sampling_graph(adj: Tensor) -> Data:
    r"""The homogeneous graph of a normalised symmetric adjacency, for the samplers.

    Args:
        adj: ``(n, n)`` sparse CSR (or COO) :math:`\hat A` (e.g.
            :func:`~sea_pyg.nn.bipartite_norm_adj`).

    Returns:
        ``Data`` with ``edge_index`` ``(2, nnz)`` (row 0 the neighbour :math:`w`, row 1 the
        node :math:`v` whose row of :math:`\hat A` holds it; sorted by :math:`v`),
        ``edge_weight`` :math:`\hat A_{vw}`, node attribute ``deg`` (stored entries per row:
        the degree :math:`d_v` of the binarised graph) and ``num_nodes``.
    """
    if adj.layout == torch.sparse_csr:
        crow, col, value = adj.crow_indices(), adj.col_indices(), adj.values()
        deg = crow[1:] - crow[:-1]
        dst = torch.repeat_interleave(torch.arange(adj.size(0), device=crow.device), deg)
    elif adj.layout == torch.sparse_coo:
        adj = adj.coalesce()
        (dst, col), value = adj.indices(), adj.values()
        deg = torch.bincount(dst, minlength=adj.size(0))
    else:
        raise ValueError(f"`adj` must be a sparse CSR or COO tensor, got layout {adj.layout}")
    return Data(
        edge_index=torch.stack([col, dst]).long().cpu(),
        edge_weight=value.detach().cpu(),
        deg=deg.long().cpu(),
        num_nodes=int(adj.size(0)),
    )
