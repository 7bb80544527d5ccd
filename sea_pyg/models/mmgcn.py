"""MMGCN (Wei et al., MM 2019) as in MMRec, for any number of item modalities."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sea_pyg.models._multimodal import check_features
from sea_pyg.models.base import MultimodalRecommender, TrainOutput
from sea_pyg.models.registry import register_model
from sea_pyg.nn.losses import bpr_loss
from sea_pyg.nn.neighbour_conv import NeighbourConv, bipartite_adjacency

__all__ = ["MMGCN"]

#: MMRec's projection of the raw features before the graph: the image GCN gets an MLP to 256
#: (``dim_latent=256``), the text GCN none.
MMREC_LATENT_DIMS = {"image": 256}


class ModalityGCN(nn.Module):
    r"""One modality's tower of MMGCN: a user-item GCN with its own user preference vectors.

    With :math:`\mathbf{P} \in \mathbb{R}^{U \times D}` the user preferences,
    :math:`\mathbf{f}_i = T(\mathbf{x}_i)` the item features (an MLP ``Linear F -> D`` when the
    modality is projected, else the raw features, :math:`D = F`), :math:`\mathbf{Q}` the ID
    embeddings shared by all towers (users first) and :math:`\phi` LeakyReLU (slope 0.01):

    .. math::
        \mathbf{X}^{(0)} = \operatorname{normalize}\begin{pmatrix}\mathbf{P} \\ \mathbf{F}
        \end{pmatrix}, \qquad
        \mathbf{H}^{(l)} = \phi\big(\operatorname{agg}_{j\in\mathcal{N}(v)}
        \mathbf{X}^{(l-1)}_j \mathbf{W}_l\big), \qquad
        \hat{\mathbf{X}}^{(l)} = \phi\big(\mathbf{X}^{(l-1)} \mathbf{V}_l^\top +
        \mathbf{b}_l\big) + \mathbf{Q}

    .. math::
        \mathbf{X}^{(l)} = \phi\big(G_l [\mathbf{H}^{(l)} \,\|\, \hat{\mathbf{X}}^{(l)}]\big)
        \ \ (\text{concat}), \qquad
        \mathbf{X}^{(l)} = \phi\big(G_l \mathbf{H}^{(l)} + \hat{\mathbf{X}}^{(l)}\big)
        \ \ (\text{otherwise})

    for :math:`l = 1, \dots, L` (``normalize``: rows to unit L2 norm; ``agg``: the neighbour
    mean or sum of :class:`~sea_pyg.nn.NeighbourConv`; :math:`+\mathbf{Q}` only with
    ``has_id``). The output is :math:`\mathbf{X}^{(L)}` ``(U + N, d)``.

    Init as in MMRec: :math:`\mathbf{P}` ``xavier_normal_``; :math:`\mathbf{W}_l`,
    :math:`\mathbf{V}_l` and :math:`G_1`'s weight ``xavier_normal_``; :math:`G_{l \ge 2}`, the
    biases and the MLP PyTorch's default.

    Args:
        num_users: ``U``.
        feature_dim: ``F``.
        embedding_dim: ``d``.
        latent_dim: ``D`` of the MLP, or ``None`` for no MLP (``D = F``).
        num_layers: ``L >= 1``.
        aggr: ``"mean"`` or ``"add"``.
        concat: Combine by concatenation (see above).
        has_id: Add the ID embeddings :math:`\mathbf{Q}`.
        trainable_preferences: Learn :math:`\mathbf{P}`; ``False`` keeps it a fixed random
            buffer (MMRec).
    """

    def __init__(
        self,
        num_users: int,
        feature_dim: int,
        embedding_dim: int,
        latent_dim: int | None,
        num_layers: int,
        aggr: str,
        concat: bool,
        has_id: bool,
        trainable_preferences: bool,
    ) -> None:
        super().__init__()
        self.concat, self.has_id = bool(concat), bool(has_id)
        self.mlp = nn.Linear(feature_dim, latent_dim) if latent_dim else None
        dim = int(latent_dim) if latent_dim else int(feature_dim)
        pref = torch.empty(num_users, dim)
        if trainable_preferences:
            self.preference = nn.Parameter(pref)
        else:
            self.register_buffer("preference", pref)
        self.convs, self.linears, self.combines = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for layer in range(num_layers):
            d_in = dim if layer == 0 else embedding_dim
            self.convs.append(NeighbourConv(d_in, d_in, aggr=aggr))
            self.linears.append(nn.Linear(d_in, embedding_dim))
            g_in = d_in + embedding_dim if self.concat else d_in
            self.combines.append(nn.Linear(g_in, embedding_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.preference)
        if self.mlp is not None:
            self.mlp.reset_parameters()
        for layer, (conv, lin, g) in enumerate(
            zip(self.convs, self.linears, self.combines, strict=True)
        ):
            conv.reset_parameters()
            lin.reset_parameters()
            nn.init.xavier_normal_(lin.weight)
            g.reset_parameters()
            if layer == 0:
                nn.init.xavier_normal_(g.weight)

    def forward(self, features: Tensor, id_emb: Tensor, adj: Tensor) -> Tensor:
        feats = self.mlp(features) if self.mlp is not None else features
        x = F.normalize(torch.cat([self.preference, feats]), dim=-1)
        for conv, lin, g in zip(self.convs, self.linears, self.combines, strict=True):
            h = F.leaky_relu(conv(x, adj))
            x_hat = F.leaky_relu(lin(x))
            if self.has_id:
                x_hat = x_hat + id_emb
            if self.concat:
                x = F.leaky_relu(g(torch.cat([h, x_hat], dim=-1)))
            else:
                x = F.leaky_relu(g(h) + x_hat)
        return x


# MMRec MMGCN.yaml: embedding_size 64, n_layers 2 (unused: MMRec's GCN has 3 layers written out);
# grid reg_weight {0, 1e-5, 1e-4, 1e-3, 1e-2, 0.1}, learning_rate {1e-4, 5e-4, 1e-3, 5e-3, 1e-2}.
# No chosen point is published (the MMGCN paper has no Amazon-Baby run): the first grid values,
# reg_weight 0 and lr 1e-4. Code defaults: aggr_mode 'mean', concate 'False' (a non-empty string,
# hence true: concatenation), has_id True, dim_latent 256 for the image GCN only.
@register_model(
    "mmgcn",
    "MMGCN: one user-item GCN per modality with its own user preferences, fused (MMRec MMGCN)",
    train_defaults={"lr": 1e-4},
    # MMRec MMGCN.yaml's grid (learning_rate -> lr; its '0.001.0.005' typo read as 0.001, 0.005)
    search_space={
        "reg_weight": [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.1],
        "lr": [1e-4, 5e-4, 1e-3, 5e-3, 1e-2],
    },
)
class MMGCN(MultimodalRecommender):
    r"""MMGCN: a user-item graph convolution network per modality, averaged.

    Every modality :math:`m` has its own tower (:class:`ModalityGCN`): user preference vectors
    :math:`\mathbf{P}^m`, the item features (projected by an MLP for the modalities in
    ``latent_dims``, raw otherwise), :math:`L` graph layers over the binarised user-item graph
    (:class:`~sea_pyg.nn.NeighbourConv`: neighbour mean of :math:`\mathbf{X}\mathbf{W}`, no
    normalisation), each combined with a transformed copy of its input plus the ID embeddings
    :math:`\mathbf{Q}` shared by the towers. The towers' outputs are averaged:

    .. math::
        \mathbf{X}^m = \mathrm{GCN}_m\big(\mathbf{P}^m, T_m(\mathbf{x}^m), \mathbf{Q}\big)
        \in \mathbb{R}^{(U+N)\times d}, \qquad
        \mathbf{X} = \frac{1}{M}\sum_m \mathbf{X}^m, \qquad
        \hat{y}_{ui} = \mathbf{X}_u^\top \mathbf{X}_{U+i}

    **Loss** (MMRec), with :math:`\Delta = \hat{y}_{ui} - \hat{y}_{uj}`:

    .. math::
        \mathcal{L} = -\frac{1}{B}\sum \ln\sigma(\Delta)
        + \lambda\Big(\frac{\sum_b 2\|\mathbf{Q}_{u_b}\|^2 + \|\mathbf{Q}_{i_b}\|^2 +
        \|\mathbf{Q}_{j_b}\|^2}{2Bd} + \operatorname{mean}\big((\mathbf{P}^{image})^2\big)\Big)

    (MMRec's ``reg_embedding_loss``: the mean square of the ID rows of the batch's
    (user, item) pairs, plus the mean square of the **image** tower's whole preference table
    when there is an image modality). Terms: ``bpr``, ``reg``.

    **MMRec trains neither** :math:`\mathbf{Q}` **nor the** :math:`\mathbf{P}^m`: they are plain
    tensors, not parameters, so its optimizer never updates them (they stay at their random
    ``xavier_normal_`` values and the :math:`\lambda` term has no effect on training). That is
    the default here (``trainable_embeddings=False``: fixed random buffers, saved in
    checkpoints); ``trainable_embeddings=True`` learns them, as the paper intends.

    Args:
        num_users: Number of users ``U``.
        train_edge_index: ``(2, E)`` training interactions (user ids, item ids); duplicate
            pairs are collapsed.
        features: ``{modality: (N, F_m) tensor}``, row ``i`` = item ``i`` (frozen; stored as
            non-persistent buffers).
        embedding_dim: :math:`d` (MMRec ``embedding_size``: 64).
        num_layers: Graph layers per tower :math:`L` (MMRec: 3, written out in its code; the
            YAML's ``n_layers: 2`` is not used).
        latent_dims: ``{modality: D_m}``: modalities whose features go through an MLP
            ``Linear F_m -> D_m`` first; the others enter raw. ``None``: MMRec's choice,
            ``{"image": 256}`` (applied when there is an ``image`` modality).
        aggregation: Neighbour aggregation, ``"mean"`` (MMRec) or ``"add"``.
        concat: Combine the graph and the self branch by concatenation (MMRec: ``True``).
        has_id: Add the ID embeddings in every layer (MMRec: ``True``).
        reg_weight: :math:`\lambda` (MMRec grid: 0, 1e-5, 1e-4, 1e-3, 1e-2, 0.1).
        trainable_embeddings: Learn :math:`\mathbf{Q}` and the :math:`\mathbf{P}^m` (the paper)
            instead of keeping them fixed (MMRec, default).

    Shapes:
        - :meth:`embeddings`: users ``(U, d)``, items ``(N, d)``
        - :meth:`modal_item_representations`: ``{m: (N, d)}``, the item rows of
          :math:`\mathbf{X}^m`
    """

    def __init__(
        self,
        num_users: int,
        train_edge_index: Tensor,
        features: Mapping[str, Tensor],
        embedding_dim: int = 64,
        num_layers: int = 3,
        latent_dims: Mapping[str, int] | None = None,
        aggregation: str = "mean",
        concat: bool = True,
        has_id: bool = True,
        reg_weight: float = 0.0,
        trainable_embeddings: bool = False,
    ) -> None:
        super().__init__()
        feats = check_features(features)
        num_items = next(iter(feats.values())).size(0)
        if int(embedding_dim) < 1:
            raise ValueError(f"`embedding_dim` must be >= 1, got {embedding_dim}")
        if int(num_layers) < 1:
            raise ValueError(f"`num_layers` must be >= 1, got {num_layers}")
        if aggregation not in ("mean", "add"):
            raise ValueError(f"`aggregation` must be 'mean' or 'add', got {aggregation!r}")
        if float(reg_weight) < 0:
            raise ValueError(f"`reg_weight` must be >= 0, got {reg_weight}")
        if latent_dims is None:
            latent = {m: d for m, d in MMREC_LATENT_DIMS.items() if m in feats}
        else:
            latent = {str(m): int(d) for m, d in dict(latent_dims).items()}
            unknown = sorted(set(latent) - set(feats))
            if unknown:
                raise ValueError(
                    f"`latent_dims` names modalities {unknown} that the features do not have "
                    f"(they have {list(feats)}); give {{modality: size}} for those to project"
                )
            bad = {m: d for m, d in latent.items() if d < 1}
            if bad:
                raise ValueError(f"`latent_dims` sizes must be >= 1, got {bad}")
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.embedding_dim, self.num_layers = int(embedding_dim), int(num_layers)
        self.latent_dims = latent
        self.aggregation, self.concat, self.has_id = aggregation, bool(concat), bool(has_id)
        self.reg_weight = float(reg_weight)
        self.trainable_embeddings = bool(trainable_embeddings)
        self.modalities = list(feats)
        self.feature_dims = {m: int(x.size(1)) for m, x in feats.items()}
        for m, x in feats.items():
            self.register_buffer(f"x_{m}", x, persistent=False)

        q = torch.empty(self.num_users + self.num_items, self.embedding_dim)
        if self.trainable_embeddings:
            self.id_emb = nn.Parameter(q)
        else:
            self.register_buffer("id_emb", q)
        self.towers = nn.ModuleDict(
            {
                m: ModalityGCN(
                    self.num_users,
                    self.feature_dims[m],
                    self.embedding_dim,
                    latent.get(m),
                    self.num_layers,
                    aggregation,
                    self.concat,
                    self.has_id,
                    self.trainable_embeddings,
                )
                for m in self.modalities
            }
        )
        self.register_buffer(
            "adj",
            bipartite_adjacency(train_edge_index, self.num_users, self.num_items),
            persistent=False,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.id_emb)
        for tower in self.towers.values():
            tower.reset_parameters()

    def feature(self, modality: str) -> Tensor:
        """The raw ``(N, F_m)`` features of ``modality``."""
        return getattr(self, f"x_{modality}")

    # ---- forward ------------------------------------------------------------------------------
    def modal_outputs(self) -> dict[str, Tensor]:
        r"""``{m: X^m (U + N, d)}``, every tower's output (users first)."""
        return {m: t(self.feature(m), self.id_emb, self.adj) for m, t in self.towers.items()}

    def _fuse(self, outputs: Mapping[str, Tensor]) -> Tensor:
        return torch.stack(list(outputs.values())).mean(0)

    def forward(self) -> tuple[Tensor, Tensor]:
        """User ``(U, d)`` and item ``(N, d)`` embeddings (the mean of the towers)."""
        x = self._fuse(self.modal_outputs())
        return x[: self.num_users], x[self.num_users :]

    def modal_item_representations(self, items: Tensor | None = None) -> dict[str, Tensor]:
        r"""Per-modality item representations: the item rows of every tower's output
        :math:`\mathbf{X}^m`, whose mean over the modalities is the item embedding that
        scores.

        The towers run over the whole graph (users and items), with autograd attached.

        Args:
            items: Item ids to return (default: all ``N`` items).

        Returns:
            ``{modality: (len(items) or N, d)}``.
        """
        out = {m: x[self.num_users :] for m, x in self.modal_outputs().items()}
        return out if items is None else {m: r[items] for m, r in out.items()}

    def forward_train(self, batch: Tensor, all_modal_items: bool = False) -> TrainOutput:
        """Everything the loss needs for a ``(3, B)`` batch.

        The towers run over the whole graph at every step, so ``modal`` always holds all
        ``N`` items (``modal_items`` is ``None``) whatever ``all_modal_items`` says. ``rows``:
        ``user``, ``pos``, ``neg`` (``(B, d)`` rows of the fused embeddings) and ``ids``
        (the batch, for the regulariser).
        """
        users, pos, neg = batch
        outputs = self.modal_outputs()
        x = self._fuse(outputs)
        items = x[self.num_users :]
        modal = {m: o[self.num_users :] for m, o in outputs.items()}
        return TrainOutput(
            modal,
            None,
            {"user": x[users], "pos": items[pos], "neg": items[neg], "ids": (users, pos, neg)},
        )

    def loss_terms(self, out: TrainOutput) -> dict[str, Tensor]:
        u, p, n = out.rows["user"], out.rows["pos"], out.rows["neg"]
        terms = {"bpr": bpr_loss((u * p).sum(-1), (u * n).sum(-1), variant="logsigmoid")}
        if self.reg_weight:
            users, pos, neg = out.rows["ids"]
            q_u = self.id_emb[users].pow(2).sum()
            q_i = self.id_emb[self.num_users + pos].pow(2).sum()
            q_j = self.id_emb[self.num_users + neg].pow(2).sum()
            reg = (2 * q_u + q_i + q_j) / (2 * users.numel() * self.embedding_dim)
            if "image" in self.towers:
                reg = reg + self.towers["image"].preference.pow(2).mean()
            terms["reg"] = self.reg_weight * reg
        return terms

    def embeddings(self) -> tuple[Tensor, Tensor]:
        return self.forward()

    def extra_repr(self) -> str:
        dims = ", ".join(f"{m}={d}" for m, d in self.feature_dims.items())
        return (
            f"num_users={self.num_users}, num_items={self.num_items}, features=({dims}), "
            f"embedding_dim={self.embedding_dim}, num_layers={self.num_layers}, "
            f"latent_dims={self.latent_dims}, aggregation={self.aggregation!r}, "
            f"concat={self.concat}, has_id={self.has_id}, reg_weight={self.reg_weight}, "
            f"trainable_embeddings={self.trainable_embeddings}"
        )
