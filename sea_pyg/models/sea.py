r"""SEA: Separate Learning for Multimedia Recommendation, assembled from ``sea_pyg.nn`` pieces."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from sea_pyg.models._multimodal import check_features
from sea_pyg.models.base import Recommender
from sea_pyg.models.registry import register_model
from sea_pyg.nn.conv import bipartite_norm_adj
from sea_pyg.nn.encoders import ModalGCNEncoder
from sea_pyg.nn.fused import linear_then_consumers
from sea_pyg.nn.knn import ItemKNNGraph, image_weighted_mix
from sea_pyg.nn.losses import bpr_loss
from sea_pyg.nn.separate import SeparateLearning

__all__ = ["SEA"]


@register_model(
    "sea",
    "SEA (preset default: SoloSim + CLUB, each modality's CLUB fitted on its own "
    "generic/unique pairs, the paper's method)",
    train_defaults={"lr": 1e-4},
    presets={
        "sea-reference": (
            "SEA as the official code trains it (one shared CLUB fitted on cross-modal pairs)",
            {"club_fit": "cross_modal", "club_shared": True},
        ),
        "sea-a": ("SEA_a: SoloSim alignment + CLUB distancing (= sea)", {}),
        "sea-b": ("SEA_b: SoloSim alignment + negative-L2 distancing", {"distancing": "negl2"}),
        "sea-c": ("SEA_c: InfoNCE alignment + CLUB distancing", {"alignment": "infonce"}),
        "sea-d": (
            "SEA_d: InfoNCE alignment + negative-L2 distancing",
            {"alignment": "infonce", "distancing": "negl2"},
        ),
        "sea-noalign": ("SEA without alignment (ablation)", {"alignment": "none"}),
        "sea-nodist": ("SEA without distancing (ablation)", {"distancing": "none"}),
        "sea-noboth": (
            "SEA without alignment and distancing (ablation w/o All)",
            {"alignment": "none", "distancing": "none"},
        ),
    },
    # around the defaults, for the paper's Figure 4 sweeps (its axis values are not in the text)
    search_space={
        "align_weight": [0.001, 0.006, 0.012, 0.05, 0.1],
        "dist_weight": [0.001, 0.003, 0.006, 0.012, 0.05],
        "temperature": [0.1, 0.2, 0.5, 1.0],
    },
)
class SEA(Recommender):
    r"""SEA (Separate Learning for Multimedia Recommendation) on the official code's backbone.

    For each modality :math:`m` (features :math:`\mathbf{X}^m \in \mathbb{R}^{N \times F_m}`):

    1. a learned transform :math:`\mathbf{T}^m = \mathbf{X}^m \mathbf{W}_m^\top + \mathbf{b}_m`
       (:math:`F_m \to D_m`, :math:`D_m = F_m` officially);
    2. a user-item encoder :class:`~sea_pyg.nn.ModalGCNEncoder` on :math:`\mathbf{T}^m` (free
       user preferences, item MLP, L2 normalisation, 2 ``LGConv`` layers, sum of layers):
       :math:`\mathbf{E}^m \in \mathbb{R}^{(U+N) \times d}`;
    3. the separate-learning terms of :class:`~sea_pyg.nn.SeparateLearning` on
       :math:`\mathbf{T}^m` (generic = first half of the columns, unique = second half).

    Fusion (modalities in the order of ``features``; datasets list them sorted, so ``image``
    before ``text`` as in the official code):
    users :math:`\mathbf{e}_u = \Vert_m\, w_{u,m} \mathbf{e}^m_u` with free per-user weights
    (initialised near :math:`1/M`), items :math:`\mathbf{e}_i = \Vert_m \mathbf{e}^m_i` plus
    ``item_graph_layers`` propagations over the frozen item-item kNN graph
    :class:`~sea_pyg.nn.ItemKNNGraph` built from the raw features (residual:
    :math:`\mathbf{e}_i + (\mathbf{S}^L \mathbf{E})_i`). Score :math:`\hat{y}_{ui} =
    \mathbf{e}_u^\top \mathbf{e}_i`. Loss

    .. math::
        \mathcal{L} = \mathcal{L}_\text{BPR} + \alpha \mathcal{L}_\text{align}
        + \beta\, \operatorname{mean}_m \mathcal{L}^m_\text{dis}

    with the log2 BPR of the official code (``bpr="log2"``) or the natural-log one. The whole
    graph is recomputed at every mini-batch (every :math:`\mathbf{T}^m` row feeds the losses).
    With ``fused=True`` the transforms :math:`\mathbf{W}_m` are re-associated with the linear
    layers that read :math:`\mathbf{T}^m` (:func:`~sea_pyg.nn.linear_then_consumers`): same
    mathematics, about 7x fewer FLOPs for image features.

    The CLUB estimators are declared by the separate-learning module
    (:meth:`~sea_pyg.models.Recommender.auxiliary_estimators`); the trainer fits them between
    the model's backward and its optimizer step (official order).

    Args:
        num_users: ``U``.
        num_items: ``N``.
        train_edge_index: ``(2, E)`` training interactions.
        features: Item features per modality ``{name: (N, F_m)}`` (kept as non-persistent
            buffers: they are data, not parameters, and are not saved in checkpoints).
        embedding_dim: ``d`` per modality (official: 64).
        hidden_dim: Encoder MLP hidden size (official: 256).
        num_layers: User-item propagation layers (official: 2).
        transform_dims: Output size :math:`D_m` of each learned transform: ``None`` keeps
            :math:`F_m` (official), an int applies to every modality, a dict per modality.
            Smaller values make a cheaper model (a different one).
        knn_k: Neighbours per item in the item graph (official: 10).
        knn_weights: Modality weights of the item graph; ``None`` gives
            :func:`~sea_pyg.nn.image_weighted_mix` (image 0.1, text 0.9).
        learnable_knn_weights: Learn the mix (paper Eq. 11) instead of fixing it.
        item_graph_layers: Item-graph propagations (official: 1).
        bpr: ``"log2"`` (official) or ``"logsigmoid"``.
        binarize_graph / graph_eps: User-item adjacency options, see
            :func:`~sea_pyg.nn.bipartite_norm_adj` (official: keep duplicates, no epsilon).
        fused: Re-associate the transforms (default) or materialise them (the naive order).
        chunk_size: Rows per chunk of the alignment logits (never an :math:`N \times N`
            matrix; at Baby scale about 2.5x faster than the dense path on a CPU, see
            ``benchmarks/bench_sea.py``), or ``None`` for the dense matrix.
        **separate: The other keyword arguments of :class:`~sea_pyg.nn.SeparateLearning`
            (``split``, ``alignment``, ``distancing``, ``align_weight``, ``dist_weight``,
            ``temperature``, ``club_*``, ...), with its defaults (the official code's).
    """

    #: ``**separate`` takes :class:`~sea_pyg.nn.SeparateLearning`'s hyper-parameters.
    forwards_kwargs_to = SeparateLearning
    #: SEA has separate learning built in (no ``+sea`` variant).
    has_separate_learning = True

    def __init__(
        self,
        num_users: int,
        num_items: int,
        train_edge_index: Tensor,
        features: Mapping[str, Tensor],
        embedding_dim: int = 64,
        hidden_dim: int = 256,
        num_layers: int = 2,
        transform_dims: int | Mapping[str, int] | None = None,
        knn_k: int = 10,
        knn_weights: Mapping[str, float] | None = None,
        learnable_knn_weights: bool = False,
        item_graph_layers: int = 1,
        bpr: str = "log2",
        binarize_graph: bool = False,
        graph_eps: float = 0.0,
        fused: bool = True,
        chunk_size: int | None = 256,
        **separate,
    ) -> None:
        super().__init__()
        features = check_features(features, num_items)
        self.modalities = list(features)
        if bpr not in ("log2", "logsigmoid"):
            raise ValueError(f"`bpr` must be 'log2' or 'logsigmoid', got {bpr!r}")
        if item_graph_layers < 0:
            raise ValueError(f"`item_graph_layers` must be >= 0, got {item_graph_layers}")
        self.num_users, self.num_items = num_users, num_items
        self.bpr, self.fused = bpr, fused
        self.item_graph_layers = item_graph_layers

        if transform_dims is None:
            dims = {m: int(features[m].size(1)) for m in self.modalities}
        elif isinstance(transform_dims, int):
            dims = {m: int(transform_dims) for m in self.modalities}
        else:
            dims = {m: int(transform_dims.get(m, features[m].size(1))) for m in self.modalities}

        for m in self.modalities:
            self.register_buffer(
                f"x_{m}", features[m].detach().to(torch.float32), persistent=False
            )
        self.transforms = nn.ModuleDict(
            {m: nn.Linear(features[m].size(1), dims[m]) for m in self.modalities}
        )
        self.encoders = nn.ModuleDict(
            {
                m: ModalGCNEncoder(num_users, dims[m], embedding_dim, hidden_dim, num_layers)
                for m in self.modalities
            }
        )
        self.user_weight = nn.Parameter(torch.empty(num_users, len(self.modalities), 1))
        self.register_buffer(
            "adj",
            bipartite_norm_adj(
                train_edge_index, num_users, num_items, binarize=binarize_graph, eps=graph_eps
            ),
            persistent=False,
        )
        weights = dict(knn_weights) if knn_weights is not None else image_weighted_mix(
            self.modalities
        )
        self.item_graph = (
            ItemKNNGraph(
                {m: features[m] for m in self.modalities},
                k=knn_k,
                weights=[weights[m] for m in self.modalities],
                learnable=learnable_knn_weights,
            )
            if item_graph_layers > 0
            else None
        )
        if len(self.modalities) == 1:
            separate.setdefault("alignment", "none")
        self.separate = SeparateLearning(dims, chunk_size=chunk_size, **separate)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modalities:
            self.transforms[m].reset_parameters()
            self.encoders[m].reset_parameters()
        with torch.no_grad():
            nn.init.xavier_normal_(self.user_weight)
            self.user_weight.copy_(torch.softmax(self.user_weight, dim=1))

    def low_precision_buffers(self) -> list[str]:
        """The raw item features: :meth:`loss` reads them only as the input of
        :func:`~sea_pyg.nn.linear_then_consumers` (one ``addmm``, or ``linear`` with
        ``fused=False``), so under ``precision="bf16"`` a cached bfloat16 copy stands in for
        them (:class:`~sea_pyg.train.precision.MixedPrecision`)."""
        return [f"x_{m}" for m in self.modalities]

    def feature(self, m: str) -> Tensor:
        """The raw ``(N, F_m)`` features of modality ``m``."""
        return getattr(self, f"x_{m}")

    # ------------------------------------------------------------------ forward
    def _modality(self, m: str, with_separate: bool) -> tuple[Tensor, list[Tensor]]:
        enc = self.encoders[m]
        consumers = [(enc.input_linear, (0, self.transforms[m].out_features))]
        if with_separate:
            consumers += self.separate.consumers(m)
        outs = linear_then_consumers(self.feature(m), self.transforms[m], consumers, self.fused)
        return enc.forward_from_hidden(outs[0], self.adj), outs[1:]

    def _fuse(self, per_modality: list[Tensor]) -> tuple[Tensor, Tensor]:
        u = self.num_users
        users = torch.cat(
            [e[:u] * self.user_weight[:, k] for k, e in enumerate(per_modality)], dim=1
        )
        items = torch.cat([e[u:] for e in per_modality], dim=1)
        if self.item_graph is not None:
            h = items
            for _ in range(self.item_graph_layers):
                h = self.item_graph(h)
            items = items + h
        return users, items

    def forward(self, with_separate: bool = False):
        """Full-graph ``(users (U, M d), items (N, M d))``; with ``with_separate`` also the
        separate-learning consumer outputs per modality."""
        encoded, hidden = [], {}
        for m in self.modalities:
            e, h = self._modality(m, with_separate)
            encoded.append(e)
            hidden[m] = h
        users, items = self._fuse(encoded)
        if with_separate:
            return users, items, hidden
        return users, items

    def loss(self, batch: Tensor) -> dict[str, Tensor]:
        users, pos, neg = batch
        user_out, item_out, hidden = self.forward(with_separate=True)
        u = user_out[users]
        pos_s = (u * item_out[pos]).sum(-1)
        neg_s = (u * item_out[neg]).sum(-1)
        terms = {"bpr": bpr_loss(pos_s, neg_s, variant=self.bpr)}
        terms.update(self.separate.forward_from_hidden(hidden))
        return terms

    def embeddings(self) -> tuple[Tensor, Tensor]:
        return self.forward(with_separate=False)

    def separate_parts(self) -> dict[str, dict[str, Tensor]]:
        """Per modality the projections ``z`` and the generic/unique parts ``g``/``u`` the
        separate-learning losses see (e.g. for the paper's t-SNE figures)."""
        hidden = {}
        for m in self.modalities:
            consumers = self.separate.consumers(m)
            hidden[m] = (
                linear_then_consumers(self.feature(m), self.transforms[m], consumers, self.fused)
                if consumers
                else []
            )
        return self.separate.parts(hidden)

    def extra_repr(self) -> str:
        return (
            f"num_users={self.num_users}, num_items={self.num_items}, "
            f"modalities={self.modalities}, bpr={self.bpr!r}, fused={self.fused}"
        )
