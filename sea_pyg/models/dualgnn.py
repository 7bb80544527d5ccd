"""DualGNN (Wang et al., TMM 2021) as MMRec computes it, for any number of item modalities."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from sea_pyg.models._multimodal import check_features
from sea_pyg.models.base import MultimodalRecommender, TrainOutput
from sea_pyg.models.registry import register_model
from sea_pyg.nn.conv import bipartite_norm_adj
from sea_pyg.nn.encoders import ModalGCNEncoder
from sea_pyg.nn.losses import bpr_loss
from sea_pyg.nn.user_graph import UserCooccurrenceGraph

__all__ = ["DualGNN"]

#: How the per-modality GCN outputs are combined (MMRec's ``construction``).
FUSIONS = ("mmrec", "weighted_sum", "concat")


# MMRec DualGNN.yaml: embedding_size 64, n_layers 2 (the GCN has 2 hard-coded layers),
# aggr_mode ['add'] (the only grid value: the symmetric-normalised sum, what ModalGCNEncoder
# computes); grid reg_weight {0.1, 0.01, 1e-3, 1e-4, 1e-5}, learning_rate {0.1, 0.01, 1e-3,
# 1e-4, 1e-5}. Hard-coded in dualgnn.py: k = 40 neighbours, user_aggr_mode 'softmax',
# construction 'weighted_sum'. No published point for Amazon: defaults reg_weight 0.1 and lr
# 1e-4 are the official DualGNN code's (wqf321/dualgnn parse.py: weight_decay 0.1, l_r 1e-4);
# 0.1 is also the first grid value.
@register_model(
    "dualgnn",
    "DualGNN: per-modality user-item GCNs, per-user modality weights, user co-occurrence graph "
    "(MMRec)",
    train_defaults={"lr": 1e-4},
    sea_preset=(
        "DualGNN + SEA's separate learning on the item MLP rows H^m (64-d, they feed the GCNs); "
        "CLUB learning rate 1e-4, the model's",
        {"club_lr": 1e-4},
    ),
    # MMRec DualGNN.yaml's grid (learning_rate -> lr; aggr_mode has one value)
    search_space={
        "lr": [0.1, 0.01, 1e-3, 1e-4, 1e-5],
        "reg_weight": [0.1, 0.01, 1e-3, 1e-4, 1e-5],
    },
)
class DualGNN(MultimodalRecommender):
    r"""DualGNN: per-modality user-item GCNs fused per user, plus a user co-occurrence graph.

    **Per modality** :math:`m` (raw, frozen features :math:`\mathbf{X}^m \in
    \mathbb{R}^{N \times F_m}`), a :class:`~sea_pyg.nn.ModalGCNEncoder` (MMRec's ``GCN``):
    free user preferences :math:`\mathbf{P}^m \in \mathbb{R}^{U \times d}`, item rows
    :math:`\mathbf{H}^m = \mathbf{W}_2\,\mathrm{LeakyReLU}_{0.01}(\mathbf{W}_1 \mathbf{X}^m +
    \mathbf{b}_1) + \mathbf{b}_2` (:math:`F_m \to 256 \to d`), layer 0 L2-normalised row-wise and
    propagated twice over the user-item graph :math:`\hat{A} = D^{-1/2} A D^{-1/2}` (no
    self-loops, no epsilon, duplicate pairs counted, as PyG's ``degree`` in MMRec's
    ``Base_gcn``), layers **summed**:

    .. math::
        \mathbf{E}^{m,(0)} = \mathrm{normalize}\begin{pmatrix}\mathbf{P}^m\\ \mathbf{H}^m
        \end{pmatrix}, \qquad
        \mathbf{E}^m = \mathbf{E}^{m,(0)} + \hat{A}\mathbf{E}^{m,(0)} + \hat{A}^2
        \mathbf{E}^{m,(0)}.

    **Fusion** (``fusion``) with per-user weights :math:`w_{u,m}` (``user_weight``, ``(U, M,
    1)``, ``xavier_normal_`` then a softmax over modalities once at init, :math:`\approx 1/M`,
    free afterwards); items :math:`\mathbf{e}_i = \sum_m \mathbf{e}^m_i`:

    * ``"mmrec"`` (default, what MMRec computes): :math:`\mathbf{e}_u = w_{u,1} \sum_m
      \mathbf{e}^m_u + \sum_{m \geq 2} w_{u,m} \mathbf{e}^m_u`. MMRec adds the text output
      into the image tensor **in place** (``representation += self.t_rep`` where
      ``representation`` *is* ``self.v_rep``), so its image user rows hold image + text when
      they are weighted: :math:`w_{u,v}\mathbf{e}^v_u + (w_{u,v} + w_{u,t})\mathbf{e}^t_u`.
    * ``"weighted_sum"`` (the paper and the official DualGNN code): :math:`\mathbf{e}_u =
      \sum_m w_{u,m} \mathbf{e}^m_u`.
    * ``"concat"`` (DRAGON's): :math:`\mathbf{e}_u = \Vert_m\, w_{u,m}\mathbf{e}^m_u`,
      :math:`\mathbf{e}_i = \Vert_m\, \mathbf{e}^m_i` (size :math:`Md`).

    With one modality there are no weights: :math:`\mathbf{e}_u = \mathbf{e}^m_u`.

    **User co-occurrence graph** (:class:`~sea_pyg.nn.UserCooccurrenceGraph`, built from the
    training split): before every training epoch (:meth:`pre_epoch`) each user draws
    ``num_neighbors`` = 40 neighbours among the users sharing the most training items
    (fewer: padded by resampling), weighted by a softmax over the shared-item counts
    (``user_aggr_mode``); one residual aggregation of the fused users,

    .. math::
        \mathbf{u}_u = \mathbf{e}_u + \sum_t \omega_{ut}\, \mathbf{e}_{n_{ut}}, \qquad
        \hat{y}_{ui} = \mathbf{u}_u^\top \mathbf{e}_i.

    **Loss** (MMRec), for a batch of :math:`B` triples (users with repetitions):

    .. math::
        \mathcal{L} = -\frac{1}{B}\sum_b \log_2 \sigma(\hat{y}_{u_b i_b} - \hat{y}_{u_b j_b})
        + \lambda \Big( \sum_m \operatorname{mean}\big(\mathbf{P}^m_{u_b}\big)^2
        + \operatorname{mean}\, w^2 \Big)

    (means over all entries: the batch's preference rows, the whole ``(U, M)`` weight table).
    Terms ``bpr`` and, when :math:`\lambda \neq 0`, ``reg``. Everything is recomputed on the
    full graphs at every mini-batch, as in MMRec; evaluation recomputes it with the current
    parameters and the current epoch's user sample.

    Args:
        num_users: ``U``.
        train_edge_index: ``(2, E)`` training interactions (user ids, item ids).
        features: ``{modality: (N, F_m)}`` (kept as non-persistent buffers, not trained).
        embedding_dim: :math:`d` per modality (MMRec: 64).
        hidden_dim: Item MLP hidden size (MMRec: ``4 d`` = 256).
        num_layers: User-item propagation layers (MMRec: 2, hard-coded).
        num_neighbors: Users sampled per user in the co-occurrence graph (MMRec: 40).
        user_aggr_mode: ``"softmax"`` over the co-occurrence counts (MMRec) or ``"mean"``.
        fusion: ``"mmrec"``, ``"weighted_sum"`` or ``"concat"`` (above).
        reg_weight: :math:`\lambda` (MMRec grid: 0.1, 0.01, 1e-3, 1e-4, 1e-5).

    Shapes:
        - :meth:`embeddings`: users ``(U, D)``, items ``(N, D)``, ``D = d`` (``Md`` for
          ``"concat"``)
        - :meth:`modal_item_representations`: ``{m: (N, d)}``, the item rows
          :math:`\mathbf{H}^m` before normalisation
    """

    def __init__(
        self,
        num_users: int,
        train_edge_index: Tensor,
        features: Mapping[str, Tensor],
        embedding_dim: int = 64,
        hidden_dim: int = 256,
        num_layers: int = 2,
        num_neighbors: int = 40,
        user_aggr_mode: str = "softmax",
        fusion: str = "mmrec",
        reg_weight: float = 0.1,
    ) -> None:
        super().__init__()
        feats = check_features(features)
        if fusion not in FUSIONS:
            raise ValueError(f"`fusion` must be one of {FUSIONS}, got {fusion!r}")
        if user_aggr_mode not in ("softmax", "mean"):
            raise ValueError(
                f"`user_aggr_mode` must be 'softmax' (MMRec) or 'mean', got {user_aggr_mode!r}"
            )
        if reg_weight < 0:
            raise ValueError(f"`reg_weight` must be >= 0, got {reg_weight}")
        self.num_users = int(num_users)
        self.num_items = int(next(iter(feats.values())).size(0))
        self.modalities = list(feats)
        self.embedding_dim, self.fusion, self.reg_weight = embedding_dim, fusion, reg_weight
        for m, x in feats.items():
            self.register_buffer(f"x_{m}", x.to(torch.float32), persistent=False)
        self.encoders = nn.ModuleDict(
            {
                m: ModalGCNEncoder(self.num_users, x.size(1), embedding_dim, hidden_dim, num_layers)
                for m, x in feats.items()
            }
        )
        #: Per-user modality weights ``(U, M, 1)``; ``None`` with one modality.
        self.user_weight = (
            nn.Parameter(torch.empty(self.num_users, len(feats), 1)) if len(feats) > 1 else None
        )
        self.register_buffer(
            "adj",
            bipartite_norm_adj(
                train_edge_index, self.num_users, self.num_items, binarize=False, eps=0.0
            ),
            persistent=False,
        )
        self.user_graph = UserCooccurrenceGraph(
            train_edge_index, self.num_users, self.num_items, num_neighbors, user_aggr_mode
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for enc in self.encoders.values():
            enc.reset_parameters()
        if self.user_weight is not None:
            with torch.no_grad():
                nn.init.xavier_normal_(self.user_weight)
                self.user_weight.copy_(torch.softmax(self.user_weight, dim=1))

    def low_precision_buffers(self) -> list[str]:
        """The item features, which :meth:`loss` reads only as inputs of matrix products: a
        bfloat16 copy stands in for them under ``precision="bf16"``
        (:mod:`sea_pyg.train.precision`)."""
        return [f"x_{m}" for m in self.modalities]

    def feature(self, m: str) -> Tensor:
        """The raw ``(N, F_m)`` features of modality ``m``."""
        return getattr(self, f"x_{m}")

    def pre_epoch(self, epoch: int) -> None:
        """Redraw the user co-occurrence sample (global torch RNG), as MMRec does per epoch."""
        self.user_graph.resample()

    # ---- forward ------------------------------------------------------------------------------
    def modal_item_representations(self, items: Tensor | None = None) -> dict[str, Tensor]:
        r"""Per-modality item rows :math:`\mathbf{H}^m` (the encoders' MLP outputs, before the
        L2 normalisation and the graph), computed afresh with autograd attached.

        Args:
            items: Item ids (default: all ``N`` items).

        Returns:
            ``{modality: (len(items) or N, d)}``.
        """
        out = {}
        for m, enc in self.encoders.items():
            x = self.feature(m) if items is None else self.feature(m)[items]
            out[m] = enc.item_embedding(enc.mlp(x))
        return out

    def fuse(self, encoded: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Users ``(U, D)`` and items ``(N, D)`` from the per-modality outputs ``(U + N, d)``."""
        u = self.num_users
        if len(encoded) == 1:
            return encoded[0][:u], encoded[0][u:]
        w = self.user_weight
        if self.fusion == "concat":
            users = torch.cat([e[:u] * w[:, k] for k, e in enumerate(encoded)], dim=1)
            return users, torch.cat([e[u:] for e in encoded], dim=1)
        total = torch.stack(encoded).sum(0)
        if self.fusion == "mmrec":  # MMRec's in-place add: the first modality holds the sum
            encoded = [total, *encoded[1:]]
        users = sum(e[:u] * w[:, k] for k, e in enumerate(encoded))
        return users, total[u:]

    def propagate_items(self, items: Tensor) -> Tensor:
        """Item-side homogeneous graph (none in DualGNN; DRAGON's item-item graph)."""
        return items

    def forward(self) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Users ``(U, D)``, items ``(N, D)`` and ``{m: H^m (N, d)}`` on the full graphs."""
        reps, encoded = self.modal_item_representations(), []
        for m, enc in self.encoders.items():
            encoded.append(enc.forward_from_items(reps[m], self.adj))
        users, items = self.fuse(encoded)
        users = users + self.user_graph(users)
        return users, self.propagate_items(items), reps

    def forward_train(self, batch: Tensor, all_modal_items: bool = False) -> TrainOutput:
        """One full-graph pass for a ``(3, B)`` batch.

        Returns a :class:`~sea_pyg.models.TrainOutput` with ``rows`` ``user``, ``pos``, ``neg``
        (``(B, D)``) and ``users`` (the batch's user ids), and ``modal`` = :math:`\\mathbf{H}^m`
        of **all** items (computed by the pass anyway; ``modal_items`` ``None``).
        """
        users, pos, neg = batch
        user_all, item_all, reps = self.forward()
        rows = {"user": user_all[users], "pos": item_all[pos], "neg": item_all[neg], "users": users}
        return TrainOutput(modal=reps, modal_items=None, rows=rows)

    def loss_terms(self, out: TrainOutput) -> dict[str, Tensor]:
        u, p, n = out.rows["user"], out.rows["pos"], out.rows["neg"]
        terms = {"bpr": bpr_loss((u * p).sum(-1), (u * n).sum(-1), variant="log2")}
        if self.reg_weight:
            users = out.rows["users"]
            reg = sum(enc.preference[users].pow(2).mean() for enc in self.encoders.values())
            if self.user_weight is not None:
                reg = reg + self.user_weight.pow(2).mean()
            terms["reg"] = self.reg_weight * reg
        return terms

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final embeddings with the current parameters and the current user sample."""
        users, items, _ = self.forward()
        return users, items

    def extra_repr(self) -> str:
        dims = ", ".join(f"{m}={self.feature(m).size(1)}" for m in self.modalities)
        return (
            f"num_users={self.num_users}, num_items={self.num_items}, features=({dims}), "
            f"embedding_dim={self.embedding_dim}, fusion={self.fusion!r}, "
            f"reg_weight={self.reg_weight}"
        )
