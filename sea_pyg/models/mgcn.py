"""MGCN (Yu et al., MM 2023) as in MMRec, for any number of item modalities."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from sea_pyg.models._multimodal import check_features, project_modalities
from sea_pyg.models.base import MultimodalRecommender, TrainOutput
from sea_pyg.models.registry import register_model
from sea_pyg.nn.conv import LightGCNPropagation, bipartite_norm_adj, symmetric_spmm
from sea_pyg.nn.knn import ItemKNNGraph
from sea_pyg.nn.losses import bpr_loss, solosim_loss
from sea_pyg.nn.weighted_knn import weighted_knn_adjacency

__all__ = ["MGCN"]


# MMRec MGCN.yaml: embedding_size 64, n_ui_layers 2, n_layers 1, knn_k 10, reg_weight 1e-4,
# learning_rate 1e-3, learning_rate_scheduler [0.96, 50] (train_defaults lr_schedule),
# lambda_coeff 0.9 (never read by mgcn.py); grid cl_loss {0.001, 0.01, 0.1}.
# Default cl_weight 0.01: the authors' released config (demonph10/MGCN, MGCN.yaml: cl_loss 0.01).
# The InfoNCE temperature 0.2 is hard-coded in MMRec's calculate_loss (self.tau = 0.5 is unused).
@register_model(
    "mgcn",
    "MGCN: behaviour-purified modality views on frozen weighted item kNN graphs, attention "
    "fusion, view-contrastive loss (MMRec MGCN)",
    train_defaults={"lr_schedule": (0.96, 50.0)},
    # MMRec MGCN.yaml's grid (cl_loss -> cl_weight)
    search_space={
        "cl_weight": [0.001, 0.01, 0.1],
    },
)
class MGCN(MultimodalRecommender):
    r"""MGCN: multi-view graph convolution with behaviour-guided purification.

    Notation: :math:`E_U \in \mathbb{R}^{U \times d}`, :math:`E_I \in \mathbb{R}^{N \times d}`
    ID embeddings (``xavier_uniform_``), :math:`\mathbf{x}^m` the raw features of modality
    :math:`m` (**trainable**, MMRec's ``from_pretrained(freeze=False)``), :math:`M` modalities,
    :math:`\sigma` the logistic sigmoid, :math:`\odot` the element-wise product; every
    :math:`W, b` is a ``Linear`` with PyTorch's default init.

    **Graphs** (built once, frozen). The user-item graph
    :math:`\hat{A} = D^{-1/2} A D^{-1/2}` on the training interactions, no self-loops, no degree
    epsilon, duplicate pairs **counted** (MMRec MGCN's ``get_adj_mat`` sums them), with
    user-item block :math:`R = \hat{A}_{UI}` (:math:`R_{ui} = a_{ui} / \sqrt{d_u d_i}`). Per
    modality, the cosine :math:`k`-NN graph of the raw features **weighted by the
    similarities** and normalised by its row sums on both sides,
    :math:`\hat{S}^m_{ij} = s_{ij} / \sqrt{r_i r_j}`
    (:func:`~sea_pyg.nn.weighted_knn_adjacency`, wrapped in an
    :class:`~sea_pyg.nn.ItemKNNGraph`); the modality graphs are **not** mixed.

    **Behaviour-guided purifier**, per modality:

    .. math::
        \tilde{\mathbf{e}}^m_i = \mathbf{e}^{id}_i \odot
        \sigma\big(W^g_m (W^t_m \mathbf{x}^m_i + b^t_m) + b^g_m\big)

    **Views.** ID view: LightGCN, :math:`[\bar{E}_U; \bar{E}_I] = \frac{1}{L+1}
    \sum_{l=0}^{L} \hat{A}^l [E_U; E_I]`. Modality views: :math:`\mathbf{H}^m_I =
    (\hat{S}^m)^{L_{mm}} \tilde{E}^m` (repeated propagation, no layer mean), users aggregate
    their items through the user-item graph, :math:`\mathbf{H}^m_U = R\,\mathbf{H}^m_I`;
    :math:`\mathbf{h}^m = [\mathbf{H}^m_U; \mathbf{H}^m_I]` for every node.

    **Behaviour-aware fuser**, per node (user or item), with one query network shared by the
    modalities, :math:`q(\mathbf{h}) = \mathbf{w}^\top \tanh(W^q \mathbf{h} + b^q)`:

    .. math::
        \alpha_m = \operatorname{softmax}_m q(\mathbf{h}^m), \quad
        \mathbf{c} = \sum_m \alpha_m \mathbf{h}^m, \quad
        \mathbf{p}^m = \sigma(W^p_m \bar{\mathbf{e}} + b^p_m) \odot (\mathbf{h}^m - \mathbf{c}),
        \quad
        \mathbf{s} = \frac{1}{M + 1}\Big(\mathbf{c} + \sum_m \mathbf{p}^m\Big)

    and the final embedding is :math:`\mathbf{e} = \bar{\mathbf{e}} + \mathbf{s}`,
    :math:`\hat{y}_{ui} = \mathbf{e}_u^\top \mathbf{e}_i` (MMRec: :math:`M = 2`, divisor 3).
    With one modality :math:`\alpha = 1`, :math:`\mathbf{p} = 0` and
    :math:`\mathbf{s} = \mathbf{h}/2`; the query and preference gates then get no gradient.

    **Loss** for a batch of :math:`B` triples :math:`(u, i, j)`, with
    :math:`\mathrm{NCE}_\tau(\mathbf{A}, \mathbf{B}) = -\frac{1}{B}\sum_b \ln
    \frac{\exp(\hat{\mathbf{a}}_b^\top \hat{\mathbf{b}}_b / \tau)}
    {\sum_{b'} \exp(\hat{\mathbf{a}}_b^\top \hat{\mathbf{b}}_{b'} / \tau)}` over the batch rows
    (:math:`\hat{\cdot}` = L2-normalised; :func:`~sea_pyg.nn.solosim_loss`):

    .. math::
        \mathcal{L} = -\frac{1}{B}\sum_b \ln\sigma(\mathbf{e}_u^\top \mathbf{e}_i
        - \mathbf{e}_u^\top \mathbf{e}_j)
        + \frac{\lambda_E}{2B}\big(\|\mathbf{e}_U\|^2 + \|\mathbf{e}_I\|^2
        + \|\mathbf{e}_J\|^2\big)
        + \lambda_C\big[\mathrm{NCE}_\tau(\mathbf{s}_I, \bar{\mathbf{e}}_I)
        + \mathrm{NCE}_\tau(\mathbf{s}_U, \bar{\mathbf{e}}_U)\big]

    (squared norms of the batch's **final** embeddings; :math:`\mathbf{s}_I` / :math:`\mathbf{s}_U`
    the fused side rows of the batch's positives / users, duplicates kept). Terms: ``bpr``,
    ``reg``, ``cl``. Every training step recomputes the whole graph (as MMRec does).

    **+sea**: :meth:`modal_item_representations` are the purified item representations
    :math:`\tilde{\mathbf{e}}^m_i` (before the item-item propagation), which feed the scores.

    Args:
        num_users: Number of users ``U``.
        train_edge_index: ``(2, E)`` training interactions (user ids, item ids).
        features: ``{modality: (N, F_m) tensor}``, row ``i`` = item ``i`` (copied; the copy is
            a trainable parameter unless ``trainable_features=False``).
        embedding_dim: :math:`d` (MMRec ``embedding_size``: 64).
        num_layers: LightGCN layers :math:`L` of the ID view (MMRec ``n_ui_layers``: 2).
        item_graph_layers: Propagations :math:`L_{mm}` over each :math:`\hat{S}^m` (MMRec
            ``n_layers``: 1).
        knn_k: Neighbours per item in the item-item graphs, self included (MMRec: 10).
        reg_weight: :math:`\lambda_E` (MMRec: 1e-4).
        cl_weight: :math:`\lambda_C` (MMRec ``cl_loss``, grid 0.001, 0.01, 0.1; the authors'
            config: 0.01).
        temperature: :math:`\tau` of the contrastive terms (MMRec: 0.2).
        trainable_features: Keep MMRec's trainable raw feature tables (default) or freeze them.

    Shapes:
        - :meth:`embeddings`: users ``(U, d)``, items ``(N, d)``
        - :meth:`modal_item_representations`: ``{m: (N, d)}``
    """

    def __init__(
        self,
        num_users: int,
        train_edge_index: Tensor,
        features: Mapping[str, Tensor],
        embedding_dim: int = 64,
        num_layers: int = 2,
        item_graph_layers: int = 1,
        knn_k: int = 10,
        reg_weight: float = 1e-4,
        cl_weight: float = 0.01,
        temperature: float = 0.2,
        trainable_features: bool = True,
    ) -> None:
        super().__init__()
        feats = check_features(features)
        num_items = next(iter(feats.values())).size(0)
        is_int = isinstance(embedding_dim, int) and not isinstance(embedding_dim, bool)
        if not is_int or embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be an int >= 1, got {embedding_dim!r}")
        if item_graph_layers < 0:
            raise ValueError(f"`item_graph_layers` must be >= 0, got {item_graph_layers}")
        if isinstance(knn_k, bool) or not isinstance(knn_k, int) or not 1 <= knn_k <= num_items:
            raise ValueError(
                f"`knn_k` must be an int in [1, {num_items}] (the number of items), got {knn_k!r}"
            )
        for name, value in (("reg_weight", reg_weight), ("cl_weight", cl_weight)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"`{name}` must be a finite number >= 0, got {value}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(
                f"`temperature` must be a finite number > 0 (MMRec: 0.2), got {temperature}"
            )
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.embedding_dim = embedding_dim
        self.item_graph_layers = int(item_graph_layers)
        self.reg_weight, self.cl_weight = float(reg_weight), float(cl_weight)
        self.temperature = float(temperature)
        self.modalities = list(feats)

        d = embedding_dim
        self.user_emb = nn.Embedding(num_users, d)
        self.item_emb = nn.Embedding(num_items, d)
        self.features = nn.ParameterDict(
            {m: nn.Parameter(x.clone(), requires_grad=trainable_features) for m, x in feats.items()}
        )
        #: MMRec ``image_trs`` / ``text_trs``: ``F_m -> d``.
        self.feat_trs = nn.ModuleDict({m: nn.Linear(x.size(1), d) for m, x in feats.items()})
        #: MMRec ``gate_v`` / ``gate_t``: the purifier gates (sigmoid applied in forward).
        self.purifier = nn.ModuleDict({m: nn.Linear(d, d) for m in feats})
        #: MMRec ``query_common``, shared by the modalities.
        self.query = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        #: MMRec ``gate_image_prefer`` / ``gate_text_prefer`` (sigmoid applied in forward).
        self.preference = nn.ModuleDict({m: nn.Linear(d, d) for m in feats})
        self.item_graphs = nn.ModuleDict(
            {
                m: ItemKNNGraph.from_adjacencies({m: weighted_knn_adjacency(x, knn_k)})
                for m, x in feats.items()
            }
        )
        self.knn_k = knn_k
        self.propagation = LightGCNPropagation(num_layers, aggregation="mean")
        self.register_buffer(
            "adj",
            bipartite_norm_adj(
                train_edge_index, self.num_users, self.num_items, binarize=False, eps=0.0
            ),
            persistent=False,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        for module in (self.feat_trs, self.purifier, self.query, self.preference):
            for layer in module.modules():
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()

    # ---- forward ------------------------------------------------------------------------------
    def modal_item_representations(self, items: Tensor | None = None) -> dict[str, Tensor]:
        r"""The purified item representations :math:`\tilde{\mathbf{e}}^m_i = \mathbf{e}^{id}_i
        \odot \sigma(W^g_m(W^t_m \mathbf{x}^m_i + b^t_m) + b^g_m)` (the purifier's output, before
        the item-item propagation), with autograd attached.

        Args:
            items: Item ids (default: all ``N`` items).

        Returns:
            ``{modality: (len(items) or N, d)}``.
        """
        ids = self.item_emb.weight if items is None else self.item_emb.weight[items]
        trs = project_modalities(self.features, self.feat_trs, items)
        return {m: ids * torch.sigmoid(self.purifier[m](t)) for m, t in trs.items()}

    def views(
        self, purified: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        r"""The ID view :math:`\bar{\mathbf{e}}`, the fused modality view :math:`\mathbf{s}`
        (both ``(U + N, d)``, users first) and the purified items ``{m: (N, d)}`` they came from.

        ``purified``: :meth:`modal_item_representations` of all items, reused if given.
        """
        if purified is None:
            purified = self.modal_item_representations()
        u = self.num_users
        content = self.propagation(
            torch.cat([self.user_emb.weight, self.item_emb.weight]), self.adj
        )
        items = []
        for m, h in purified.items():
            for _ in range(self.item_graph_layers):
                h = self.item_graphs[m](h)
            items.append(h)
        # users of every modality at once: [R H; 0] = A_hat [0; H] (A_hat symmetric).
        stacked_items = torch.cat(items, dim=1)
        padded = torch.cat([stacked_items.new_zeros(u, stacked_items.size(1)), stacked_items])
        users = symmetric_spmm(self.adj, padded)[:u].split(self.embedding_dim, dim=1)
        h = torch.stack([torch.cat([hu, hi]) for hu, hi in zip(users, items, strict=True)])
        alpha = torch.softmax(self.query(h).squeeze(-1), dim=0)  # (M, U + N)
        common = (alpha.unsqueeze(-1) * h).sum(0)
        side = common
        for k, m in enumerate(purified):
            side = side + torch.sigmoid(self.preference[m](content)) * (h[k] - common)
        side = side / (len(items) + 1)
        return content, side, dict(purified)

    def forward(self) -> tuple[Tensor, Tensor]:
        """Final user ``(U, d)`` and item ``(N, d)`` embeddings, :math:`\\bar{e} + s`."""
        content, side, _ = self.views()
        out = content + side
        return out[: self.num_users], out[self.num_users :]

    def forward_train(self, batch: Tensor, all_modal_items: bool = False) -> TrainOutput:
        """Everything the loss needs for a ``(3, B)`` batch, from one whole-graph pass.

        Returns a :class:`~sea_pyg.models.TrainOutput` with ``modal`` the purified
        representations of **all** items (``modal_items=None``; they are computed anyway) and
        ``rows`` ``user``, ``pos``, ``neg`` (``(B, d)`` final embeddings), ``side_user``,
        ``content_user``, ``side_pos``, ``content_pos`` (``(B, d)`` rows of the two views).
        """
        users, pos, neg = batch
        content, side, purified = self.views()
        out = content + side
        u = self.num_users
        rows = {
            "user": out[users],
            "pos": out[u + pos],
            "neg": out[u + neg],
            "side_user": side[users],
            "content_user": content[users],
            "side_pos": side[u + pos],
            "content_pos": content[u + pos],
        }
        return TrainOutput(modal=purified, modal_items=None, rows=rows)

    def loss_terms(self, out: TrainOutput) -> dict[str, Tensor]:
        r = out.rows
        u, p, n = r["user"], r["pos"], r["neg"]
        terms = {"bpr": bpr_loss((u * p).sum(-1), (u * n).sum(-1), variant="logsigmoid")}
        if self.reg_weight:
            sq = u.square().sum() + p.square().sum() + n.square().sum()
            terms["reg"] = self.reg_weight * 0.5 * sq / u.size(0)
        if self.cl_weight:
            cl = solosim_loss(r["side_pos"], r["content_pos"], self.temperature) + solosim_loss(
                r["side_user"], r["content_user"], self.temperature
            )
            terms["cl"] = self.cl_weight * cl
        return terms

    def embeddings(self) -> tuple[Tensor, Tensor]:
        return self.forward()

    def extra_repr(self) -> str:
        dims = ", ".join(f"{m}={x.size(1)}" for m, x in self.features.items())
        return (
            f"num_users={self.num_users}, num_items={self.num_items}, features=({dims}), "
            f"embedding_dim={self.embedding_dim}, knn_k={self.knn_k}, "
            f"item_graph_layers={self.item_graph_layers}, reg_weight={self.reg_weight}, "
            f"cl_weight={self.cl_weight}, temperature={self.temperature}"
        )
