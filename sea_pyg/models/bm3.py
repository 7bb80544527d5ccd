"""BM3 (Zhou et al., 2023) as in MMRec, for any number of item modalities."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sea_pyg.models._multimodal import batch_item_rows, check_features, project_modalities
from sea_pyg.models.base import MultimodalRecommender, TrainOutput
from sea_pyg.models.registry import register_model
from sea_pyg.nn.conv import LightGCNPropagation, bipartite_norm_adj
from sea_pyg.nn.losses import emb_loss

__all__ = ["BM3"]


def _neg_cos(a: Tensor, b: Tensor) -> Tensor:
    r""":math:`1 - \operatorname{mean}_b \cos(\mathbf{a}_b, \mathbf{b}_b)` (``b`` detached)."""
    return 1.0 - F.cosine_similarity(a, b.detach(), dim=-1).mean()


# MMRec BM3.yaml: embedding_size 64, cl_weight 2.0; grid n_layers {1, 2}, dropout {0.3, 0.5},
# reg_weight {0.1, 0.01}. Defaults: the official best for Baby (1, 0.5, 0.1). Protocol lr 1e-3.
@register_model(
    "bm3", "BM3: self-supervised, no negatives, dropout target views (MMRec BM3)",
    # MMRec BM3.yaml's grid
    search_space={
        "num_layers": [1, 2],
        "dropout": [0.3, 0.5],
        "reg_weight": [0.1, 0.01],
    },
)
class BM3(MultimodalRecommender):
    r"""BM3: bootstrapped latent representations, trained without negative samples.

    **Online encoder**: LightGCN on the full normalised training graph :math:`\hat{A}` with an
    item-ID residual, and one Linear :math:`T_m: F_m \to d` per modality on the raw features
    (**trainable**, MMRec's ``from_pretrained(freeze=False)``):

    .. math::
        [\mathbf{U}; \mathbf{I}'] = \frac{1}{L+1}\sum_{l=0}^{L} \hat{A}^l [E_U; E_I], \qquad
        \mathbf{I} = \mathbf{I}' + E_I, \qquad \mathbf{H}^m = T_m(X^m)

    **Target views** (no gradient): dropout with rate :math:`p` (kept entries scaled by
    :math:`1/(1-p)`, always active, also in eval mode) of the online tables,
    :math:`\dot{\mathbf{U}}, \dot{\mathbf{I}}, \dot{\mathbf{H}}^m`. **Predictor** :math:`g`: a
    Linear :math:`d \to d` shared by users, items and modalities.

    **Loss** for a batch of :math:`B` interactions :math:`(u_b, i_b)`, with
    :math:`C(\mathbf{a}, \mathbf{b}) = 1 - \frac{1}{B}\sum_b \cos(\mathbf{a}_b, \mathbf{b}_b)`:

    .. math::
        \mathcal{L} = \underbrace{C(g(\mathbf{U})_{u}, \dot{\mathbf{I}}_{i})
        + C(g(\mathbf{I})_{i}, \dot{\mathbf{U}}_{u})}_{\text{rec}}
        + \lambda \frac{\|\mathbf{U}\|_F + \|\mathbf{I}\|_F}{N}
        + \beta \sum_m \Big[\underbrace{C(g(\mathbf{H}^m)_{i}, \dot{\mathbf{I}}_{i})}_{
        \text{inter-modal align}} + \underbrace{C(g(\mathbf{H}^m)_{i}, \dot{\mathbf{H}}^m_{i})}_{
        \text{intra-modal mask}}\Big]

    (the regulariser is MMRec's ``EmbLoss`` over the **full** online tables, divided by the
    number of items :math:`N`). Scores use the predictor: :math:`\hat{y}_{ui} =
    g(\mathbf{U})_u^\top g(\mathbf{I})_i`.

    Initialisation as in MMRec: ID embeddings ``xavier_uniform_``; the predictor's and the
    :math:`T_m`'s weights ``xavier_normal_``, their biases PyTorch's default.

    Args:
        num_users: Number of users ``U``.
        train_edge_index: ``(2, E)`` training interactions (user ids, item ids); duplicate
            pairs are collapsed (binarised graph).
        features: ``{modality: (N, F_m) tensor}``, row ``i`` = item ``i`` (copied; the copy is
            a trainable parameter unless ``trainable_features=False``).
        embedding_dim: :math:`d` (MMRec: 64), also the modality projection size.
        num_layers: LightGCN layers :math:`L` (MMRec ``n_layers``, grid: 1, 2).
        dropout: Target-view dropout :math:`p` (MMRec grid: 0.3, 0.5).
        reg_weight: :math:`\lambda` (MMRec grid: 0.1, 0.01).
        cl_weight: :math:`\beta` (MMRec: 2.0).
        trainable_features: Keep MMRec's trainable raw feature tables (default) or freeze them.

    Shapes:
        - batches: ``(2, B)`` ``[users; items]`` (:attr:`uses_negatives` is ``False``)
        - :meth:`embeddings`: users ``(U, d)``, items ``(N, d)`` (after the predictor)
        - :meth:`modal_item_representations`: ``{m: (N, d)}``
    """

    uses_negatives = False

    def __init__(
        self,
        num_users: int,
        train_edge_index: Tensor,
        features: Mapping[str, Tensor],
        embedding_dim: int = 64,
        num_layers: int = 1,
        dropout: float = 0.5,
        reg_weight: float = 0.1,
        cl_weight: float = 2.0,
        trainable_features: bool = True,
    ) -> None:
        super().__init__()
        feats = check_features(features)
        num_items = next(iter(feats.values())).size(0)
        if embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be >= 1, got {embedding_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must lie in [0, 1), got {dropout}")
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.embedding_dim = embedding_dim
        self.dropout, self.reg_weight, self.cl_weight = float(dropout), reg_weight, cl_weight
        self.modalities = list(feats)

        self.user_emb = nn.Embedding(num_users, embedding_dim)
        self.item_emb = nn.Embedding(num_items, embedding_dim)
        self.predictor = nn.Linear(embedding_dim, embedding_dim)
        self.features = nn.ParameterDict(
            {m: nn.Parameter(x.clone(), requires_grad=trainable_features) for m, x in feats.items()}
        )
        self.feat_trs = nn.ModuleDict(
            {m: nn.Linear(x.size(1), embedding_dim) for m, x in feats.items()}
        )
        self.propagation = LightGCNPropagation(num_layers, aggregation="mean")
        self.register_buffer(
            "adj",
            bipartite_norm_adj(train_edge_index, self.num_users, self.num_items),
            persistent=False,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        self.predictor.reset_parameters()
        nn.init.xavier_normal_(self.predictor.weight)
        for lin in self.feat_trs.values():
            lin.reset_parameters()
            nn.init.xavier_normal_(lin.weight)

    def forward(self) -> tuple[Tensor, Tensor]:
        """Online user ``(U, d)`` and item ``(N, d)`` embeddings (before the predictor)."""
        x = torch.cat([self.user_emb.weight, self.item_emb.weight])
        out = self.propagation(x, self.adj)
        return out[: self.num_users], out[self.num_users :] + self.item_emb.weight

    def modal_item_representations(self, items: Tensor | None = None) -> dict[str, Tensor]:
        r"""Per-modality online item representations :math:`\mathbf{H}^m = T_m(X^m)`.

        Before the predictor and before any fusion (BM3 aligns, never fuses, modalities).
        Computed afresh from the current parameters, with autograd attached.

        Args:
            items: Item ids to compute (default: all ``N`` items).

        Returns:
            ``{modality: (len(items) or N, d)}``.
        """
        return project_modalities(self.features, self.feat_trs, items)

    def _target(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return F.dropout(x.detach(), p=self.dropout, training=True)

    def forward_train(self, batch: Tensor, all_modal_items: bool = False) -> TrainOutput:
        """Online and target representations for a ``(2, B)`` batch ``[users; items]``.

        Returns a :class:`~sea_pyg.models.TrainOutput` with ``modal`` (``{m: (R, d)}`` at item
        ids ``modal_items``; ``None`` = all items) and ``rows``: the full online tables
        ``user_all`` / ``item_all``, the batch rows ``user`` / ``item`` and their targets
        ``user_target`` / ``item_target``, and per modality ``modal_batch`` and
        ``modal_target`` (``{m: (B, d)}``). A target row is shared by repeated ids in the batch
        (dropout is drawn per table row, as in MMRec).
        """
        if batch.size(0) < 2:
            raise ValueError(f"BM3 expects (2, B) batches [users; items], got {tuple(batch.shape)}")
        users, items = batch[0], batch[1]
        user_all, item_all = self.forward()
        user_tgt, item_tgt = self._target(user_all), self._target(item_all)
        rows, index = batch_item_rows(items, all_modal_items)
        modal = self.modal_item_representations(rows)
        return TrainOutput(modal, rows, {
            "user_all": user_all,
            "item_all": item_all,
            "user": user_all[users],
            "item": item_all[items],
            "user_target": user_tgt[users],
            "item_target": item_tgt[items],
            "modal_batch": {m: r[index] for m, r in modal.items()},
            "modal_target": {m: self._target(r)[index] for m, r in modal.items()},
        })

    def loss_terms(self, out: TrainOutput) -> dict[str, Tensor]:
        g = self.predictor
        rows = out.rows
        u_pred, i_pred = g(rows["user"]), g(rows["item"])
        terms = {
            "rec": _neg_cos(u_pred, rows["item_target"]) + _neg_cos(i_pred, rows["user_target"])
        }
        if self.reg_weight:
            terms["reg"] = self.reg_weight * emb_loss(rows["user_all"], rows["item_all"])
        if self.cl_weight:
            align = mask = 0.0
            for m, h in rows["modal_batch"].items():
                h_pred = g(h)
                align = align + _neg_cos(h_pred, rows["item_target"])
                mask = mask + _neg_cos(h_pred, rows["modal_target"][m])
            terms["align"] = self.cl_weight * align
            terms["mask"] = self.cl_weight * mask
        return terms

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Scoring embeddings ``(g(U), g(I))``: the predictor is applied at inference too."""
        user_all, item_all = self.forward()
        return self.predictor(user_all), self.predictor(item_all)

    def extra_repr(self) -> str:
        dims = ", ".join(f"{m}={x.size(1)}" for m, x in self.features.items())
        return (
            f"num_users={self.num_users}, num_items={self.num_items}, features=({dims}), "
            f"embedding_dim={self.embedding_dim}, dropout={self.dropout}, "
            f"reg_weight={self.reg_weight}, cl_weight={self.cl_weight}"
        )
