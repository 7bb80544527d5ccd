"""LightGCN (He et al., 2020) as in MMRec, on PyG's ``LGConv``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sea_pyg.models.base import Recommender
from sea_pyg.models.registry import register_model
from sea_pyg.nn.conv import LightGCNPropagation, bipartite_norm_adj
from sea_pyg.nn.losses import bpr_loss, emb_loss

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

    Args:
        num_users: Number of users ``U``.
        num_items: Number of items ``N``.
        train_edge_index: ``(2, E)`` training interactions (user ids, item ids).
        embedding_dim: Embedding size (MMRec: 64).
        num_layers: Propagation layers ``L`` (MMRec grid: 1-4).
        reg_weight: Regularisation weight (MMRec grid: 1e-2 ... 1e-6).
    """

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
        self.reset_parameters()

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
        user_out, item_out = self.forward()
        u, p, n = user_out[users], item_out[pos], item_out[neg]
        terms = {"bpr": bpr_loss((u * p).sum(-1), (u * n).sum(-1), variant="mmrec")}
        if self.reg_weight:
            ego = (self.user_emb(users), self.item_emb(pos), self.item_emb(neg))
            terms["reg"] = self.reg_weight * emb_loss(*ego, batch_rows=True)
        return terms

    def embeddings(self) -> tuple[Tensor, Tensor]:
        return self.forward()

    def extra_repr(self) -> str:
        return (
            f"num_users={self.num_users}, num_items={self.num_items}, "
            f"embedding_dim={self.embedding_dim}, reg_weight={self.reg_weight}"
        )
