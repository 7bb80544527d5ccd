"""Matrix factorisation trained with BPR (MMRec's ``BPR`` model)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from sea_pyg.models.base import Recommender, no_neighbourhood
from sea_pyg.models.registry import register_model
from sea_pyg.nn.losses import bpr_loss, emb_loss

__all__ = ["MFBPR"]


@register_model(
    "mf", "matrix factorisation with BPR (MMRec BPR)",
    # MMRec BPR.yaml's grid
    search_space={
        "reg_weight": [2.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5],
    },
)
class MFBPR(Recommender):
    r"""Matrix factorisation with the BPR loss.

    .. math::
        \hat{y}_{ui} = \mathbf{p}_u^\top \mathbf{q}_i, \qquad
        \mathcal{L} = -\frac{1}{B}\sum_{(u,i,j)} \ln\big(10^{-10} + \sigma(\hat{y}_{ui}
        - \hat{y}_{uj})\big) + \lambda\,\frac{\|P_b\|_F + \|Q_{i,b}\|_F + \|Q_{j,b}\|_F}{B}

    (MMRec's ``BPRLoss`` plus ``EmbLoss``: un-squared Frobenius norms of the batch rows).
    Embeddings are initialised with ``xavier_normal_``.

    **Mini-batch training** needs nothing new: a step reads only the batch's rows
    :math:`\mathbf{p}_u, \mathbf{q}_i, \mathbf{q}_j` (no neighbours; activations
    :math:`O(Bd)`), and :meth:`embeddings` returns the two tables. :meth:`set_minibatch` only
    checks that no fan-out is asked for.

    Args:
        num_users: Number of users.
        num_items: Number of items.
        embedding_dim: Embedding size (MMRec: 64).
        reg_weight: :math:`\lambda` (MMRec grid: 2.0 ... 1e-5).
    """

    def __init__(
        self, num_users: int, num_items: int, embedding_dim: int = 64, reg_weight: float = 1e-4
    ) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be >= 1, got {embedding_dim}")
        self.num_users, self.num_items = num_users, num_items
        self.embedding_dim = embedding_dim
        self.reg_weight = reg_weight
        self.user_emb = nn.Embedding(num_users, embedding_dim)
        self.item_emb = nn.Embedding(num_items, embedding_dim)
        self.reset_parameters()

    supports_minibatch = True

    def set_minibatch(self, fanout: Sequence[int] | None = None, chunk_size: int = 4096) -> None:
        """Mini-batch training is MF's own training (see the class documentation)."""
        no_neighbourhood("mf", fanout)

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.user_emb.weight)
        nn.init.xavier_normal_(self.item_emb.weight)

    def loss(self, batch: Tensor) -> dict[str, Tensor]:
        users, pos, neg = batch
        u, p, n = self.user_emb(users), self.item_emb(pos), self.item_emb(neg)
        terms = {"bpr": bpr_loss((u * p).sum(-1), (u * n).sum(-1), variant="mmrec")}
        if self.reg_weight:
            terms["reg"] = self.reg_weight * emb_loss(u, p, n, batch_rows=True)
        return terms

    def embeddings(self) -> tuple[Tensor, Tensor]:
        return self.user_emb.weight, self.item_emb.weight

    def extra_repr(self) -> str:
        return (
            f"num_users={self.num_users}, num_items={self.num_items}, "
            f"embedding_dim={self.embedding_dim}, reg_weight={self.reg_weight}"
        )
