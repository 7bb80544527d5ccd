"""LATTICE (Zhang et al., MM'21) as in MMRec, for any number of item modalities."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sea_pyg.models._multimodal import check_features, project_modalities
from sea_pyg.models.base import MultimodalRecommender, TrainOutput
from sea_pyg.models.registry import register_model
from sea_pyg.nn.learned_graph import LearnedItemGraph, WeightedGraph, self_loop_rw_graph
from sea_pyg.nn.losses import bpr_loss

__all__ = ["LATTICE"]

CF_MODELS = ("lightgcn", "mf", "ngcf")


# MMRec LATTICE.yaml: embedding_size/feat_embed_dim 64, weight_size [64, 64] (2 user-item layers),
# lambda_coeff 0.9, cf_model lightgcn, mess_dropout [0.1, 0.1] (NGCF only), n_layers 1, knn_k 10,
# learning_rate_scheduler [0.96, 50] (train_defaults lr_schedule); grid reg_weight
# {0, 1e-5, 1e-4, 1e-3}, learning_rate {1e-4, 5e-4, 1e-3, 5e-3}. Defaults: the authors' released
# code for Baby (CRIPAC-DIG/LATTICE parser: lr 5e-4, regs[0] = 1e-5), both on MMRec's grid.
@register_model(
    "lattice",
    "LATTICE: item-item graphs learned from the projected features, mixed with the frozen kNN "
    "graphs, plus LightGCN (MMRec)",
    train_defaults={"lr": 5e-4, "lr_schedule": (0.96, 50.0)},
    # MMRec LATTICE.yaml's grid (learning_rate -> lr)
    search_space={
        "reg_weight": [0.0, 1e-5, 1e-4, 1e-3],
        "lr": [1e-4, 5e-4, 1e-3, 5e-3],
    },
)
class LATTICE(MultimodalRecommender):
    r"""LATTICE: item-item graphs mined from the modality features during training.

    **Projections**: :math:`\mathbf{z}^m = T_m(\mathbf{x}^m)`, a Linear ``F_m -> d_f`` (default
    PyTorch init) on the raw features, which are **trainable** (MMRec's
    ``from_pretrained(freeze=False)``).

    **Item graph** (:class:`~sea_pyg.nn.LearnedItemGraph`), with
    :math:`\operatorname{kNN}(\mathbf{z})` the weighted cosine :math:`k`-NN matrix
    (:math:`a_{ij} = \hat{\mathbf{z}}_i^\top \hat{\mathbf{z}}_j` for the :math:`k` most similar
    :math:`j`, the item itself included), :math:`\operatorname{norm}(\mathbf{A}) =
    \mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}` with :math:`\mathbf{D}` the row sums,
    :math:`\hat{\mathbf{A}}^m_0 = \operatorname{norm}(\operatorname{kNN}(\mathbf{x}^m))` frozen
    from the raw features at construction and :math:`\mathbf{w} =
    \operatorname{softmax}(\boldsymbol{\theta})` (learnable logits, equal at start; no weight
    with one modality):

    .. math::
        \mathbf{S} = (1 - \lambda)\, \operatorname{norm}\Big(\sum_m w_m
        \operatorname{kNN}(\mathbf{z}^m)\Big) + \lambda \sum_m w_m \hat{\mathbf{A}}^m_0

    **When it is rebuilt** (as MMRec): at the first training batch after :meth:`pre_epoch`
    (i.e. once per epoch) :math:`\mathbf{S}` is built from the current parameters **with
    autograd**, so that batch's loss reaches :math:`\boldsymbol{\theta}`, :math:`T_m` and the
    raw features through the edge values (the neighbour choice is a constant); the later batches
    of the epoch reuse it **detached** (no gradient to those parameters). :meth:`embeddings`
    (evaluation) builds it afresh from the current parameters. Nothing :math:`N \times N` is
    held: the :math:`k`-NN search runs in row chunks and :math:`\mathbf{S}` is sparse.

    **Forward**, with ID embeddings :math:`E_U, E_I` (``xavier_uniform_``) and the user-item
    graph :math:`\mathbf{P} = \tilde{\mathbf{D}}^{-1}(\mathbf{A} + \mathbf{I})` (binarised
    interactions, self-loops, **row**-normalised: MMRec LATTICE's own ``norm_adj``):

    .. math::
        \mathbf{h} = \mathbf{S}^{L_{mm}} E_I, \qquad
        [\mathbf{U}; \mathbf{I}] = \frac{1}{L+1}\sum_{l=0}^{L} \mathbf{P}^l [E_U; E_I], \qquad
        \mathbf{e}_u = \mathbf{U}_u, \quad
        \mathbf{e}_i = \mathbf{I}_i + \frac{\mathbf{h}_i}{\|\mathbf{h}_i\|_2}, \qquad
        \hat{y}_{ui} = \mathbf{e}_u^\top \mathbf{e}_i

    for ``cf_model="lightgcn"``; ``"mf"`` uses :math:`[\mathbf{U}; \mathbf{I}] = [E_U; E_I]`;
    ``"ngcf"`` uses NGCF layers on :math:`\mathbf{P}`: :math:`\mathbf{E}^{(l+1)} =
    \operatorname{drop}(\operatorname{lrelu}(W_1^{(l)} \mathbf{P}\mathbf{E}^{(l)}) +
    \operatorname{lrelu}(W_2^{(l)} (\mathbf{E}^{(l)} \odot \mathbf{P}\mathbf{E}^{(l)})))`, and
    the mean of :math:`\mathbf{E}^{(0)}` and the row-normalised :math:`\mathbf{E}^{(l)}`.

    **Loss** (MMRec LATTICE's own BPR) on a batch of :math:`B` triples :math:`(u, i, j)`:

    .. math::
        \mathcal{L} = -\frac{1}{B}\sum \ln\sigma(\mathbf{e}_u^\top\mathbf{e}_i -
        \mathbf{e}_u^\top\mathbf{e}_j) + \frac{\gamma}{2B} \sum \big(\|\mathbf{e}_u\|^2 +
        \|\mathbf{e}_i\|^2 + \|\mathbf{e}_j\|^2\big)

    on the **final** embeddings (``reg_weight`` :math:`\gamma`; MMRec divides by the configured
    batch size, here by the rows of the batch: only the last, smaller batch differs).

    Args:
        num_users: Number of users ``U``.
        train_edge_index: ``(2, E)`` training interactions (user ids, item ids); duplicates
            collapse.
        features: ``{modality: (N, F_m) tensor}``, row ``i`` = item ``i`` (copied; the copy is
            a trainable parameter unless ``trainable_features=False``).
        embedding_dim: ID embedding size :math:`d` (MMRec: 64).
        feat_embed_dim: :math:`d_f`, output size of :math:`T_m` (MMRec: 64; any size).
        knn_k: Neighbours per item, self included (MMRec: 10).
        lambda_coeff: :math:`\lambda`, weight of the frozen initial graphs (MMRec: 0.9).
        item_graph_layers: Propagations :math:`L_{mm}` over :math:`\mathbf{S}` (MMRec
            ``n_layers``: 1).
        num_layers: User-item layers :math:`L` (MMRec: ``len(weight_size)`` = 2).
        cf_model: ``"lightgcn"`` (MMRec default), ``"mf"`` or ``"ngcf"``.
        mess_dropout: NGCF message dropout of every layer (MMRec: 0.1; unused otherwise).
        reg_weight: :math:`\gamma` (MMRec grid: 0, 1e-5, 1e-4, 1e-3).
        trainable_features: Keep MMRec's trainable raw feature tables (default) or freeze them.
        zero_grads_between_builds: In the batches that reuse the detached graph, give the
            parameters that build it (:math:`T_m`, the raw features, :math:`\boldsymbol{\theta}`)
            **zero** gradients instead of none, so that Adam keeps moving them with its decaying
            moments. This is what MMRec did under the torch 1.11 it pins, whose
            ``optimizer.zero_grad()`` zeroed gradients instead of dropping them; with torch >= 2
            (and the trainer here) parameters without a gradient are skipped: the default
            ``False``. Costs an Adam update of the raw feature tables at every batch.
        knn_chunk_size: Rows per similarity block of the :math:`k`-NN search (memory
            ``knn_chunk_size * N`` values; not a model choice).

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
        lambda_coeff: float = 0.9,
        item_graph_layers: int = 1,
        num_layers: int = 2,
        cf_model: str = "lightgcn",
        mess_dropout: float = 0.1,
        reg_weight: float = 1e-5,
        trainable_features: bool = True,
        zero_grads_between_builds: bool = False,
        knn_chunk_size: int = 1024,
    ) -> None:
        super().__init__()
        feats = check_features(features)
        num_items = next(iter(feats.values())).size(0)
        if embedding_dim < 1 or feat_embed_dim < 1:
            raise ValueError("`embedding_dim` and `feat_embed_dim` must be >= 1")
        if cf_model not in CF_MODELS:
            raise ValueError(f"`cf_model` must be one of {CF_MODELS}, got {cf_model!r}")
        if item_graph_layers < 0 or num_layers < 0:
            raise ValueError(
                f"`item_graph_layers` and `num_layers` must be >= 0, got {item_graph_layers} "
                f"and {num_layers}"
            )
        if not 0.0 <= mess_dropout < 1.0:
            raise ValueError(f"`mess_dropout` must lie in [0, 1), got {mess_dropout}")
        if not 1 <= knn_k <= num_items:
            raise ValueError(f"`knn_k` must lie in [1, {num_items}] (the items), got {knn_k}")
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.embedding_dim, self.feat_embed_dim = embedding_dim, feat_embed_dim
        self.item_graph_layers, self.num_layers = item_graph_layers, num_layers
        self.cf_model, self.reg_weight = cf_model, reg_weight
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
        #: Modality logits :math:`\theta` (MMRec: ``[0.5, 0.5]``); none with one modality.
        self.modal_weight = (
            nn.Parameter(torch.full((len(feats),), 1.0 / len(feats))) if len(feats) > 1 else None
        )
        self.item_graph = LearnedItemGraph(
            feats, k=knn_k, lambda_coeff=lambda_coeff, chunk_size=knn_chunk_size
        )
        if cf_model == "ngcf":
            self.gc_layers = nn.ModuleList(
                nn.Linear(embedding_dim, embedding_dim) for _ in range(num_layers)
            )
            self.bi_layers = nn.ModuleList(
                nn.Linear(embedding_dim, embedding_dim) for _ in range(num_layers)
            )
            self.dropout = nn.Dropout(mess_dropout)

        ui = self_loop_rw_graph(train_edge_index, self.num_users, self.num_items)
        crow_t, col_t, perm = ui.transpose_pattern()
        for name, t in dict(
            crow=ui.crow, col=ui.col, value=ui.value, crow_t=crow_t, col_t=col_t, perm=perm
        ).items():
            self.register_buffer(f"ui_{name}", t, persistent=False)
        #: The item graph of the current epoch, detached (set at its first training batch).
        self._item_adj: WeightedGraph | None = None
        self._rebuild = True
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        for lin in self.feat_trs.values():
            lin.reset_parameters()
        if self.modal_weight is not None:
            nn.init.constant_(self.modal_weight, 1.0 / self.modal_weight.numel())
        if self.cf_model == "ngcf":
            for lin in [*self.gc_layers, *self.bi_layers]:
                lin.reset_parameters()
        self._item_adj, self._rebuild = None, True

    # ---- graphs -------------------------------------------------------------------------------
    @property
    def ui_graph(self) -> WeightedGraph:
        r"""The user-item graph :math:`\tilde{\mathbf{D}}^{-1}(\mathbf{A} + \mathbf{I})`."""
        return WeightedGraph(
            self.ui_crow, self.ui_col, self.ui_value, (self.ui_crow_t, self.ui_col_t, self.ui_perm)
        )

    def modality_weights(self) -> Tensor:
        r""":math:`\mathbf{w} = \operatorname{softmax}(\boldsymbol{\theta})` (``[1.]`` with one
        modality), in modality order."""
        if self.modal_weight is None:
            return self.item_emb.weight.new_ones(1)
        return torch.softmax(self.modal_weight, dim=0)

    def build_item_graph(self, modal: Mapping[str, Tensor] | None = None) -> WeightedGraph:
        r"""The item graph :math:`\mathbf{S}` from the current parameters (with autograd).

        ``modal``: the projections :math:`\mathbf{z}^m` of all items, reused if given.
        """
        modal = self.modal_item_representations() if modal is None else modal
        weights = self.modality_weights() if self.modal_weight is not None else None
        return self.item_graph.mixed_graph(modal, weights)

    def _graph_parameters(self) -> list[nn.Parameter]:
        """The parameters that build the learned graph (and get gradients only through it)."""
        params = [*self.feat_trs.parameters(), *self.features.values()]
        if self.modal_weight is not None:
            params.append(self.modal_weight)
        return [p for p in params if p.requires_grad]

    def pre_epoch(self, epoch: int) -> None:
        """The item graph is rebuilt (with gradients) at the next training batch."""
        self._rebuild = True

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, item_adj: WeightedGraph | None = None) -> tuple[Tensor, Tensor]:
        """User ``(U, d)`` and item ``(N, d)`` embeddings with item graph ``item_adj`` (default:
        built from the current parameters)."""
        item_adj = self.build_item_graph() if item_adj is None else item_adj
        h = self.item_emb.weight
        for _ in range(self.item_graph_layers):
            h = item_adj.propagate(h)
        users, items = self._collaborative()
        return users, items + F.normalize(h, p=2.0, dim=1)

    def _collaborative(self) -> tuple[Tensor, Tensor]:
        if self.cf_model == "mf":
            return self.user_emb.weight, self.item_emb.weight
        graph = self.ui_graph
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        total = ego
        for layer in range(self.num_layers):
            side = graph.propagate(ego)
            if self.cf_model == "lightgcn":
                ego = side
                total = total + ego
            else:
                ego = F.leaky_relu(self.gc_layers[layer](side)) + F.leaky_relu(
                    self.bi_layers[layer](ego * side)
                )
                ego = self.dropout(ego)
                total = total + F.normalize(ego, p=2.0, dim=1)
        out = total / (self.num_layers + 1)
        return out[: self.num_users], out[self.num_users :]

    def modal_item_representations(self, items: Tensor | None = None) -> dict[str, Tensor]:
        r"""Per-modality projections :math:`\mathbf{z}^m = T_m(\mathbf{x}^m)`: the
        representations whose :math:`k`-NN graphs LATTICE learns. They reach the scores only
        through the edge values of :math:`\mathbf{S}` (at the batch that builds it). Computed
        afresh with autograd attached.

        Args:
            items: Item ids to compute (default: all ``N`` items).

        Returns:
            ``{modality: (len(items) or N, d_f)}``.
        """
        return project_modalities(self.features, self.feat_trs, items)

    def forward_train(self, batch: Tensor, all_modal_items: bool = False) -> TrainOutput:
        """Everything the loss needs for a ``(3, B)`` batch.

        At the first batch after :meth:`pre_epoch` the item graph is built with gradients and
        kept (detached) for the rest of the epoch. Returns a
        :class:`~sea_pyg.models.TrainOutput` with ``rows`` ``user``, ``pos``, ``neg``
        (``(B, d)`` rows of the final embeddings) and, with ``all_modal_items``, ``modal``
        (``{m: (N, d_f)}``, the same tensors the graph was built from in that batch). With
        ``zero_grads_between_builds``, a batch that reuses the graph also carries ``rows["zero"]``,
        a zero scalar attached to the graph's parameters (added to the BPR term).
        """
        users, pos, neg = batch
        device = self.item_emb.weight.device
        build = self._rebuild or self._item_adj is None or self._item_adj.value.device != device
        modal = self.modal_item_representations() if (build or all_modal_items) else None
        if build:
            item_adj = self.build_item_graph(modal)
            self._item_adj, self._rebuild = item_adj.detach(), False
        else:
            item_adj = self._item_adj
        user_all, item_all = self.forward(item_adj)
        out = TrainOutput(
            rows={"user": user_all[users], "pos": item_all[pos], "neg": item_all[neg]}
        )
        if self.zero_grads_between_builds and not build:
            out.rows["zero"] = 0.0 * sum(p.sum() for p in self._graph_parameters())
        if all_modal_items:
            out.modal, out.modal_items = modal, None
        return out

    def loss_terms(self, out: TrainOutput) -> dict[str, Tensor]:
        u, p, n = out.rows["user"], out.rows["pos"], out.rows["neg"]
        terms = {"bpr": bpr_loss((u * p).sum(-1), (u * n).sum(-1), variant="logsigmoid")}
        if "zero" in out.rows:  # zero gradients for the graph's parameters (torch 1.x Adam)
            terms["bpr"] = terms["bpr"] + out.rows["zero"]
        if self.reg_weight:
            squares = u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()
            terms["reg"] = self.reg_weight * squares / (2 * u.size(0))
        return terms

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final embeddings with the item graph built afresh from the current parameters (MMRec's
        ``full_sort_predict`` does the same)."""
        return self.forward()

    def extra_repr(self) -> str:
        dims = ", ".join(f"{m}={x.size(1)}" for m, x in self.features.items())
        return (
            f"num_users={self.num_users}, num_items={self.num_items}, features=({dims}), "
            f"embedding_dim={self.embedding_dim}, cf_model={self.cf_model!r}, "
            f"reg_weight={self.reg_weight}"
        )
