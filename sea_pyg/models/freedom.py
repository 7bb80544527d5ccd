"""FREEDOM (Zhou & Shen, 2023) as in MMRec, for any number of item modalities."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from sea_pyg.models._multimodal import batch_item_rows, check_features, project_modalities
from sea_pyg.models.base import MultimodalRecommender, TrainOutput
from sea_pyg.models.registry import register_model
from sea_pyg.nn.conv import LightGCNPropagation, bipartite_norm_adj
from sea_pyg.nn.graph import (
    degree_sensitive_edge_pruning,
    degree_sensitive_edge_weights,
    unique_edges,
)
from sea_pyg.nn.knn import ItemKNNGraph, image_weighted_mix
from sea_pyg.nn.losses import bpr_loss

__all__ = ["FREEDOM"]


# MMRec FREEDOM.yaml: embedding/feat_embed 64, knn_k 10, mm_image_weight 0.1, n_mm_layers 1,
# n_ui_layers 2; grid dropout {0.8, 0.9}, reg_weight {0, 1e-5, 1e-4, 1e-3}. Defaults: the
# FREEDOM+SEA run (dropout 0.8, reg_weight 0). Protocol lr 1e-3.
# FREEDOM+SEA, from the authors' XFREEDOM log (reference.md 5): dropout 0.8, reg_weight 0, heads
# 32 -> 33 -> 33 -> 63 on the 32/32 halves of the 64-d T_m(x^m). The SEA weights and temperature
# are not in its log: the official SEA defaults (0.012, 0.006, 0.2) are assumed.
@register_model(
    "freedom",
    "FREEDOM: frozen item kNN graph + degree-sensitive edge pruning (MMRec)",
    sea_preset=(
        "FREEDOM+SEA (paper Table 3): FREEDOM + separate learning on T_m(x^m) (which do not "
        "feed the score unless fuse_modalities=true)",
        {"proj_hidden_dim": 33, "proj_dim": 63},
    ),
    # MMRec FREEDOM.yaml's grid
    search_space={
        "dropout": [0.8, 0.9],
        "reg_weight": [0.0, 1e-5, 1e-4, 1e-3],
    },
)
class FREEDOM(MultimodalRecommender):
    r"""FREEDOM: a frozen item-item graph and degree-sensitive pruning of the user-item graph.

    **Item-item graph** (frozen, built once from the raw features): per modality a directed
    binary cosine :math:`k`-NN graph normalised as :math:`r_i^{-1/2} r_j^{-1/2}` (row sums
    :math:`+10^{-7}` on both sides, :math:`\approx 1/k`), mixed with fixed weights,
    :math:`\mathbf{S} = \sum_m w_m \hat{\mathbf{A}}_m` (MMRec: :math:`0.1\,\hat{A}_{image} +
    0.9\,\hat{A}_{text}`), see :class:`~sea_pyg.nn.ItemKNNGraph`.

    **User-item graph**: before every training epoch (:meth:`pre_epoch`),
    :math:`\lfloor E(1-p)\rfloor` training edges are drawn without replacement with probabilities
    :math:`\propto 1/\sqrt{d_u d_i}` of the **full** graph
    (:func:`~sea_pyg.nn.graph.degree_sensitive_edge_pruning`) and re-normalised with their own
    degrees, :math:`\tilde{A} = \tilde{D}^{-1/2} A_{kept} \tilde{D}^{-1/2}`. Evaluation uses the
    full normalised graph :math:`\hat{A}`.

    **Forward** on a graph :math:`A \in \{\tilde{A}, \hat{A}\}`, with ID embeddings
    :math:`E_U, E_I` (``xavier_uniform_``):

    .. math::
        \mathbf{h} = \mathbf{S}^{L_{mm}} E_I, \qquad
        [\mathbf{U}; \mathbf{I}] = \frac{1}{L+1}\sum_{l=0}^{L} A^l [E_U; E_I], \qquad
        \mathbf{e}_u = \mathbf{U}_u, \quad \mathbf{e}_i = \mathbf{I}_i + \mathbf{h}_i, \qquad
        \hat{y}_{ui} = \mathbf{e}_u^\top \mathbf{e}_i

    **Loss**, with :math:`\mathrm{BPR}(u, a, b) = -\operatorname{mean}\ln\sigma(
    \mathbf{u}^\top\mathbf{a} - \mathbf{u}^\top\mathbf{b})` (``logsigmoid``) and the modality
    representations :math:`\mathbf{r}^m = T_m(\mathbf{x}^m)` (a Linear ``F_m -> d_f``, default
    PyTorch init, on the raw features, which are **trainable** as in MMRec's
    ``from_pretrained(freeze=False)``):

    .. math::
        \mathcal{L} = \mathrm{BPR}(\mathbf{e}_u, \mathbf{e}_i, \mathbf{e}_j)
        + \lambda \sum_m \mathrm{BPR}(\mathbf{e}_u, \mathbf{r}^m_i, \mathbf{r}^m_j)

    The modality representations do not enter the scores (the modalities act only through
    the frozen :math:`\mathbf{S}`, built from the raw features); they are trained only by the
    :math:`\lambda` term (with :math:`\lambda = 0` they get no gradient and are not computed in
    the loss).

    **Variant** (not MMRec), ``fuse_modalities=True``: the mean of the modality representations
    is added to every item embedding, :math:`\mathbf{e}_i = \mathbf{I}_i + \mathbf{h}_i +
    \frac{1}{M}\sum_m \mathbf{r}^m_i`, so that they (and any separate-learning loss on them,
    see :class:`~sea_pyg.models.WithSeparateLearning`) shape the scores. All :math:`N` items
    then go through :math:`T_m` at every step.

    Args:
        num_users: Number of users ``U``.
        train_edge_index: ``(2, E)`` training interactions (user ids, item ids); duplicate
            pairs are collapsed (binarised graph).
        features: ``{modality: (N, F_m) tensor}``, row ``i`` = item ``i`` (copied; the copy is
            a trainable parameter unless ``trainable_features=False``).
        embedding_dim: ID embedding size :math:`d` (MMRec: 64).
        feat_embed_dim: :math:`d_f`, output size of the modality Linear layers (MMRec: 64;
            must equal :math:`d` for the auxiliary BPR term).
        knn_k: Neighbours per item in the item-item graph, self included (MMRec: 10).
        mm_image_weight: Weight of the ``"image"`` graph (MMRec: 0.1); see
            :func:`~sea_pyg.nn.image_weighted_mix`.
        knn_weights: Explicit ``{modality: weight}`` mix; overrides ``mm_image_weight``.
        item_graph_layers: Propagations :math:`L_{mm}` over :math:`\mathbf{S}` (MMRec
            ``n_mm_layers``: 1).
        num_layers: LightGCN layers :math:`L` (MMRec ``n_ui_layers``: 2).
        dropout: Fraction :math:`p` of user-item edges pruned each epoch (MMRec grid: 0.8, 0.9).
        reg_weight: :math:`\lambda` (MMRec grid: 0, 1e-5, 1e-4, 1e-3).
        trainable_features: Keep MMRec's trainable raw feature tables (default) or freeze them.
        fuse_modalities: Add the mean modality representation to the item embeddings (a
            variant, not MMRec; default ``False``).

    Shapes:
        - :meth:`embeddings`: users ``(U, d)``, items ``(N, d)``
        - :meth:`modal_item_representations`: ``{m: (N, d_f)}``
    """

    def __init__(
        self,
        num_users: int,
        train_edge_index: Tensor,
        features: Mapping[str, Tensor],
        embedding_dim: int = 64,
        feat_embed_dim: int = 64,
        knn_k: int = 10,
        mm_image_weight: float = 0.1,
        knn_weights: Mapping[str, float] | None = None,
        item_graph_layers: int = 1,
        num_layers: int = 2,
        dropout: float = 0.8,
        reg_weight: float = 0.0,
        trainable_features: bool = True,
        fuse_modalities: bool = False,
    ) -> None:
        super().__init__()
        feats = check_features(features)
        num_items = next(iter(feats.values())).size(0)
        if embedding_dim < 1 or feat_embed_dim < 1:
            raise ValueError("`embedding_dim` and `feat_embed_dim` must be >= 1")
        if feat_embed_dim != embedding_dim:
            raise ValueError(
                f"`feat_embed_dim` ({feat_embed_dim}) must equal `embedding_dim` "
                f"({embedding_dim}): the modality BPR term scores users against them"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must lie in [0, 1), got {dropout}")
        if item_graph_layers < 0:
            raise ValueError(f"`item_graph_layers` must be >= 0, got {item_graph_layers}")
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.embedding_dim, self.feat_embed_dim = embedding_dim, feat_embed_dim
        self.item_graph_layers = item_graph_layers
        self.dropout, self.reg_weight = float(dropout), reg_weight
        self.modalities = list(feats)
        self.fuse_modalities = bool(fuse_modalities)

        self.user_emb = nn.Embedding(num_users, embedding_dim)
        self.item_emb = nn.Embedding(num_items, embedding_dim)
        self.features = nn.ParameterDict(
            {m: nn.Parameter(x.clone(), requires_grad=trainable_features) for m, x in feats.items()}
        )
        self.feat_trs = nn.ModuleDict(
            {m: nn.Linear(x.size(1), feat_embed_dim) for m, x in feats.items()}
        )
        weights = dict(knn_weights) if knn_weights is not None else None
        if weights is None:
            weights = image_weighted_mix(self.modalities, mm_image_weight)
        self.item_graph = ItemKNNGraph(feats, k=knn_k, weights=weights)
        self.propagation = LightGCNPropagation(num_layers, aggregation="mean")

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
        #: The pruned, re-normalised graph of the current epoch (set by :meth:`pre_epoch`).
        self.register_buffer("train_adj", None, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        for lin in self.feat_trs.values():
            lin.reset_parameters()

    # ---- graphs -------------------------------------------------------------------------------
    def prune_edges(self, generator: torch.Generator | None = None) -> Tensor:
        """Draw this epoch's pruned, re-normalised user-item graph and store it as ``train_adj``.

        With ``dropout == 0`` the full graph is used. ``generator`` defaults to the global RNG.
        """
        if self.dropout <= 0.0:
            self.train_adj = self.adj
            return self.train_adj
        kept = degree_sensitive_edge_pruning(
            self.edge_index,
            self.num_users,
            self.num_items,
            self.dropout,
            weights=self.edge_weight,
            generator=generator,
        )
        self.train_adj = bipartite_norm_adj(kept, self.num_users, self.num_items)
        return self.train_adj

    def pre_epoch(self, epoch: int) -> None:
        """Degree-sensitive edge pruning, redrawn before every training epoch."""
        self.prune_edges()

    # ---- forward ------------------------------------------------------------------------------
    def forward(
        self, adj: Tensor | None = None, modal: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """User ``(U, d)`` and item ``(N, d)`` embeddings on ``adj`` (default: the full graph).

        ``modal``: the representations of all items, reused when ``fuse_modalities`` is set
        (default: computed here).
        """
        h = self.item_emb.weight
        for _ in range(self.item_graph_layers):
            h = self.item_graph(h)
        x = torch.cat([self.user_emb.weight, self.item_emb.weight])
        out = self.propagation(x, self.adj if adj is None else adj)
        items = out[self.num_users :] + h
        if self.fuse_modalities:
            if modal is None:
                modal = self.modal_item_representations()
            items = items + torch.stack(list(modal.values())).mean(0)
        return out[: self.num_users], items

    def modal_item_representations(self, items: Tensor | None = None) -> dict[str, Tensor]:
        r"""Per-modality item representations :math:`\mathbf{r}^m = T_m(\mathbf{x}^m)`.

        FREEDOM never fuses them into the scores (the modalities act through the frozen
        item-item graph and the :math:`\lambda` BPR term); a separate-learning module can use
        them. Computed afresh from the current parameters, with autograd attached (gradients
        reach :math:`T_m` and the trainable features).

        Args:
            items: Item ids to compute (default: all ``N`` items).

        Returns:
            ``{modality: (len(items) or N, d_f)}``.
        """
        return project_modalities(self.features, self.feat_trs, items)

    def forward_train(self, batch: Tensor, all_modal_items: bool = False) -> TrainOutput:
        """Everything the loss needs for a ``(3, B)`` batch, on this epoch's pruned graph.

        Returns a :class:`~sea_pyg.models.TrainOutput` with ``rows`` ``user``, ``pos``,
        ``neg`` (``(B, d)`` rows of the final embeddings), and, when :math:`\\lambda \\neq
        0`, ``all_modal_items`` or ``fuse_modalities`` is set, ``modal`` (``{m: (R, d_f)}`` at
        item ids ``modal_items``, ``None`` = all items) and ``rows`` ``modal_pos`` /
        ``modal_neg`` (``{m: (B, d_f)}``).
        """
        if self.train_adj is None:
            self.prune_edges()
        users, pos, neg = batch
        modal = None
        if self.reg_weight or all_modal_items or self.fuse_modalities:
            rows, index = batch_item_rows(
                torch.cat([pos, neg]), all_modal_items or self.fuse_modalities
            )
            modal = self.modal_item_representations(rows)
        user_all, item_all = self.forward(self.train_adj, modal if self.fuse_modalities else None)
        out = TrainOutput(rows={"user": user_all[users], "pos": item_all[pos],
                                "neg": item_all[neg]})
        if modal is not None:
            b = users.numel()
            out.modal, out.modal_items = modal, rows
            out.rows["modal_pos"] = {m: r[index[:b]] for m, r in modal.items()}
            out.rows["modal_neg"] = {m: r[index[b:]] for m, r in modal.items()}
        return out

    def loss_terms(self, out: TrainOutput) -> dict[str, Tensor]:
        u, p, n = out.rows["user"], out.rows["pos"], out.rows["neg"]
        terms = {"bpr": bpr_loss((u * p).sum(-1), (u * n).sum(-1), variant="logsigmoid")}
        if self.reg_weight:
            modal = sum(
                bpr_loss((u * mp).sum(-1), (u * mn).sum(-1), variant="logsigmoid")
                for mp, mn in zip(
                    out.rows["modal_pos"].values(), out.rows["modal_neg"].values(), strict=True
                )
            )
            terms["modal_bpr"] = self.reg_weight * modal
        return terms

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final embeddings on the **full** (unpruned) training graph."""
        return self.forward(self.adj)

    def extra_repr(self) -> str:
        dims = ", ".join(f"{m}={x.size(1)}" for m, x in self.features.items())
        return (
            f"num_users={self.num_users}, num_items={self.num_items}, features=({dims}), "
            f"embedding_dim={self.embedding_dim}, dropout={self.dropout}, "
            f"reg_weight={self.reg_weight}"
            + (", fuse_modalities=True" if self.fuse_modalities else "")
        )
