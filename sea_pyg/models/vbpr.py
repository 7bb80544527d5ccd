"""VBPR (He & McAuley, 2016) as in MMRec, for any number of item modalities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sea_pyg.models._multimodal import batch_item_rows, check_features
from sea_pyg.models.base import MultimodalRecommender, TrainOutput, no_neighbourhood
from sea_pyg.models.registry import register_model
from sea_pyg.nn.losses import bpr_loss, emb_loss

__all__ = ["VBPR"]


# MMRec VBPR.yaml: embedding_size 64; reg_weight grid {2.0, 1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5} (the
# best grid point is unpublished; 1e-4 as for MF). Protocol lr 1e-3.
# VBPR+SEA, from the authors' XVBPR log (reference.md 5): reg_weight 2.0, alpha_contrast 0.1,
# explore_loss_coeff 0.01 (taken as the CLUB weight), temp 0.1, heads 32 -> 64 -> 64 -> 32 (the
# separate-learning defaults) on the 32/32 halves of the 64-d per-modality representations.
@register_model(
    "vbpr",
    "VBPR: ID + fused-feature item embeddings (MMRec VBPR)",
    sea_preset=(
        "VBPR+SEA (paper Table 3): VBPR + separate learning on its per-modality content "
        "representations W_m x^m",
        {"reg_weight": 2.0, "align_weight": 0.1, "dist_weight": 0.01, "temperature": 0.1},
    ),
    # MMRec VBPR.yaml's grid
    search_space={
        "reg_weight": [2.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5],
    },
)
class VBPR(MultimodalRecommender):
    r"""Visual BPR with MMRec's architecture, loss and initialisation.

    Every item has a free ID embedding :math:`\mathbf{q}_i \in \mathbb{R}^{d}` and a content
    embedding obtained by **one** Linear layer over the concatenation of its (frozen) raw
    features of all modalities; every user has one free vector of size :math:`2d`:

    .. math::
        \mathbf{f}_i = W \,[\mathbf{x}^{m_1}_i \,\|\, \dots \,\|\, \mathbf{x}^{m_M}_i] + \mathbf{b}
        = \sum_{m} \underbrace{W_m \mathbf{x}^m_i}_{\mathbf{r}^m_i} + \mathbf{b}, \qquad
        \mathbf{e}_i = [\mathbf{q}_i \,\|\, \mathbf{f}_i] \in \mathbb{R}^{2d}, \qquad
        \hat{y}_{ui} = \mathbf{p}_u^\top \mathbf{e}_i

    where :math:`W = [W_{m_1}, \dots, W_{m_M}]` is split by columns per modality. The
    per-modality terms :math:`\mathbf{r}^m_i = W_m \mathbf{x}^m_i` (no bias) are the
    modality representations before fusion (:meth:`modal_item_representations`); fusion is
    their sum plus the bias, which is exactly MMRec's ``item_linear(concat(features))``.

    Loss (MMRec ``BPRLoss`` + ``EmbLoss`` on the :math:`2d`-dimensional batch rows):

    .. math::
        \mathcal{L} = -\frac{1}{B}\sum_{(u,i,j)} \ln\big(10^{-10} + \sigma(\hat{y}_{ui}
        - \hat{y}_{uj})\big) + \lambda\,\frac{\|P_b\|_F + \|E_{i,b}\|_F + \|E_{j,b}\|_F}{B}

    Initialisation as in MMRec: :math:`\mathbf{p}_u` and :math:`\mathbf{q}_i` ``xavier_uniform_``;
    :math:`W` ``xavier_normal_`` over the **whole** fused fan-in :math:`\sum_m F_m`, bias 0.
    MMRec's dropout has ``p = 0`` and is omitted.

    **Mini-batch training** (:meth:`set_minibatch`): VBPR has no graph, and a training step
    already reads only the batch's rows (:math:`\mathbf{p}_u` and the ID and content rows of the
    batch's items, whose features :math:`X_m[\text{items}]` are gathered per step), so its
    activations are :math:`O(B(d + \sum_m F_m))`. In this mode :meth:`embeddings` computes the
    content half :math:`\mathbf{f}_i` in chunks of ``chunk_size`` items (the same numbers as
    the full pass). VBPR+SEA cannot train this way: its alignment needs all items per step.

    Args:
        num_users: Number of users ``U``.
        features: ``{modality: (N, F_m) tensor}``, row ``i`` = item ``i``. Stored as
            non-persistent buffers (frozen, not saved in checkpoints); the column order of
            :math:`W` follows the mapping's order (MMRec: text, then image).
        embedding_dim: :math:`d` (MMRec ``embedding_size``: 64); users get :math:`2d`.
        reg_weight: :math:`\lambda` (MMRec grid: 2.0, 1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5).

    Shapes:
        - :meth:`embeddings`: users ``(U, 2d)``, items ``(N, 2d)``
        - :meth:`modal_item_representations`: ``{m: (N, d)}``
    """

    def __init__(
        self,
        num_users: int,
        features: Mapping[str, Tensor],
        embedding_dim: int = 64,
        reg_weight: float = 1e-4,
    ) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be >= 1, got {embedding_dim}")
        feats = check_features(features)
        num_items = next(iter(feats.values())).size(0)
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.embedding_dim = embedding_dim
        self.reg_weight = reg_weight
        self.modalities = list(feats)
        self.feature_dims = {m: int(x.size(1)) for m, x in feats.items()}
        for m, x in feats.items():
            self.register_buffer(f"x_{m}", x, persistent=False)
        self.user_emb = nn.Embedding(num_users, 2 * embedding_dim)
        self.item_emb = nn.Embedding(num_items, embedding_dim)
        self.item_linear = nn.Linear(sum(self.feature_dims.values()), embedding_dim)
        self.chunk_size: int | None = None  # None: full-graph (one-pass) embeddings
        self.reset_parameters()

    supports_minibatch = True

    def set_minibatch(self, fanout: Sequence[int] | None = None, chunk_size: int = 4096) -> None:
        """Mini-batch mode: no neighbourhood (``fanout`` must be empty), :meth:`embeddings`
        in chunks of ``chunk_size`` items."""
        no_neighbourhood("vbpr", fanout)
        if chunk_size < 1:
            raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}")
        self.chunk_size = int(chunk_size)

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        nn.init.xavier_normal_(self.item_linear.weight)
        nn.init.zeros_(self.item_linear.bias)

    def low_precision_buffers(self) -> list[str]:
        """The item features, which :meth:`loss` reads only as inputs of matrix products: a
        bfloat16 copy stands in for them under ``precision="bf16"``
        (:mod:`sea_pyg.train.precision`)."""
        return [f"x_{m}" for m in self.modalities]

    def feature(self, modality: str) -> Tensor:
        """The raw ``(N, F_m)`` features of ``modality``."""
        return getattr(self, f"x_{modality}")

    def _weight_blocks(self) -> dict[str, Tensor]:
        blocks, start = {}, 0
        for m in self.modalities:
            dim = self.feature_dims[m]
            blocks[m] = self.item_linear.weight[:, start : start + dim]
            start += dim
        return blocks

    def modal_item_representations(self, items: Tensor | None = None) -> dict[str, Tensor]:
        r"""Per-modality item representations before fusion, :math:`\mathbf{r}^m = X_m W_m^\top`.

        Computed afresh from the current parameters, with autograd attached (gradients reach
        :math:`W`). Their sum plus the bias is the content half of the item embedding.

        Args:
            items: Item ids to compute (default: all ``N`` items).

        Returns:
            ``{modality: (len(items) or N, d)}``.
        """
        out = {}
        for m, w in self._weight_blocks().items():
            x = self.feature(m)
            out[m] = F.linear(x if items is None else x[items], w)
        return out

    def _fuse(self, modal: Mapping[str, Tensor]) -> Tensor:
        return sum(modal.values()) + self.item_linear.bias

    def forward(self) -> tuple[Tensor, Tensor]:
        """User ``(U, 2d)`` and item ``(N, 2d)`` embeddings."""
        content = self._fuse(self.modal_item_representations())
        return self.user_emb.weight, torch.cat([self.item_emb.weight, content], dim=-1)

    def forward_train(self, batch: Tensor, all_modal_items: bool = False) -> TrainOutput:
        """Everything the loss needs for a ``(3, B)`` batch.

        Returns a :class:`~sea_pyg.models.TrainOutput` with ``rows`` ``user``, ``pos``,
        ``neg`` (``(B, 2d)`` batch rows) and ``modal`` (``{m: (R, d)}`` per-modality
        representations at item ids ``modal_items``: the batch's distinct items, or all ``N``
        items with ``all_modal_items=True``, so that an extra loss over all items reuses them).
        """
        users, pos, neg = batch
        rows, index = batch_item_rows(torch.cat([pos, neg]), all_modal_items)
        modal = self.modal_item_representations(rows)
        content = self._fuse(modal)[index]
        ids = self.item_emb(torch.cat([pos, neg]))
        items = torch.cat([ids, content], dim=-1)
        b = users.numel()
        return TrainOutput(
            modal, rows, {"user": self.user_emb(users), "pos": items[:b], "neg": items[b:]}
        )

    def loss_terms(self, out: TrainOutput) -> dict[str, Tensor]:
        u, p, n = out.rows["user"], out.rows["pos"], out.rows["neg"]
        terms = {"bpr": bpr_loss((u * p).sum(-1), (u * n).sum(-1), variant="mmrec")}
        if self.reg_weight:
            terms["reg"] = self.reg_weight * emb_loss(u, p, n, batch_rows=True)
        return terms

    def embeddings(self) -> tuple[Tensor, Tensor]:
        if self.chunk_size is None:
            return self.forward()
        with torch.no_grad():
            content = torch.cat([
                self._fuse(self.modal_item_representations(items))
                for items in torch.arange(self.num_items, device=self.item_emb.weight.device)
                .split(self.chunk_size)
            ])
        return self.user_emb.weight, torch.cat([self.item_emb.weight, content], dim=-1)

    def extra_repr(self) -> str:
        dims = ", ".join(f"{m}={d}" for m, d in self.feature_dims.items())
        return (
            f"num_users={self.num_users}, num_items={self.num_items}, features=({dims}), "
            f"embedding_dim={self.embedding_dim}, reg_weight={self.reg_weight}"
        )
