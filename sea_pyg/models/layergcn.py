"""LayerGCN (Zhou et al., ICDE 2023) as in MMRec: layer-refined GCN with edge dropout."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sea_pyg.models.base import Recommender
from sea_pyg.models.registry import register_model
from sea_pyg.nn.conv import bipartite_norm_adj
from sea_pyg.nn.data_parallel import sharded_sum
from sea_pyg.nn.graph import (
    degree_sensitive_edge_pruning,
    degree_sensitive_edge_weights,
    unique_edges,
)
from sea_pyg.nn.layer_refined import LayerRefinedPropagation
from sea_pyg.nn.losses import bpr_loss

__all__ = ["LayerGCN"]

#: Edge-sampling schedules of the training graph (see :class:`LayerGCN`).
EDGE_SAMPLING = ("alternate", "degree", "uniform")


# MMRec LayerGCN.yaml: embedding_size 64, n_layers [4]; grid reg_weight {1e-2, 1e-3, 1e-4, 1e-5},
# dropout {0.0, 0.1, 0.2}. No chosen point is published (the LayerGCN paper has no Amazon-Baby
# run): the first grid values, reg_weight 1e-2 and dropout 0.0. Protocol lr 1e-3.
@register_model(
    "layergcn",
    "LayerGCN: layer-refined GCN with degree-sensitive edge dropout (MMRec LayerGCN)",
    # MMRec LayerGCN.yaml's grid
    search_space={
        "num_layers": [4],
        "dropout": [0.0, 0.1, 0.2],
        "reg_weight": [1e-2, 1e-3, 1e-4, 1e-5],
    },
)
class LayerGCN(Recommender):
    r"""LayerGCN: LightGCN layers re-weighted by their similarity to the ego embeddings.

    **Forward** on a graph :math:`A` (the normalised full training graph :math:`\hat{A}`, or
    this epoch's sparsified one :math:`\tilde{A}`), from the ego embeddings
    :math:`\mathbf{E}^{(0)} = [E_U; E_I]` (``xavier_uniform_``), with
    :class:`~sea_pyg.nn.LayerRefinedPropagation`:

    .. math::
        \mathbf{E}^{(l)} = \operatorname{diag}(w^{(l)})\,A\,\mathbf{E}^{(l-1)}, \quad
        w^{(l)}_v = \cos\big((A\mathbf{E}^{(l-1)})_v, \mathbf{E}^{(0)}_v\big), \qquad
        [\mathbf{U}; \mathbf{I}] = \sum_{l=1}^{L} \mathbf{E}^{(l)}, \qquad
        \hat{y}_{ui} = \mathbf{U}_u^\top \mathbf{I}_i

    (the ego layer is not in the sum).

    **Edge dropout**, redrawn before every training epoch (:meth:`pre_epoch`): of the
    :math:`E` distinct training edges, :math:`\lfloor E(1-p)\rfloor` are kept, drawn without
    replacement (:func:`~sea_pyg.nn.graph.degree_sensitive_edge_pruning`), and re-normalised
    with their own degrees, :math:`\tilde{A} = \tilde{D}^{-1/2} A_{kept} \tilde{D}^{-1/2}`.
    MMRec alternates the sampling distribution from one epoch to the next
    (``edge_sampling="alternate"``): even epochs (0, 2, ...) draw with probabilities
    :math:`\propto 1/\sqrt{(d_u+\epsilon)(d_i+\epsilon)}` of the full graph (edges of hubs
    are dropped first), odd epochs draw uniformly. ``"degree"`` and ``"uniform"`` use one of
    the two every epoch. Evaluation (:meth:`embeddings`) uses the full graph :math:`\hat{A}`.

    **Loss** (MMRec: a **sum** over the batch for both terms, not a mean):

    .. math::
        \mathcal{L} = -\sum_{(u,i,j)} \ln\sigma(\hat{y}_{ui} - \hat{y}_{uj})
        + \lambda\,\tfrac12\big(\|E_{U,b}\|_F^2 + \|E_{I,b^+}\|_F^2 + \|E_{I,b^-}\|_F^2\big)

    where the regulariser is MMRec's ``L2Loss`` on the batch's **ego** rows (users, positives,
    negatives, each row counted as often as it appears). Terms: ``bpr``, ``reg``.

    Args:
        num_users: Number of users ``U``.
        num_items: Number of items ``N``.
        train_edge_index: ``(2, E)`` training interactions (user ids, item ids); duplicate
            pairs are collapsed (binarised graph).
        embedding_dim: Embedding size :math:`d` (MMRec ``embedding_size``: 64).
        num_layers: Refined layers :math:`L` (MMRec ``n_layers``: 4).
        reg_weight: :math:`\lambda` (MMRec grid: 1e-2, 1e-3, 1e-4, 1e-5).
        dropout: Fraction :math:`p \in [0, 1)` of training edges dropped each epoch (MMRec
            grid: 0.0, 0.1, 0.2; 0 trains on the full graph).
        edge_sampling: ``"alternate"`` (MMRec), ``"degree"`` or ``"uniform"``.

    Shapes:
        - :meth:`embeddings`: users ``(U, d)``, items ``(N, d)``
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        train_edge_index: Tensor,
        embedding_dim: int = 64,
        num_layers: int = 4,
        reg_weight: float = 1e-2,
        dropout: float = 0.0,
        edge_sampling: str = "alternate",
    ) -> None:
        super().__init__()
        if int(embedding_dim) < 1:
            raise ValueError(f"`embedding_dim` must be >= 1, got {embedding_dim}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"`dropout` must lie in [0, 1), got {dropout}")
        if edge_sampling not in EDGE_SAMPLING:
            raise ValueError(
                f"`edge_sampling` must be one of {EDGE_SAMPLING} ('alternate': degree-sensitive "
                f"on even epochs and uniform on odd ones, as MMRec), got {edge_sampling!r}"
            )
        if float(reg_weight) < 0:
            raise ValueError(f"`reg_weight` must be >= 0, got {reg_weight}")
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.embedding_dim = int(embedding_dim)
        self.reg_weight = float(reg_weight)
        self.dropout = float(dropout)
        self.edge_sampling = edge_sampling
        self.user_emb = nn.Embedding(self.num_users, self.embedding_dim)
        self.item_emb = nn.Embedding(self.num_items, self.embedding_dim)
        self.propagation = LayerRefinedPropagation(num_layers, aggregation="sum")

        edges = unique_edges(train_edge_index, self.num_users, self.num_items)
        self.register_buffer("edge_index", edges, persistent=False)
        self.register_buffer(
            "edge_weight",
            degree_sensitive_edge_weights(edges, self.num_users, self.num_items),
            persistent=False,
        )
        self.register_buffer(
            "adj", bipartite_norm_adj(edges, self.num_users, self.num_items), persistent=False
        )
        #: This epoch's sparsified, re-normalised graph (set by :meth:`pre_epoch`).
        self.register_buffer("train_adj", None, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)

    # ---- graphs -------------------------------------------------------------------------------
    def sampling_for_epoch(self, epoch: int) -> str:
        """``"degree"`` or ``"uniform"``: how epoch ``epoch``'s edges are drawn."""
        if self.edge_sampling == "alternate":
            return "degree" if epoch % 2 == 0 else "uniform"
        return self.edge_sampling

    def drop_edges(self, epoch: int = 0, generator: torch.Generator | None = None) -> Tensor:
        """Draw the sparsified, re-normalised graph of epoch ``epoch`` and store it as
        ``train_adj`` (the full graph when ``dropout == 0``). ``generator`` defaults to the
        global RNG."""
        if self.dropout <= 0.0:
            self.train_adj = self.adj
            return self.train_adj
        if self.sampling_for_epoch(epoch) == "degree":
            weights = self.edge_weight
        else:
            weights = torch.ones_like(self.edge_weight)
        kept = degree_sensitive_edge_pruning(
            self.edge_index,
            self.num_users,
            self.num_items,
            self.dropout,
            weights=weights,
            generator=generator,
        )
        self.train_adj = bipartite_norm_adj(kept, self.num_users, self.num_items)
        return self.train_adj

    def pre_epoch(self, epoch: int) -> None:
        """Edge dropout, redrawn before every training epoch."""
        self.drop_edges(epoch)

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, adj: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """User ``(U, d)`` and item ``(N, d)`` embeddings on ``adj`` (default: the full
        graph)."""
        x = torch.cat([self.user_emb.weight, self.item_emb.weight])
        out = self.propagation(x, self.adj if adj is None else adj)
        return out[: self.num_users], out[self.num_users :]

    def loss(self, batch: Tensor) -> dict[str, Tensor]:
        """``bpr`` and ``reg`` (when ``reg_weight > 0``) for a ``(3, B)`` batch, on this
        epoch's sparsified graph (drawn for epoch 0 if :meth:`pre_epoch` has not run)."""
        if self.train_adj is None:
            self.drop_edges(0)
        users, pos, neg = batch
        user_all, item_all = self.forward(self.train_adj)
        u, p, n = user_all[users], item_all[pos], item_all[neg]
        pos_scores, neg_scores = (u * p).sum(-1), (u * n).sum(-1)
        # sums over the batch: over the whole batch under torchrun (sea_pyg.nn.data_parallel)
        bpr = bpr_loss(pos_scores, neg_scores, variant="logsigmoid") * users.numel()
        terms = {"bpr": sharded_sum(bpr)}
        if self.reg_weight:
            ego = (self.user_emb(users), self.item_emb(pos), self.item_emb(neg))
            terms["reg"] = self.reg_weight * 0.5 * sharded_sum(sum(e.pow(2).sum() for e in ego))
        return terms

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final embeddings on the **full** training graph."""
        return self.forward(self.adj)

    def extra_repr(self) -> str:
        return (
            f"num_users={self.num_users}, num_items={self.num_items}, "
            f"embedding_dim={self.embedding_dim}, reg_weight={self.reg_weight}, "
            f"dropout={self.dropout}, edge_sampling={self.edge_sampling!r}"
        )
