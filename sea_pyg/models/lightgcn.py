"""LightGCN (He et al., 2020) as in MMRec, on PyG's ``LGConv``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sea_pyg.data.neighbor import check_fanout, neighbor_loader, sampling_graph
from sea_pyg.models.base import Recommender
from sea_pyg.models.registry import register_model
from sea_pyg.nn.conv import LightGCNPropagation, bipartite_norm_adj
from sea_pyg.nn.losses import bpr_loss, emb_loss
from sea_pyg.nn.sampled import layerwise_propagation, sampled_edge_weight, sampled_propagation

__all__ = ["LightGCN"]


@register_model(
    "lightgcn", "LightGCN on PyG LGConv (MMRec LightGCN)",
    # MMRec LightGCNTorch.yaml's grid
    search_space={
        "num_layers": [1, 2, 3, 4],
        "reg_weight": [1e-2, 1e-3, 1e-4, 1e-5, 1e-6],
    },
)
class LightGCN(Recommender):
    r"""LightGCN with MMRec's loss and initialisation.

    .. math::
        \mathbf{E}^{(l+1)} = \hat{A}\,\mathbf{E}^{(l)}, \qquad
        \mathbf{E} = \frac{1}{L+1}\sum_{l=0}^{L} \mathbf{E}^{(l)}, \qquad
        \hat{y}_{ui} = \mathbf{e}_u^\top \mathbf{e}_i

    :math:`\hat{A}` is the binarised, symmetric-normalised training graph (degrees
    :math:`+10^{-7}`), built once by :func:`~sea_pyg.nn.bipartite_norm_adj` and propagated
    with :class:`~sea_pyg.nn.SymLGConv` (PyG ``LGConv``, ``normalize=False``). The loss is
    MMRec's BPR (natural log, :math:`+10^{-10}`) on the final embeddings plus
    ``reg_weight`` times the un-squared Frobenius ``EmbLoss`` of the batch's layer-0 rows.
    Embeddings are initialised with ``xavier_uniform_``.

    **Mini-batch training** (:meth:`set_minibatch`, ``sea-pyg train --minibatch --fanout 10
    10``): each step computes the batch's users, positives and negatives (the seed nodes) on
    their sampled ``L``-hop neighbourhood, drawn by PyG's
    :class:`~torch_geometric.loader.NodeLoader` (:mod:`sea_pyg.data.neighbor`), with the
    global normalisation rescaled by :math:`d_v / k_v` (:mod:`sea_pyg.nn.sampled`: unbiased,
    and exactly the full-graph step with fan-out ``-1``); the loss is unchanged. Evaluation
    embeddings are then computed layer by layer over node chunks with full neighbourhoods:
    exactly the full-graph ones.

    Args:
        num_users: Number of users ``U``.
        num_items: Number of items ``N``.
        train_edge_index: ``(2, E)`` training interactions (user ids, item ids).
        embedding_dim: Embedding size (MMRec: 64).
        num_layers: Propagation layers ``L`` (MMRec grid: 1-4).
        reg_weight: Regularisation weight (MMRec grid: 1e-2 ... 1e-6).
    """

    supports_minibatch = True
    samples_neighbourhood = True

    def __init__(
        self,
        num_users: int,
        num_items: int,
        train_edge_index: Tensor,
        embedding_dim: int = 64,
        num_layers: int = 2,
        reg_weight: float = 1e-4,
    ) -> None:
        super().__init__()
        self.num_users, self.num_items = num_users, num_items
        self.embedding_dim = embedding_dim
        self.reg_weight = reg_weight
        self.user_emb = nn.Embedding(num_users, embedding_dim)
        self.item_emb = nn.Embedding(num_items, embedding_dim)
        self.propagation = LightGCNPropagation(num_layers, aggregation="mean")
        self.register_buffer(
            "adj", bipartite_norm_adj(train_edge_index, num_users, num_items), persistent=False
        )
        self.num_layers = num_layers
        self.fanout: list[int] | None = None  # None: full-graph training
        self.reset_parameters()

    def set_minibatch(
        self, fanout: Sequence[int] | None = None, chunk_size: int = 4096, backend: str = "auto"
    ) -> None:
        """Train on sampled neighbourhoods from now on (see the class documentation).

        Args:
            fanout: Neighbours kept per node at each of the ``L`` hops (``-1``: all; default
                10 per layer).
            chunk_size: Nodes per chunk of the layer-wise evaluation.
            backend: Sampler: ``"auto"`` (PyG's compiled one when available, else the
                pure-torch one), ``"pyg"`` or ``"torch"`` (see
                :func:`~sea_pyg.data.neighbor.neighbor_sampler`).
        """
        L = self.num_layers
        fanout = [10] * L if fanout is None else check_fanout(fanout, L, "fanout (--fanout)")
        if chunk_size < 1:
            raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}")
        graph = sampling_graph(self.adj)
        self.fanout = fanout
        self._train_loader = neighbor_loader(graph, fanout, backend)
        self._eval_loader = neighbor_loader(graph, [-1], backend, batch_size=chunk_size)

    def _ego_rows(self, n_id: Tensor) -> Tensor:
        """Layer-0 rows of the global node ids ``n_id`` (users ``< U``, then items)."""
        n_id = n_id.to(self.user_emb.weight.device)
        is_user = n_id < self.num_users
        rows = self.user_emb.weight.new_empty(n_id.numel(), self.embedding_dim)
        # index_put keeps autograd to both tables
        rows = rows.index_put((is_user.nonzero().view(-1),), self.user_emb(n_id[is_user]))
        return rows.index_put(
            ((~is_user).nonzero().view(-1),), self.item_emb(n_id[~is_user] - self.num_users)
        )

    def sampled_forward(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """Final embeddings of ``users`` and ``items`` from their sampled neighbourhoods."""
        u = self.num_users
        seeds, inv = torch.unique(torch.cat([users, items + u]).cpu(), return_inverse=True)
        sub = self._train_loader(seeds)
        device = self.user_emb.weight.device
        edge_index = sub.edge_index.to(device)
        weight = sampled_edge_weight(edge_index, sub.edge_weight.to(device), sub.deg.to(device))
        out = sampled_propagation(
            self._ego_rows(sub.n_id), edge_index, weight, self.num_layers,
            num_sampled_edges=sub.num_sampled_edges,
        )
        final = out[inv.to(device)]
        return final[: users.numel()], final[users.numel() :]

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)

    def forward(self) -> tuple[Tensor, Tensor]:
        """Final user and item embeddings ``(U, d)``, ``(N, d)``."""
        x = torch.cat([self.user_emb.weight, self.item_emb.weight])
        out = self.propagation(x, self.adj)
        return out[: self.num_users], out[self.num_users :]

    def loss(self, batch: Tensor) -> dict[str, Tensor]:
        users, pos, neg = batch
        if self.fanout is None:
            user_out, item_out = self.forward()
            u, p, n = user_out[users], item_out[pos], item_out[neg]
        else:
            u, items = self.sampled_forward(users, torch.cat([pos, neg]))
            p, n = items.split(pos.numel())
        terms = {"bpr": bpr_loss((u * p).sum(-1), (u * n).sum(-1), variant="mmrec")}
        if self.reg_weight:
            ego = (self.user_emb(users), self.item_emb(pos), self.item_emb(neg))
            terms["reg"] = self.reg_weight * emb_loss(*ego, batch_rows=True)
        return terms

    def embeddings(self) -> tuple[Tensor, Tensor]:
        if self.fanout is None:
            return self.forward()
        tables = (self.user_emb.weight.detach(), self.item_emb.weight.detach())
        out = layerwise_propagation(tables, self._eval_loader, self.num_layers)
        return out[: self.num_users], out[self.num_users :]

    def extra_repr(self) -> str:
        return (
            f"num_users={self.num_users}, num_items={self.num_items}, "
            f"embedding_dim={self.embedding_dim}, reg_weight={self.reg_weight}"
            + ("" if self.fanout is None else f", fanout={self.fanout}")
        )
