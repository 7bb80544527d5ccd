"""DRAGON (Zhou et al., 2023) as MMRec computes it: the dual-graph backbone SEA builds on."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from sea_pyg.models.dualgnn import DualGNN
from sea_pyg.models.registry import register_model
from sea_pyg.nn.knn import ItemKNNGraph, image_weighted_mix

__all__ = ["DRAGON"]


# MMRec DRAGON.yaml: embedding_size 64, feat_embed_dim 64 (unused), n_mm_layers 1, n_layers 2
# (the GCN has 2 hard-coded layers), knn_k 10, mm_image_weight 0.1, aggr_mode ['add'] (the only
# grid value: the symmetric-normalised sum); grid reg_weight {0.1, 0.01, 1e-3, 1e-4, 1e-5},
# learning_rate {0.1, 0.01, 1e-3, 1e-4, 1e-5}. Hard-coded in dragon.py: k = 40 neighbours,
# user_aggr_mode 'softmax', construction 'cat'. Defaults: the official DRAGON README's Baby and
# Sports setting, lr 1e-4 and reg_weight 1e-3 (Clothing: lr 1e-4, reg_weight 0.1).
@register_model(
    "dragon",
    "DRAGON: DualGNN's heterogeneous graphs + user co-occurrence graph + frozen item kNN graph, "
    "concatenated modalities (MMRec; SEA's backbone)",
    train_defaults={"lr": 1e-4},
    sea_preset=(
        "DRAGON + SEA's separate learning on the item MLP rows H^m (64-d, they feed the GCNs; "
        "SEA itself splits a learned F_m x F_m transform of the raw features instead); CLUB "
        "learning rate 1e-4, the model's",
        {"club_lr": 1e-4},
    ),
    # MMRec DRAGON.yaml's grid (learning_rate -> lr; aggr_mode has one value)
    search_space={
        "lr": [0.1, 0.01, 1e-3, 1e-4, 1e-5],
        "reg_weight": [0.1, 0.01, 1e-3, 1e-4, 1e-5],
    },
)
class DRAGON(DualGNN):
    r"""DRAGON: dual representations from heterogeneous and homogeneous graphs.

    DRAGON is :class:`~sea_pyg.models.DualGNN` (same per-modality user-item encoders, same user
    co-occurrence graph and its per-epoch sample, same loss) with two changes, as in MMRec's
    ``dragon.py``:

    * **fusion by attentive concatenation** (``fusion="concat"``, MMRec's ``construction =
      'cat'``): :math:`\mathbf{e}_u = \Vert_m\, w_{u,m}\mathbf{e}^m_u` with the per-user weights
      :math:`w_{u,m}`, :math:`\mathbf{e}_i = \Vert_m\, \mathbf{e}^m_i` (:math:`Md` = 128-d for
      image + text, image first);
    * **an item-item graph** :math:`\mathbf{S}` (:class:`~sea_pyg.nn.ItemKNNGraph`), built once
      from the raw features and frozen: per modality the top-``knn_k`` cosine neighbours (self
      included), binary, directed, values :math:`r_i^{-1/2} r_j^{-1/2}` with row sums
      :math:`+10^{-7}` (:math:`\approx 1/k`), mixed with fixed weights :math:`\mathbf{S} =
      0.1\,\hat{\mathbf{A}}_{image} + 0.9\,\hat{\mathbf{A}}_{text}`
      (:func:`~sea_pyg.nn.image_weighted_mix`; one modality: weight 1). It is applied
      ``item_graph_layers`` times to the fused items and added residually,

    .. math::
        \mathbf{i}_i = \mathbf{e}_i + (\mathbf{S}^{L_{mm}} \mathbf{E}_I)_i, \qquad
        \mathbf{u}_u = \mathbf{e}_u + \sum_t \omega_{ut}\,\mathbf{e}_{n_{ut}}, \qquad
        \hat{y}_{ui} = \mathbf{u}_u^\top \mathbf{i}_i.

    Loss: :math:`\log_2` BPR + :math:`\lambda\,(\sum_m \operatorname{mean}(\mathbf{P}^m_{u_b})^2
    + \operatorname{mean}\, w^2)` (MMRec's ``'cat'`` branch). Trainable: the user preferences
    :math:`\mathbf{P}^m`, the item MLPs and the user weights; both homogeneous graphs are fixed
    (the user sample is redrawn each epoch). See :class:`~sea_pyg.models.DualGNN` for the
    encoders, the user graph and the other ``fusion`` values.

    Args:
        num_users: ``U``.
        train_edge_index: ``(2, E)`` training interactions.
        features: ``{modality: (N, F_m)}`` (non-persistent buffers, not trained).
        embedding_dim: :math:`d` per modality (MMRec: 64).
        hidden_dim: Item MLP hidden size (MMRec: 256).
        num_layers: User-item propagation layers (MMRec: 2).
        knn_k: Neighbours per item in the item-item graph, self included (MMRec: 10).
        mm_image_weight: Weight of the ``"image"`` graph (MMRec: 0.1).
        knn_weights: Explicit ``{modality: weight}`` mix; overrides ``mm_image_weight``.
        item_graph_layers: Propagations :math:`L_{mm}` over :math:`\mathbf{S}` (MMRec
            ``n_mm_layers``: 1; 0 removes the item graph).
        num_neighbors: Users sampled per user in the co-occurrence graph (MMRec: 40).
        user_aggr_mode: ``"softmax"`` (MMRec) or ``"mean"``.
        fusion: ``"concat"`` (MMRec's DRAGON), ``"mmrec"`` or ``"weighted_sum"``.
        reg_weight: :math:`\lambda` (MMRec grid: 0.1, 0.01, 1e-3, 1e-4, 1e-5).

    Shapes:
        - :meth:`embeddings`: users ``(U, Md)``, items ``(N, Md)`` (``d`` for the sum
          fusions)
        - :meth:`modal_item_representations`: ``{m: (N, d)}``
    """

    def __init__(
        self,
        num_users: int,
        train_edge_index: Tensor,
        features: Mapping[str, Tensor],
        embedding_dim: int = 64,
        hidden_dim: int = 256,
        num_layers: int = 2,
        knn_k: int = 10,
        mm_image_weight: float = 0.1,
        knn_weights: Mapping[str, float] | None = None,
        item_graph_layers: int = 1,
        num_neighbors: int = 40,
        user_aggr_mode: str = "softmax",
        fusion: str = "concat",
        reg_weight: float = 1e-3,
    ) -> None:
        if isinstance(item_graph_layers, bool) or item_graph_layers < 0:
            raise ValueError(f"`item_graph_layers` must be >= 0, got {item_graph_layers!r}")
        super().__init__(
            num_users,
            train_edge_index,
            features,
            embedding_dim=embedding_dim,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            num_neighbors=num_neighbors,
            user_aggr_mode=user_aggr_mode,
            fusion=fusion,
            reg_weight=reg_weight,
        )
        self.item_graph_layers = int(item_graph_layers)
        weights = dict(knn_weights) if knn_weights is not None else None
        if weights is None:
            weights = image_weighted_mix(self.modalities, mm_image_weight)
        self.item_graph = (
            ItemKNNGraph({m: self.feature(m) for m in self.modalities}, k=knn_k, weights=weights)
            if self.item_graph_layers > 0
            else None
        )

    def propagate_items(self, items: Tensor) -> Tensor:
        r""":math:`\mathbf{E}_I + \mathbf{S}^{L_{mm}}\mathbf{E}_I` (the fused items)."""
        if self.item_graph is None:
            return items
        h = items
        for _ in range(self.item_graph_layers):
            h = self.item_graph(h)
        return items + h

    def extra_repr(self) -> str:
        return super().extra_repr() + f", item_graph_layers={self.item_graph_layers}"
