"""LGMRec (Guo et al., AAAI 2024) as in MMRec, for any number of item modalities."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sea_pyg.models._multimodal import check_features
from sea_pyg.models.base import MultimodalRecommender, TrainOutput
from sea_pyg.models.registry import register_model
from sea_pyg.nn.conv import LightGCNPropagation, bipartite_norm_adj
from sea_pyg.nn.data_parallel import sharded_sum
from sea_pyg.nn.graph import unique_edges
from sea_pyg.nn.hypergraph import HypergraphPropagation, gumbel_softmax
from sea_pyg.nn.losses import bpr_loss, candidate_info_nce_loss, emb_loss
from sea_pyg.nn.precision import sparse_mm

__all__ = ["LGMRec", "LGMRecPass"]

#: Largest ``batch x candidates`` block of contrastive logits computed at once (64 MiB of
#: float32); above it the loss runs in exact row chunks.
_CL_BLOCK = 1 << 24


@dataclass
class LGMRecPass:
    """Everything one LGMRec forward pass computes (all users and items).

    Attributes:
        users: Final user embeddings ``(U, d)``.
        items: Final item embeddings ``(N, d)``.
        modal: Projected item features :math:`X^m W^m` per modality, ``{m: (N, d)}``.
        hyper_users: Global (hypergraph) user embeddings per modality, ``{m: (U, d)}``.
        hyper_items: Global (hypergraph) item embeddings per modality, ``{m: (N, d)}``.
    """

    users: Tensor
    items: Tensor
    modal: dict[str, Tensor]
    hyper_users: dict[str, Tensor]
    hyper_items: dict[str, Tensor]


# MMRec LGMRec.yaml: embedding_size 64, feat_embed_dim 64, cf_model lightgcn, n_ui_layers 2,
# n_mm_layers 2, cl_weight 1e-4, reg_weight 1e-6; tau 0.2 is hard-coded in lgmrec.py. Per
# dataset (the YAML's three blocks; baby active, the others commented out):
#   baby:     n_hyper_layer 1, hyper_num 4,  keep_rate 0.5, alpha 0.3   <- our defaults
#   sports:   n_hyper_layer 1, hyper_num 4,  keep_rate 0.4, alpha 0.6
#   clothing: n_hyper_layer 2, hyper_num 64, keep_rate 0.2, alpha 0.2
# Protocol lr 1e-3.
@register_model(
    "lgmrec",
    "LGMRec: local graphs (LightGCN + modality) + global learned hypergraphs (MMRec)",
    # the union of the Baby / Sports / Clothing settings in MMRec's LGMRec.yaml (its grid is the
    # Baby point alone)
    search_space={
        "hyper_layers": [1, 2],
        "num_hyperedges": [4, 64],
        "keep_rate": [0.2, 0.4, 0.5],
        "alpha": [0.2, 0.3, 0.6],
    },
)
class LGMRec(MultimodalRecommender):
    r"""LGMRec: local user-item graph embeddings plus global hypergraph embeddings.

    Notation: :math:`R \in \{0,1\}^{U \times N}` the binarised training interactions,
    :math:`\hat{A}` the symmetric-normalised :math:`(U+N)` bipartite adjacency (degrees
    :math:`+10^{-7}`), :math:`X^m` ``(N, F_m)`` the **frozen** raw features of modality
    :math:`m`, :math:`\bar{\cdot}` row-wise L2 normalisation, :math:`\tau` the temperature.
    Every forward pass (each training batch, and each evaluation) covers all users and items.

    **Local, collaborative** (ID embeddings :math:`E_U, E_I`; ``cf_model="lightgcn"``):

    .. math::
        \mathbf{C} = \frac{1}{L+1}\sum_{l=0}^{L} \hat{A}^l [E_U; E_I]
        \qquad (\texttt{"mf"}: \mathbf{C} = [E_U; E_I])

    **Local, per modality**: items project their features, users average the projections of
    their items, then :math:`L_m` propagations (last layer only):

    .. math::
        P^m = X^m W^m, \qquad Q^m = \operatorname{diag}(d_u + 10^{-7})^{-1} R P^m, \qquad
        \mathbf{M}^m = \hat{A}^{L_m} [Q^m; P^m]

    **Global, per modality**: :math:`H` hyperedges; the item-hyperedge logits come from the
    features, the user ones sum those of the user's items, and memberships are soft
    Gumbel-softmax samples (:func:`~sea_pyg.nn.gumbel_softmax`, :math:`\tau`):

    .. math::
        \mathbf{H}^m_I = \operatorname{GS}_\tau(X^m V^m), \qquad
        \mathbf{H}^m_U = \operatorname{GS}_\tau(R X^m V^m)

    In training both incidences go through dropout (rate :math:`1 - \text{keep\_rate}`,
    kept entries scaled by :math:`1/\text{keep\_rate}`). Then :math:`L_h` layers of
    :class:`~sea_pyg.nn.HypergraphPropagation` from the collaborative item embeddings,
    :math:`\mathbf{Z} = \mathbf{H}_I^{m\top} \mathbf{X}`, :math:`\mathbf{X} \leftarrow
    \mathbf{H}^m_I \mathbf{Z}`, :math:`\mathbf{Y} = \mathbf{H}^m_U \mathbf{Z}`
    (:math:`\mathbf{X}^{(0)} = \mathbf{C}_I`), give :math:`\mathbf{G}^m = [\mathbf{Y}^m;
    \mathbf{X}^m]`.

    **Fusion** and score :math:`\hat{y}_{ui} = \mathbf{e}_u^\top \mathbf{e}_i`:

    .. math::
        [\mathbf{e}_U; \mathbf{e}_I] = \mathbf{C} + \sum_m \overline{\mathbf{M}^m}
        + \alpha\, \overline{\textstyle\sum_m \mathbf{G}^m}

    **Loss** for a batch of :math:`B` triples :math:`(u_b, i_b, j_b)`:

    .. math::
        \mathcal{L} = -\frac{1}{B}\sum_b \ln\sigma(\hat{y}_{u_b i_b} - \hat{y}_{u_b j_b})
        + \lambda_{cl} \sum_{a < c} \Big[\mathrm{NCE}(\mathbf{G}^a_U[u], \mathbf{G}^c_U)
        + \mathrm{NCE}(\mathbf{G}^a_I[i], \mathbf{G}^c_I)\Big]
        + \lambda \frac{\|\mathbf{e}_{u}\|_F + \|\mathbf{e}_{i}\|_F + \|\mathbf{e}_{j}\|_F}{B}

    with :math:`\mathrm{NCE}(\mathbf{A}[t], \mathbf{C}) = -\sum_b \log \frac{\exp(\cos(
    \mathbf{a}_{t_b}, \mathbf{c}_{t_b})/\tau)}{\sum_k \exp(\cos(\mathbf{a}_{t_b},
    \mathbf{c}_k)/\tau)}` summed (not averaged) over the batch, its denominator over **all**
    users (all items) (:func:`~sea_pyg.nn.candidate_info_nce_loss`), and :math:`a < c` the
    pairs of modalities in feature order (MMRec: image anchors, text candidates). The norms
    are un-squared Frobenius norms of the batch rows (MMRec's ``reg_loss``).

    **Randomness.** The Gumbel noise and the dropout masks are drawn from the global torch
    RNG (seeded by the trainer), in MMRec's order: per modality the item then the user
    Gumbel noise, then per modality the item then the user dropout mask. As in MMRec the
    Gumbel noise is also drawn at evaluation (:meth:`embeddings`; dropout is off there), so
    scores vary between calls unless the RNG is seeded; ``eval_gumbel_noise=False`` uses the
    noise-free :math:`\operatorname{softmax}(\cdot/\tau)` at evaluation instead (not MMRec).

    **+SEA.** :meth:`modal_item_representations` are the projected item features
    :math:`P^m = X^m W^m` (``feat_embed_dim``): the input of the local modality graph, so a
    separate-learning loss on them reaches the scores through :math:`\mathbf{M}^m`.

    With one modality there is no contrastive term (it pairs modalities); MMRec's LGMRec then
    falls back to :math:`\mathbf{C}` alone and cannot compute its loss.

    Args:
        num_users: Number of users ``U``.
        train_edge_index: ``(2, E)`` training interactions (user ids, item ids); duplicate
            pairs are collapsed (binarised graph).
        features: ``{modality: (N, F_m) tensor}``, row ``i`` = item ``i``; frozen
            non-persistent buffers (MMRec: ``from_pretrained(freeze=True)``).
        embedding_dim: :math:`d` (MMRec ``embedding_size``: 64).
        feat_embed_dim: Width of :math:`W^m` (MMRec: 64); must equal :math:`d`.
        cf_model: ``"lightgcn"`` (MMRec default) or ``"mf"`` (no propagation).
        num_layers: LightGCN layers :math:`L` (MMRec ``n_ui_layers``: 2).
        modal_layers: Propagations :math:`L_m` of the modality embeddings (MMRec
            ``n_mm_layers``: 2).
        hyper_layers: Hypergraph layers :math:`L_h \geq 1` (MMRec ``n_hyper_layer``; Baby 1,
            Sports 1, Clothing 2).
        num_hyperedges: :math:`H` (MMRec ``hyper_num``; Baby 4, Sports 4, Clothing 64).
        keep_rate: Keep probability of the incidence dropout (MMRec; Baby 0.5, Sports 0.4,
            Clothing 0.2).
        alpha: Weight :math:`\alpha` of the global embeddings (MMRec; Baby 0.3, Sports 0.6,
            Clothing 0.2).
        cl_weight: :math:`\lambda_{cl}` (MMRec: 1e-4).
        reg_weight: :math:`\lambda` (MMRec: 1e-6).
        temperature: :math:`\tau` of the Gumbel-softmax and of the contrastive loss (MMRec
            hard-codes 0.2).
        eval_gumbel_noise: Draw Gumbel noise at evaluation too (MMRec, default) or use the
            noise-free softmax there.

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
        feat_embed_dim: int = 64,
        cf_model: str = "lightgcn",
        num_layers: int = 2,
        modal_layers: int = 2,
        hyper_layers: int = 1,
        num_hyperedges: int = 4,
        keep_rate: float = 0.5,
        alpha: float = 0.3,
        cl_weight: float = 1e-4,
        reg_weight: float = 1e-6,
        temperature: float = 0.2,
        eval_gumbel_noise: bool = True,
    ) -> None:
        super().__init__()
        feats = check_features(features)
        num_items = next(iter(feats.values())).size(0)
        if embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be >= 1, got {embedding_dim}")
        if feat_embed_dim != embedding_dim:
            raise ValueError(
                f"`feat_embed_dim` ({feat_embed_dim}) must equal `embedding_dim` "
                f"({embedding_dim}): the local modality embeddings are added to the ID ones"
            )
        if cf_model not in ("lightgcn", "mf"):
            raise ValueError(f"`cf_model` must be 'lightgcn' or 'mf', got {cf_model!r}")
        if modal_layers < 0:
            raise ValueError(f"`modal_layers` must be >= 0, got {modal_layers}")
        if hyper_layers < 1:
            raise ValueError(
                f"`hyper_layers` must be >= 1 (users read the last hypergraph layer), got "
                f"{hyper_layers}"
            )
        if num_hyperedges < 1:
            raise ValueError(f"`num_hyperedges` must be >= 1, got {num_hyperedges}")
        if not 0.0 < keep_rate <= 1.0:
            raise ValueError(
                f"`keep_rate` is the probability of keeping an incidence entry and must lie "
                f"in (0, 1], got {keep_rate}"
            )
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0 (MMRec: 0.2), got {temperature}")
        if cl_weight < 0 or reg_weight < 0:
            raise ValueError(
                f"`cl_weight` and `reg_weight` must be >= 0, got {cl_weight} and {reg_weight}"
            )
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.embedding_dim, self.feat_embed_dim = embedding_dim, feat_embed_dim
        self.cf_model, self.num_hyperedges = cf_model, int(num_hyperedges)
        self.keep_rate, self.alpha = float(keep_rate), float(alpha)
        self.cl_weight, self.reg_weight = cl_weight, reg_weight
        self.temperature = float(temperature)
        self.eval_gumbel_noise = bool(eval_gumbel_noise)
        self.modalities = list(feats)
        self.feature_dims = {m: int(x.size(1)) for m, x in feats.items()}

        self.user_emb = nn.Embedding(num_users, embedding_dim)
        self.item_emb = nn.Embedding(num_items, embedding_dim)
        for m, x in feats.items():
            self.register_buffer(f"x_{m}", x, persistent=False)
        #: :math:`W^m` ``(F_m, d)``: feature projection (MMRec ``item_*_trs``, no bias).
        self.feat_trs = nn.ParameterDict(
            {m: nn.Parameter(torch.empty(f, feat_embed_dim)) for m, f in self.feature_dims.items()}
        )
        #: :math:`V^m` ``(F_m, H)``: item-hyperedge logits (MMRec ``*_hyper``).
        self.hyper_trs = nn.ParameterDict(
            {m: nn.Parameter(torch.empty(f, num_hyperedges)) for m, f in self.feature_dims.items()}
        )
        self.propagation = LightGCNPropagation(num_layers, aggregation="mean")
        self.modal_propagation = LightGCNPropagation(modal_layers, aggregation="last")
        self.hypergraph = HypergraphPropagation(hyper_layers)

        edges = unique_edges(train_edge_index, self.num_users, self.num_items)
        self.register_buffer(
            "adj", bipartite_norm_adj(edges, self.num_users, self.num_items), persistent=False
        )
        ones = torch.ones(edges.size(1))
        inter = torch.sparse_coo_tensor(
            edges, ones, (self.num_users, self.num_items), check_invariants=False
        )
        self.register_buffer("inter", inter.coalesce().to_sparse_csr(), persistent=False)
        degree = torch.zeros(self.num_users).index_add_(0, edges[0], ones)
        self.register_buffer("inv_degree", (degree + 1e-7).reciprocal(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        for m in self.modalities:
            nn.init.xavier_uniform_(self.feat_trs[m])
            nn.init.xavier_uniform_(self.hyper_trs[m])

    def low_precision_buffers(self) -> list[str]:
        """The item features, which :meth:`loss` reads only as inputs of matrix products: a
        bfloat16 copy stands in for them under ``precision="bf16"``
        (:mod:`sea_pyg.train.precision`)."""
        return [f"x_{m}" for m in self.modalities]

    def feature(self, modality: str) -> Tensor:
        """The frozen raw ``(N, F_m)`` features of ``modality``."""
        return getattr(self, f"x_{modality}")

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, train: bool = False) -> LGMRecPass:
        """One pass over all users and items.

        ``train=True``: the training pass (Gumbel noise and incidence dropout);
        ``train=False``: the evaluation pass (no dropout; Gumbel noise if
        ``eval_gumbel_noise``). The module's own ``training`` flag is not consulted.
        """
        d, u = self.feat_embed_dim, self.num_users
        proj, user_feats, item_logits, user_logits = {}, {}, {}, {}
        for m in self.modalities:
            # one pass over the (N, F_m) features for both X W and X V, one sparse product
            both = self.feature(m) @ torch.cat([self.feat_trs[m], self.hyper_trs[m]], dim=1)
            summed = sparse_mm(self.inter, both)
            proj[m], item_logits[m] = both[:, :d], both[:, d:]
            user_feats[m] = summed[:, :d] * self.inv_degree.unsqueeze(1)
            user_logits[m] = summed[:, d:]

        noise = train or self.eval_gumbel_noise
        incidence = {}
        for m in self.modalities:  # MMRec's draw order: items, then users, per modality
            item_h = gumbel_softmax(item_logits[m], self.temperature, dim=1, noise=noise)
            user_h = gumbel_softmax(user_logits[m], self.temperature, dim=1, noise=noise)
            incidence[m] = (item_h, user_h)

        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        collab = self.propagation(ego, self.adj) if self.cf_model == "lightgcn" else ego
        local = collab
        for m in self.modalities:
            modal = self.modal_propagation(torch.cat([user_feats[m], proj[m]]), self.adj)
            local = local + F.normalize(modal)

        p = 1.0 - self.keep_rate
        hyper_users, hyper_items = {}, {}
        for m in self.modalities:
            item_h, user_h = incidence[m]
            item_h = F.dropout(item_h, p, training=train)
            user_h = F.dropout(user_h, p, training=train)
            hyper_users[m], hyper_items[m] = self.hypergraph(collab[u:], item_h, user_h)
        glob = torch.cat([sum(hyper_users.values()), sum(hyper_items.values())])
        out = local + self.alpha * F.normalize(glob)
        return LGMRecPass(out[:u], out[u:], proj, hyper_users, hyper_items)

    def modal_item_representations(self, items: Tensor | None = None) -> dict[str, Tensor]:
        r"""Per-modality projected item features :math:`P^m = X^m W^m` (``(R, d)``).

        The input of the local modality graphs (they reach the scores through
        :math:`\overline{\mathbf{M}^m}`). Computed afresh from the current parameters, with
        autograd attached (gradients reach :math:`W^m`; the features are frozen).

        Args:
            items: Item ids to compute (default: all ``N`` items).
        """
        out = {}
        for m in self.modalities:
            x = self.feature(m)
            out[m] = (x if items is None else x[items]) @ self.feat_trs[m]
        return out

    def forward_train(self, batch: Tensor, all_modal_items: bool = False) -> TrainOutput:
        """The training pass for a ``(3, B)`` batch.

        Returns a :class:`~sea_pyg.models.TrainOutput` whose ``modal`` are the projected
        features of **all** items (``modal_items=None``; the pass computes them anyway) and
        whose ``rows`` hold ``user``, ``pos``, ``neg`` (``(B, d)`` final embeddings),
        ``users`` and ``pos_items`` (the batch's ids) and ``hyper_users`` /
        ``hyper_items`` (``{m: (U, d)}`` / ``{m: (N, d)}``, for the contrastive term).
        """
        users, pos, neg = batch
        out = self.forward(train=True)
        rows = {
            "user": out.users[users],
            "pos": out.items[pos],
            "neg": out.items[neg],
            "users": users,
            "pos_items": pos,
            "hyper_users": out.hyper_users,
            "hyper_items": out.hyper_items,
        }
        return TrainOutput(out.modal, None, rows)

    def _contrast(self, anchors: Tensor, table: Tensor, ids: Tensor) -> Tensor:
        size = table.size(0)
        chunk = None if ids.numel() * size <= _CL_BLOCK else max(1, _CL_BLOCK // size)
        return candidate_info_nce_loss(
            anchors[ids],
            table,
            ids,
            self.temperature,
            reduction="sum",
            chunk_size=chunk,
            check_values=False,  # batch ids: no host round trip in the step
        )

    def loss_terms(self, out: TrainOutput) -> dict[str, Tensor]:
        """``bpr``; ``hcl`` (the hypergraph contrastive term, with at least two modalities
        and ``cl_weight > 0``); ``reg`` (when ``reg_weight > 0``); all already weighted."""
        u, p, n = out.rows["user"], out.rows["pos"], out.rows["neg"]
        terms = {"bpr": bpr_loss((u * p).sum(-1), (u * n).sum(-1), variant="logsigmoid")}
        if self.cl_weight and len(self.modalities) > 1:
            hu, hi = out.rows["hyper_users"], out.rows["hyper_items"]
            users, pos = out.rows["users"], out.rows["pos_items"]
            total = u.new_zeros(())
            for a, first in enumerate(self.modalities):
                for second in self.modalities[a + 1 :]:
                    total = total + self._contrast(hu[first], hu[second], users)
                    total = total + self._contrast(hi[first], hi[second], pos)
            terms["hcl"] = self.cl_weight * sharded_sum(total)  # over the whole batch
        if self.reg_weight:
            terms["reg"] = self.reg_weight * emb_loss(u, p, n, batch_rows=True)
        return terms

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final embeddings of the evaluation pass (no dropout; Gumbel noise drawn from the
        global RNG unless ``eval_gumbel_noise=False``)."""
        out = self.forward(train=False)
        return out.users, out.items

    def extra_repr(self) -> str:
        dims = ", ".join(f"{m}={f}" for m, f in self.feature_dims.items())
        return (
            f"num_users={self.num_users}, num_items={self.num_items}, features=({dims}), "
            f"embedding_dim={self.embedding_dim}, cf_model={self.cf_model!r}, "
            f"num_hyperedges={self.num_hyperedges}, keep_rate={self.keep_rate}, "
            f"alpha={self.alpha}, cl_weight={self.cl_weight}, reg_weight={self.reg_weight}, "
            f"temperature={self.temperature}"
            + ("" if self.eval_gumbel_noise else ", eval_gumbel_noise=False")
        )
