"""MICRO (Zhang et al., TKDE'22) after the authors' code, for any number of item modalities."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sea_pyg.models._multimodal import check_features, project_modalities
from sea_pyg.models.base import MultimodalRecommender, TrainOutput
from sea_pyg.models.registry import register_model
from sea_pyg.nn.learned_graph import LearnedItemGraph, WeightedGraph, self_loop_rw_graph
from sea_pyg.nn.losses import bpr_loss, info_nce_loss

__all__ = ["MICRO", "micro_contrastive_loss"]


def micro_contrastive_loss(
    modal: Mapping[str, Tensor],
    fused: Tensor,
    temperature: float = 0.5,
    chunk_size: int | None = None,
) -> Tensor:
    r"""MICRO's contrastive fusion loss: for every modality, a one-directional InfoNCE from the
    modality-aware item representations :math:`\mathbf{h}^m` to the fused ones
    :math:`\mathbf{h}`, over **all** :math:`N` items, negatives from both views:

    .. math::
        \mathcal{L}_C = \sum_m \frac{1}{N}\sum_{i=1}^{N} -\log
        \frac{e^{s(\mathbf{h}^m_i, \mathbf{h}_i)}}
        {\sum_{j=1}^{N} e^{s(\mathbf{h}^m_i, \mathbf{h}_j)}
        + \sum_{j \ne i} e^{s(\mathbf{h}^m_i, \mathbf{h}^m_j)}},
        \qquad s(\mathbf{a}, \mathbf{b}) = \frac{\mathbf{a}^\top\mathbf{b}}
        {\tau\,\|\mathbf{a}\|_2 \|\mathbf{b}\|_2}

    (the authors' ``batched_contrastive_loss(h^m, h)``: ``refl_sim.sum + between_sim.sum -
    refl_sim.diag`` in the denominator). Gradients reach both views. It is
    :func:`~sea_pyg.nn.info_nce_loss` with ``symmetric=False``; with ``chunk_size`` it runs
    ``chunk_size`` rows at a time and never holds an :math:`N \times 2N` matrix, forward or
    backward.

    Args:
        modal: ``{m: (N, d)}`` modality-aware item representations.
        fused: ``(N, d)`` fused item representations.
        temperature: :math:`\tau` (authors: 0.5).
        chunk_size: Rows per chunk, or ``None`` for the dense path.
    """
    if not modal:
        raise ValueError("'modal' must hold at least one modality's (N, d) representations")
    terms = [
        info_nce_loss(h, fused, temperature, symmetric=False, normalize=True, chunk_size=chunk_size)
        for h in modal.values()
    ]
    return torch.stack(terms).sum()


# Neither MMRec nor the authors give MICRO a grid; the authors' defaults (CRIPAC-DIG/MICRO
# codes/utility/parser.py, the Amazon datasets): embed_size 64, weight_size [64, 64] (2 LightGCN
# layers), layers 1 (item-graph convolutions), topk 10, lambda_coeff 0.9, loss_ratio 0.03
# (cl_weight), tau 0.5 (hard-coded), regs[0] 1e-5 (reg_weight), lr 5e-4 with lr x 0.96^(epoch/50)
# (train_defaults), batch_size 1024 (here MMRec's 2048), cf_model lightgcn, norm_type sym.
# search_space: MMRec's LATTICE grid (reg_weight, learning_rate; the same code base) and the
# contrastive weight around the authors' 0.03 -- our choice, stated in docs/models.md.
@register_model(
    "micro",
    "MICRO: LATTICE-style item graphs learned per modality, attention fusion with a contrastive "
    "loss between modality and fused item representations, plus LightGCN (authors' code)",
    train_defaults={"lr": 5e-4, "lr_schedule": (0.96, 50.0)},
    search_space={
        "reg_weight": (0.0, 1e-5, 1e-4, 1e-3),
        "lr": (1e-4, 5e-4, 1e-3, 5e-3),
        "cl_weight": (0.01, 0.03, 0.1),
    },
)
class MICRO(MultimodalRecommender):
    r"""MICRO: latent item-item structures mined per modality, fused by contrastive learning.

    **Projections**: :math:`\mathbf{z}^m = T_m(\mathbf{x}^m)`, a Linear ``F_m -> d_f`` (PyTorch
    default init) on the raw features, which are **trainable** (the authors'
    ``from_pretrained(freeze=False)``).

    **Item graphs**, one per modality (:meth:`~sea_pyg.nn.LearnedItemGraph.modality_graph`,
    the piece LATTICE uses), with :math:`\operatorname{kNN}(\mathbf{z})` the weighted cosine
    :math:`k`-NN matrix (the item itself included), :math:`\operatorname{norm}(\mathbf{A}) =
    \mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}` (row sums) and the frozen
    :math:`\hat{\mathbf{A}}^m_0 = \operatorname{norm}(\operatorname{kNN}(\mathbf{x}^m))` of the
    raw features:

    .. math::
        \mathbf{S}^m = (1 - \lambda)\, \operatorname{norm}(\operatorname{kNN}(\mathbf{z}^m))
        + \lambda\, \hat{\mathbf{A}}^m_0

    They are built as LATTICE's: at the first training batch after :meth:`pre_epoch` from the
    current parameters **with autograd** (that batch's losses reach :math:`T_m` and the raw
    features through the edge values), reused **detached** for the rest of the epoch, and built
    afresh by :meth:`embeddings`. Nothing :math:`N \times N` is held.

    **Modality-aware item representations and attention fusion**, with ID embeddings
    :math:`E_U, E_I` (``xavier_uniform_``) and a query network :math:`q(\mathbf{h}) =
    \mathbf{w}^\top \tanh(\mathbf{W}\mathbf{h} + \mathbf{b})` shared by the modalities:

    .. math::
        \mathbf{h}^m = (\mathbf{S}^m)^{L_{mm}} E_I, \qquad
        \alpha_{im} = \frac{e^{q(\mathbf{h}^m_i)}}{\sum_{m'} e^{q(\mathbf{h}^{m'}_i)}}, \qquad
        \mathbf{h}_i = \sum_m \alpha_{im}\, \mathbf{h}^m_i

    (with one modality :math:`\alpha = 1` and there is no query network).

    **Scores**: LightGCN on LATTICE's user-item graph :math:`\mathbf{P} =
    \tilde{\mathbf{D}}^{-1}(\mathbf{A} + \mathbf{I})` (binarised, self-loops, row-normalised):

    .. math::
        [\mathbf{U}; \mathbf{I}] = \frac{1}{L+1}\sum_{l=0}^{L} \mathbf{P}^l [E_U; E_I], \qquad
        \mathbf{e}_u = \mathbf{U}_u, \quad
        \mathbf{e}_i = \mathbf{I}_i + \frac{\mathbf{h}_i}{\|\mathbf{h}_i\|_2}, \qquad
        \hat{y}_{ui} = \mathbf{e}_u^\top \mathbf{e}_i

    **Loss** on a batch of :math:`B` triples :math:`(u, i, j)`:

    .. math::
        \mathcal{L} = -\frac{1}{B}\sum \ln\sigma(\hat{y}_{ui} - \hat{y}_{uj})
        + \frac{\gamma}{2B} \sum \big(\|\mathbf{e}_u\|^2 + \|\mathbf{e}_i\|^2 +
        \|\mathbf{e}_j\|^2\big) + \beta\, \mathcal{L}_C(\{\mathbf{h}^m\}, \mathbf{h})

    with :math:`\mathcal{L}_C` of :func:`micro_contrastive_loss` over **all** items at every
    batch (terms ``bpr``, ``reg``, ``contrastive``).

    Args:
        num_users: Number of users ``U``.
        train_edge_index: ``(2, E)`` training interactions (user ids, item ids); duplicates
            collapse.
        features: ``{modality: (N, F_m) tensor}``, row ``i`` = item ``i`` (copied; the copy is
            a trainable parameter unless ``trainable_features=False``).
        embedding_dim: ID embedding size :math:`d` (authors: 64).
        feat_embed_dim: :math:`d_f`, output size of :math:`T_m` (authors: the embedding size;
            any size, it only chooses and weights the graph edges).
        knn_k: Neighbours per item, self included (authors ``topk``: 10).
        lambda_coeff: :math:`\lambda`, weight of the frozen initial graphs (authors: 0.9).
        item_graph_layers: Propagations :math:`L_{mm}` over each :math:`\mathbf{S}^m` (authors
            ``layers``: 1).
        num_layers: LightGCN layers :math:`L` (authors: ``len(weight_size)`` = 2).
        cl_weight: :math:`\beta`, weight of the contrastive loss (authors ``loss_ratio``: 0.03).
        temperature: :math:`\tau` of the contrastive loss (authors: 0.5).
        reg_weight: :math:`\gamma` (authors ``regs[0]``: 1e-5).
        trainable_features: Keep the authors' trainable raw feature tables (default) or freeze
            them.
        zero_grads_between_builds: As :class:`~sea_pyg.models.LATTICE`'s: zero (instead of no)
            gradients for the graph-building parameters in the batches that reuse the detached
            graphs, as the authors' torch 1.5 ``zero_grad()`` left them (default ``False``).
        knn_chunk_size: Rows per similarity block of the :math:`k`-NN search (memory only).
        cl_chunk_size: Rows per chunk of the contrastive loss (memory
            ``cl_chunk_size * 2N`` values; ``None``: dense; not a model choice).

    Shapes:
        - :meth:`embeddings`: users ``(U, d)``, items ``(N, d)``
        - :meth:`modal_item_representations`: ``{m: (N, d)}``, the :math:`\mathbf{h}^m`
    """

    def __init__(
        self,
        num_users: int,
        train_edge_index: Tensor,
        features: Mapping[str, Tensor],
        embedding_dim: int = 64,
        feat_embed_dim: int = 64,
        knn_k: int = 10,
        lambda_coeff: float = 0.9,
        item_graph_layers: int = 1,
        num_layers: int = 2,
        cl_weight: float = 0.03,
        temperature: float = 0.5,
        reg_weight: float = 1e-5,
        trainable_features: bool = True,
        zero_grads_between_builds: bool = False,
        knn_chunk_size: int = 1024,
        cl_chunk_size: int | None = 1024,
    ) -> None:
        super().__init__()
        feats = check_features(features)
        num_items = next(iter(feats.values())).size(0)
        if embedding_dim < 1 or feat_embed_dim < 1:
            raise ValueError(
                f"`embedding_dim` and `feat_embed_dim` must be >= 1, got {embedding_dim} and "
                f"{feat_embed_dim}"
            )
        if item_graph_layers < 0 or num_layers < 0:
            raise ValueError(
                f"`item_graph_layers` and `num_layers` must be >= 0, got {item_graph_layers} "
                f"and {num_layers}"
            )
        if not 1 <= knn_k <= num_items:
            raise ValueError(f"`knn_k` must lie in [1, {num_items}] (the items), got {knn_k}")
        if cl_weight < 0 or reg_weight < 0:
            raise ValueError(
                f"`cl_weight` and `reg_weight` must be >= 0, got {cl_weight} and {reg_weight}"
            )
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}")
        if cl_chunk_size is not None and cl_chunk_size < 1:
            raise ValueError(f"`cl_chunk_size` must be >= 1 or None (dense), got {cl_chunk_size}")
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.embedding_dim, self.feat_embed_dim = embedding_dim, feat_embed_dim
        self.item_graph_layers, self.num_layers = item_graph_layers, num_layers
        self.cl_weight, self.temperature = float(cl_weight), float(temperature)
        self.reg_weight, self.cl_chunk_size = reg_weight, cl_chunk_size
        self.zero_grads_between_builds = bool(zero_grads_between_builds)
        self.modalities = list(feats)

        self.user_emb = nn.Embedding(num_users, embedding_dim)
        self.item_emb = nn.Embedding(num_items, embedding_dim)
        self.features = nn.ParameterDict(
            {m: nn.Parameter(x.clone(), requires_grad=trainable_features) for m, x in feats.items()}
        )
        self.feat_trs = nn.ModuleDict(
            {m: nn.Linear(x.size(1), feat_embed_dim) for m, x in feats.items()}
        )
        #: The authors' ``query`` (shared by the modalities); none with one modality.
        self.query = (
            nn.Sequential(
                nn.Linear(embedding_dim, embedding_dim),
                nn.Tanh(),
                nn.Linear(embedding_dim, 1, bias=False),
            )
            if len(feats) > 1
            else None
        )
        self.item_graph = LearnedItemGraph(
            feats, k=knn_k, lambda_coeff=lambda_coeff, chunk_size=knn_chunk_size
        )
        ui = self_loop_rw_graph(train_edge_index, self.num_users, self.num_items)
        crow_t, col_t, perm = ui.transpose_pattern()
        for name, t in dict(
            crow=ui.crow, col=ui.col, value=ui.value, crow_t=crow_t, col_t=col_t, perm=perm
        ).items():
            self.register_buffer(f"ui_{name}", t, persistent=False)
        #: The item graphs of the current epoch, detached (set at its first training batch).
        self._item_adj: dict[str, WeightedGraph] | None = None
        self._rebuild = True
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        for lin in self.feat_trs.values():
            lin.reset_parameters()
        if self.query is not None:
            for layer in self.query:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
        self._item_adj, self._rebuild = None, True

    # ---- graphs -------------------------------------------------------------------------------
    @property
    def ui_graph(self) -> WeightedGraph:
        r"""The user-item graph :math:`\tilde{\mathbf{D}}^{-1}(\mathbf{A} + \mathbf{I})`."""
        return WeightedGraph(
            self.ui_crow, self.ui_col, self.ui_value, (self.ui_crow_t, self.ui_col_t, self.ui_perm)
        )

    def build_item_graphs(self) -> dict[str, WeightedGraph]:
        r"""``{m: S^m}`` from the current parameters (with autograd)."""
        z = project_modalities(self.features, self.feat_trs, None)
        return {m: self.item_graph.modality_graph(m, z[m]) for m in self.modalities}

    def _graph_parameters(self) -> list[nn.Parameter]:
        """The parameters that build the learned graphs (and get gradients only through them)."""
        params = [*self.feat_trs.parameters(), *self.features.values()]
        return [p for p in params if p.requires_grad]

    def pre_epoch(self, epoch: int) -> None:
        """The item graphs are rebuilt (with gradients) at the next training batch."""
        self._rebuild = True

    # ---- forward ------------------------------------------------------------------------------
    def modality_embeddings(self, graphs: Mapping[str, WeightedGraph]) -> dict[str, Tensor]:
        r"""``{m: h^m = (S^m)^{L_mm} E_I}`` (``(N, d)`` each)."""
        out = {}
        for m in self.modalities:
            h = self.item_emb.weight
            for _ in range(self.item_graph_layers):
                h = graphs[m].propagate(h)
            out[m] = h
        return out

    def fuse(self, modal: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        r"""``(h, alpha)``: the fused ``(N, d)`` :math:`\mathbf{h}_i = \sum_m \alpha_{im}
        \mathbf{h}^m_i` and the attention weights ``(N, M)`` (modality order)."""
        stacked = torch.stack([modal[m] for m in self.modalities], dim=1)  # (N, M, d)
        if self.query is None:
            return stacked[:, 0], stacked.new_ones(stacked.size(0), 1)
        alpha = torch.softmax(self.query(stacked).squeeze(-1), dim=1)
        return (alpha.unsqueeze(-1) * stacked).sum(dim=1), alpha

    def _collaborative(self) -> tuple[Tensor, Tensor]:
        graph = self.ui_graph
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        total = ego
        for _ in range(self.num_layers):
            ego = graph.propagate(ego)
            total = total + ego
        out = total / (self.num_layers + 1)
        return out[: self.num_users], out[self.num_users :]

    def forward(
        self, graphs: Mapping[str, WeightedGraph] | None = None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor], Tensor]:
        """``(users (U, d), items (N, d), {m: h^m}, h)`` with item graphs ``graphs`` (default:
        built from the current parameters)."""
        graphs = self.build_item_graphs() if graphs is None else graphs
        modal = self.modality_embeddings(graphs)
        fused, _ = self.fuse(modal)
        users, items = self._collaborative()
        return users, items + F.normalize(fused, p=2.0, dim=1), modal, fused

    def modal_item_representations(self, items: Tensor | None = None) -> dict[str, Tensor]:
        r"""The modality-aware item representations :math:`\mathbf{h}^m =
        (\mathbf{S}^m)^{L_{mm}} E_I` (the views MICRO contrasts with the fused one), with the
        item graphs built afresh from the current parameters, autograd attached.

        Args:
            items: Item ids (default: all ``N`` items).

        Returns:
            ``{modality: (len(items) or N, d)}``.
        """
        modal = self.modality_embeddings(self.build_item_graphs())
        return modal if items is None else {m: h[items] for m, h in modal.items()}

    def forward_train(self, batch: Tensor, all_modal_items: bool = False) -> TrainOutput:
        r"""Everything the loss needs for a ``(3, B)`` batch.

        At the first batch after :meth:`pre_epoch` the item graphs are built with gradients and
        kept (detached) for the rest of the epoch. ``rows``: ``user``, ``pos``, ``neg`` (``(B,
        d)`` rows of the final embeddings), ``modal`` (``{m: (N, d)}``, the :math:`\mathbf{h}^m`)
        and ``fused`` (``(N, d)``), plus ``zero`` with ``zero_grads_between_builds`` in a batch
        that reuses the graphs. With ``all_modal_items`` also ``out.modal`` (the same
        :math:`\mathbf{h}^m`, all items).
        """
        users, pos, neg = batch
        device = self.item_emb.weight.device
        build = (
            self._rebuild
            or self._item_adj is None
            or next(iter(self._item_adj.values())).value.device != device
        )
        if build:
            graphs = self.build_item_graphs()
            self._item_adj = {m: g.detach() for m, g in graphs.items()}
            self._rebuild = False
        else:
            graphs = self._item_adj
        user_all, item_all, modal, fused = self.forward(graphs)
        out = TrainOutput(
            rows={
                "user": user_all[users],
                "pos": item_all[pos],
                "neg": item_all[neg],
                "modal": modal,
                "fused": fused,
            }
        )
        if self.zero_grads_between_builds and not build:
            out.rows["zero"] = 0.0 * sum(p.sum() for p in self._graph_parameters())
        if all_modal_items:
            out.modal, out.modal_items = modal, None
        return out

    def loss_terms(self, out: TrainOutput) -> dict[str, Tensor]:
        u, p, n = out.rows["user"], out.rows["pos"], out.rows["neg"]
        terms = {"bpr": bpr_loss((u * p).sum(-1), (u * n).sum(-1), variant="logsigmoid")}
        if "zero" in out.rows:  # zero gradients for the graphs' parameters (torch 1.x Adam)
            terms["bpr"] = terms["bpr"] + out.rows["zero"]
        if self.reg_weight:
            squares = u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()
            terms["reg"] = self.reg_weight * squares / (2 * u.size(0))
        if self.cl_weight:
            terms["contrastive"] = self.cl_weight * micro_contrastive_loss(
                out.rows["modal"], out.rows["fused"], self.temperature, self.cl_chunk_size
            )
        return terms

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final embeddings with the item graphs built afresh from the current parameters (as
        the authors' ``test``)."""
        users, items, _, _ = self.forward()
        return users, items

    def extra_repr(self) -> str:
        dims = ", ".join(f"{m}={x.size(1)}" for m, x in self.features.items())
        return (
            f"num_users={self.num_users}, num_items={self.num_items}, features=({dims}), "
            f"embedding_dim={self.embedding_dim}, cl_weight={self.cl_weight}, "
            f"temperature={self.temperature}, reg_weight={self.reg_weight}"
        )
