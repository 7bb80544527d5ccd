"""MMSSL (Wei et al., WWW 2023) on PyG / torch (the authors' code, HKUDS/MMSSL, uses DGL)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sea_pyg.models._multimodal import check_features
from sea_pyg.models.base import MultimodalRecommender, TrainOutput
from sea_pyg.models.registry import register_model
from sea_pyg.nn.adversarial import WassersteinCritic
from sea_pyg.nn.graph import unique_edges
from sea_pyg.nn.losses import bpr_loss, info_nce_loss
from sea_pyg.nn.precision import sparse_mm

__all__ = ["MMSSL", "left_normalized"]

#: Users per chunk when the modality-aware graphs are rebuilt (a ``(chunk, N)`` block at a time).
GRAPH_CHUNK = 1024
#: The authors' Adam betas of the discriminator's optimizer.
CRITIC_BETAS = (0.5, 0.9)


def left_normalized(
    rows: Tensor, cols: Tensor, num_rows: int, num_cols: int, dtype: torch.dtype | None = None
) -> Tensor:
    r"""Sparse CSR ``(num_rows, num_cols)`` matrix :math:`(D + 10^{-8})^{-1/2} A` of the binary
    matrix :math:`A` with ones at ``(rows, cols)`` (no duplicates), :math:`D` its row sums
    (MMSSL's ``csr_norm(mean_flag=True)``), in ``dtype`` (default: the default dtype)."""
    deg = torch.bincount(rows, minlength=num_rows).to(dtype or torch.get_default_dtype())
    value = (deg + 1e-8).pow(-0.5)[rows]
    adj = torch.sparse_coo_tensor(
        torch.stack([rows, cols]), value, (num_rows, num_cols), check_invariants=False
    ).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return adj.to_sparse_csr()


# MMRec has no MMSSL. Defaults: the authors' released configuration (HKUDS/MMSSL,
# MMSSL/utility/parser.py; the README runs `python main.py --dataset {DATASET}` with these for
# every Amazon set): embed_size 64, weight_size [64, 64] (2 user-item layers), layers 1,
# drop_rate 0.2, model_cat_rate 0.55, id_cat_rate 0.36, head_num 4, regs[0] 1e-5,
# feat_reg_decay 1e-5, cl_rate 0.03, tau 0.5, G_rate 1e-4, D_lr 3e-4 (Adam betas (0.5, 0.9)),
# LAMBDA 0.3 x gp_rate 1, G_drop1 0.31, G_drop2 0.5, real_data_tau 0.005, ui_pre_scale 100,
# log_log_scale 1e-5, m_topk_rate 1e-4; lr 5.5e-4 (train_defaults; their 0.96 ** (epoch / 50)
# LambdaLR is built but never stepped, so the rate stays constant).
# The authors publish no grid: search_space spans their cl_rate and G_rate by 1/3x and 3x-10x.
@register_model(
    "mmssl",
    "MMSSL: modality-aware user-item graphs with a Wasserstein critic + cross-modal "
    "contrastive learning (authors' code)",
    train_defaults={"lr": 5.5e-4},
    search_space={"cl_weight": (0.01, 0.03, 0.1), "adv_weight": (1e-5, 1e-4, 1e-3)},
)
class MMSSL(MultimodalRecommender):
    r"""MMSSL: adversarial modality-aware structure learning and cross-modal contrast.

    Notation: :math:`R \in \{0,1\}^{U \times N}` the training interactions,
    :math:`\bar{A}_{ui} = (D_u + 10^{-8})^{-1/2} R` and :math:`\bar{A}_{iu} = (D_i +
    10^{-8})^{-1/2} R^\top` (left-normalised, :func:`left_normalized`), :math:`E_U, E_I` the ID
    embeddings (``xavier_uniform_``), :math:`\hat{\cdot}` row-wise L2 normalisation, :math:`M`
    modalities.

    **Modality view.** :math:`\mathbf{f}^m = \operatorname{Dropout}_p(W_m \mathbf{x}^m + b_m)`
    (frozen raw features, Linear ``F_m -> d``), one hop to the users and back:
    :math:`\mathbf{u}^m = \bar{A}_{ui} \mathbf{f}^m`, :math:`\mathbf{i}^m = \bar{A}_{iu}
    \mathbf{u}^m`.

    **Generator and modality-aware graphs.** The generated user-item relation of modality
    :math:`m` for user :math:`u` is the row :math:`\mathbf{g}^m_u = \widehat{(\mathbf{u}^m_u
    {\mathbf{i}^m}^\top) \odot (1 - R_u)}` over all :math:`N` items (observed items masked to
    0). The modality-aware graph :math:`\tilde{R}^m` connects every user to the :math:`k =
    \max(1, \lfloor N \rho \rfloor)` largest entries of its row; it is rebuilt from the current
    parameters (without dropout) before every epoch but the first (:meth:`pre_epoch`); until
    then :math:`\tilde{R}^m = R`. With :math:`\tilde{A}^m_{ui}, \tilde{A}^m_{iu}` its
    left-normalised matrices, the modality-aware ID views are :math:`\mathbf{z}^m_U =
    \tilde{A}^m_{ui} E_I` and :math:`\mathbf{z}^m_I = \tilde{A}^m_{iu} E_U`.

    **Fusion and user-item encoder.** :math:`\mathbf{h}_U = (\frac{1}{M}\sum_m
    \mathbf{z}^m_U) W`, :math:`\mathbf{h}_I = (\frac{1}{M}\sum_m \mathbf{z}^m_I) W` with
    :math:`W = \sum_{h=1}^{H} W_h` (the released multi-head attention reduces to this, see
    ``docs/models.md``); :math:`\mathbf{e}^0_U = E_U + \beta \hat{\mathbf{h}}_U`,
    :math:`\mathbf{e}^0_I = E_I + \beta \hat{\mathbf{h}}_I`; then :math:`L` layers
    :math:`\mathbf{e}^{l}_U = \bar{A}_{ui} \mathbf{e}^{l-1}_I`, :math:`\mathbf{e}^{l}_I =
    \bar{A}_{iu} \mathbf{e}^{l}_U`, with a softmax over the embedding dimension on both in the
    last layer; finally

    .. math::
        \mathbf{e}_U = \operatorname{mean}_{l=0}^{L} \mathbf{e}^l_U + \gamma \sum_m
        \hat{\mathbf{u}}^m, \qquad
        \mathbf{e}_I = \operatorname{mean}_{l=0}^{L} \mathbf{e}^l_I + \gamma \sum_m
        \hat{\mathbf{i}}^m, \qquad \hat{y}_{ui} = \mathbf{e}_u^\top \mathbf{e}_i.

    **Loss** of a batch (users :math:`\mathcal{B}` its distinct users):

    .. math::
        \mathcal{L} = \mathrm{BPR}
        + \lambda_{reg} \frac{\lVert \mathbf{e}_u \rVert^2 + \lVert \mathbf{e}_i \rVert^2
          + \lVert \mathbf{e}_j \rVert^2}{2B}
        + \lambda_{f} \frac{\sum_m \lVert \mathbf{u}^m \rVert_F^2 + \lVert \mathbf{i}^m
          \rVert_F^2}{2N}
        + \lambda_{cl} \sum_m \mathrm{InfoNCE}_\tau(\mathbf{z}^m_{U,\mathcal{B}},
          \mathbf{e}_{U,\mathcal{B}})
        - \lambda_{adv}\, \operatorname{mean} D(\{\mathbf{g}^m_u\}_{m, u \in \mathcal{B}})

    with :math:`\mathrm{BPR} = -\operatorname{mean}\ln\sigma(\hat{y}_{ui} - \hat{y}_{uj})`,
    InfoNCE the one-directional NT-Xent with in-view negatives
    (:func:`~sea_pyg.nn.info_nce_loss`, ``symmetric=False``), and :math:`D` the Wasserstein
    critic (:class:`~sea_pyg.nn.adversarial.WassersteinCritic`), fitted by its own Adam
    optimizer after every batch (WGAN-GP) on the detached fake rows :math:`\mathbf{g}^m_u`
    against the real rows

    .. math::
        \mathbf{r}_u = \widehat{\operatorname{softmax}\big((R_u + \epsilon\,
        \mathbf{g}_{\text{Gumbel}}) / \tau_r\big) + s\, \widehat{(\mathbf{e}_u
        \mathbf{e}_I^\top) \odot (1 - R_u)}}

    (Gumbel-perturbed, sharpened interactions plus the scaled similarity of the final
    embeddings), each repeated for the :math:`M` modalities. The critic's parameters are left
    out of the model's optimizer. Without ``adv_weight`` the critic is neither used nor fitted.

    Args:
        num_users: ``U``.
        train_edge_index: ``(2, E)`` training interactions (binarised).
        features: ``{modality: (N, F_m)}`` (any number of modalities, frozen).
        embedding_dim: :math:`d` (``embed_size`` 64).
        num_layers: User-item layers :math:`L` (``len(weight_size)`` 2).
        dropout: :math:`p` on :math:`\mathbf{f}^m` (``drop_rate`` 0.2).
        modal_weight: :math:`\gamma` (``model_cat_rate`` 0.55).
        id_modal_weight: :math:`\beta` (``id_cat_rate`` 0.36).
        num_heads: :math:`H` (``head_num`` 4; with the released attention it only sets the
            initialisation of :math:`W`, ``xavier_uniform_`` of the ``(H d, d)`` stack).
        reg_weight: :math:`\lambda_{reg}` (``regs[0]`` 1e-5).
        feat_reg_weight: :math:`\lambda_f` (``feat_reg_decay`` 1e-5).
        cl_weight: :math:`\lambda_{cl}` (``cl_rate`` 0.03).
        temperature: :math:`\tau` (``tau`` 0.5).
        adv_weight: :math:`\lambda_{adv}` (``G_rate`` 1e-4).
        critic_lr: Critic learning rate (``D_lr`` 3e-4; Adam betas (0.5, 0.9)).
        gp_weight: Gradient-penalty weight (``LAMBDA`` 0.3 times ``gp_rate`` 1).
        critic_dropout1: Dropout after the critic's first hidden layer (``G_drop1`` 0.31).
        critic_dropout2: Dropout after its second (``G_drop2`` 0.5).
        critic_negative_slope: Its LeakyReLU slope (1.0: the released ``nn.LeakyReLU(True)``).
        real_tau: :math:`\tau_r` (``real_data_tau`` 0.005).
        real_scale: :math:`s` (``ui_pre_scale`` 100).
        gumbel_scale: :math:`\epsilon` (``log_log_scale`` 1e-5).
        graph_topk_rate: :math:`\rho` (``m_topk_rate`` 1e-4).

    Shapes:
        - :meth:`embeddings`: users ``(U, d)``, items ``(N, d)``
        - :meth:`modal_item_representations`: ``{m: (N, d)}``, the propagated
          :math:`\mathbf{i}^m`
    """

    def __init__(
        self,
        num_users: int,
        train_edge_index: Tensor,
        features: Mapping[str, Tensor],
        embedding_dim: int = 64,
        num_layers: int = 2,
        dropout: float = 0.2,
        modal_weight: float = 0.55,
        id_modal_weight: float = 0.36,
        num_heads: int = 4,
        reg_weight: float = 1e-5,
        feat_reg_weight: float = 1e-5,
        cl_weight: float = 0.03,
        temperature: float = 0.5,
        adv_weight: float = 1e-4,
        critic_lr: float = 3e-4,
        gp_weight: float = 0.3,
        critic_dropout1: float = 0.31,
        critic_dropout2: float = 0.5,
        critic_negative_slope: float = 1.0,
        real_tau: float = 0.005,
        real_scale: float = 100.0,
        gumbel_scale: float = 1e-5,
        graph_topk_rate: float = 1e-4,
    ) -> None:
        super().__init__()
        feats = check_features(features)
        num_items = next(iter(feats.values())).size(0)
        if embedding_dim < 1 or num_heads < 1 or num_layers < 0:
            raise ValueError(
                f"need embedding_dim >= 1, num_heads >= 1 and num_layers >= 0, got "
                f"{embedding_dim}, {num_heads}, {num_layers}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must lie in [0, 1), got {dropout}")
        if temperature <= 0 or real_tau <= 0:
            raise ValueError(
                f"`temperature` and `real_tau` must be > 0, got {temperature}, {real_tau}"
            )
        weights = dict(
            reg_weight=reg_weight,
            feat_reg_weight=feat_reg_weight,
            cl_weight=cl_weight,
            adv_weight=adv_weight,
            gp_weight=gp_weight,
            real_scale=real_scale,
            gumbel_scale=gumbel_scale,
        )
        negative = [k for k, v in weights.items() if v < 0]
        if negative:
            raise ValueError(
                f"{negative} must be >= 0 (0 switches a term off), got "
                f"{[weights[k] for k in negative]}"
            )
        if not 0.0 < graph_topk_rate <= 1.0:
            raise ValueError(
                f"`graph_topk_rate` must lie in (0, 1] (neighbours per user = max(1, "
                f"floor(num_items * rate))), got {graph_topk_rate}"
            )
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.modalities = list(feats)
        self.embedding_dim, self.num_layers, self.num_heads = embedding_dim, num_layers, num_heads
        self.modal_weight, self.id_modal_weight = float(modal_weight), float(id_modal_weight)
        self.reg_weight, self.feat_reg_weight = float(reg_weight), float(feat_reg_weight)
        self.cl_weight, self.temperature = float(cl_weight), float(temperature)
        self.adv_weight, self.real_tau = float(adv_weight), float(real_tau)
        self.real_scale, self.gumbel_scale = float(real_scale), float(gumbel_scale)
        self.graph_topk = max(1, int(self.num_items * graph_topk_rate))

        self.user_emb = nn.Embedding(self.num_users, embedding_dim)
        self.item_emb = nn.Embedding(self.num_items, embedding_dim)
        for m, x in feats.items():
            self.register_buffer(f"feat_{m}", x.clone(), persistent=False)
        self.feat_trs = nn.ModuleDict(
            {m: nn.Linear(x.size(1), embedding_dim) for m, x in feats.items()}
        )
        self.fusion = nn.Parameter(torch.empty(num_heads * embedding_dim, embedding_dim))
        self.feat_dropout = nn.Dropout(dropout)
        n = self.num_items
        self.critic = WassersteinCritic(
            n,
            hidden=(max(1, n // 4), max(1, n // 8)),
            dropout=(critic_dropout1, critic_dropout2),
            negative_slope=critic_negative_slope,
            scale=100.0,
            gp_weight=gp_weight,
            lr=critic_lr,
            betas=CRITIC_BETAS,
            steps=1,
            name="critic_loss",
        )

        edges = unique_edges(train_edge_index, self.num_users, self.num_items)
        order = torch.argsort(edges[0] * self.num_items + edges[1])
        users, items = edges[0][order], edges[1][order]
        self.register_buffer("edge_users", users, persistent=False)
        self.register_buffer("edge_items", items, persistent=False)
        rowptr = torch.zeros(self.num_users + 1, dtype=torch.long)
        rowptr[1:] = torch.cumsum(torch.bincount(users, minlength=self.num_users), 0)
        self.register_buffer("rowptr", rowptr, persistent=False)
        self.register_buffer(
            "ui_adj", left_normalized(users, items, self.num_users, n), persistent=False
        )
        self.register_buffer(
            "iu_adj", left_normalized(items, users, n, self.num_users), persistent=False
        )
        #: ``(M, U, k)`` item ids of the modality-aware graphs and whether they are built yet
        #: (saved: the scores depend on them).
        self.register_buffer(
            "modal_topk", torch.zeros(len(feats), self.num_users, self.graph_topk, dtype=torch.long)
        )
        self.register_buffer("graph_built", torch.tensor(False))
        #: Host-side copies: whether the graphs are built (``graph_built`` without reading a
        #: device tensor in every step) and the CSR matrices of the current ``modal_topk``
        #: per (device, dtype), dropped at every rebuild and load.
        self._built = False
        self._graph_cache: dict[tuple, list[tuple[Tensor, Tensor]]] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        for lin in self.feat_trs.values():
            lin.reset_parameters()
            nn.init.xavier_uniform_(lin.weight)
        nn.init.xavier_uniform_(self.fusion)
        self.critic.reset_parameters()

    def low_precision_buffers(self) -> list[str]:
        """The item features, which :meth:`loss` reads only as inputs of matrix products: a
        bfloat16 copy stands in for them under ``precision="bf16"``
        (:mod:`sea_pyg.train.precision`)."""
        return [f"feat_{m}" for m in self.modalities]

    def features(self, m: str) -> Tensor:
        """The raw ``(N, F_m)`` features of modality ``m``."""
        return getattr(self, f"feat_{m}")

    # ---- graphs -------------------------------------------------------------------------------
    def interaction_rows(self, users: Tensor) -> Tensor:
        """Dense ``(B, N)`` rows :math:`R_u` of the training interactions of ``users``."""
        start, stop = self.rowptr[users], self.rowptr[users + 1]
        counts = stop - start
        row = torch.repeat_interleave(torch.arange(users.numel(), device=users.device), counts)
        offset = (
            torch.arange(row.numel(), device=users.device) - (torch.cumsum(counts, 0) - counts)[row]
        )
        out = torch.zeros(
            users.numel(), self.num_items, device=users.device, dtype=self.item_emb.weight.dtype
        )
        out[row, self.edge_items[start[row] + offset]] = 1.0
        return out

    def masked_similarity(self, users: Tensor, user_rep: Tensor, item_rep: Tensor) -> Tensor:
        r""":math:`\widehat{(\mathbf{a}_u \mathbf{b}^\top) \odot (1 - R_u)}` ``(B, N)`` for
        ``users`` ``(B,)``, user rows ``user_rep`` ``(B, d)`` and items ``item_rep`` ``(N, d)``."""
        sim = (user_rep @ item_rep.t()) * (1.0 - self.interaction_rows(users))
        return F.normalize(sim, dim=1)

    def modal_graphs(self) -> list[tuple[Tensor, Tensor]]:
        r"""Per modality :math:`(\tilde{A}^m_{ui}, \tilde{A}^m_{iu})` (the observed graph until
        the first rebuild). Built once per rebuild and kept: no graph construction (and no
        host synchronisation) in the training step."""
        if not self._built:
            return [(self.ui_adj, self.iu_adj)] * len(self.modalities)
        dtype = self.item_emb.weight.dtype
        key = (self.modal_topk.device, dtype)
        if key not in self._graph_cache:
            self._graph_cache = {key: self._build_modal_graphs(dtype)}
        return list(self._graph_cache[key])

    def _build_modal_graphs(self, dtype: torch.dtype) -> list[tuple[Tensor, Tensor]]:
        users = torch.arange(self.num_users, device=self.modal_topk.device)
        users = users.repeat_interleave(self.graph_topk)
        out = []
        for top in self.modal_topk:
            items = top.reshape(-1)
            out.append(
                (
                    left_normalized(users, items, self.num_users, self.num_items, dtype),
                    left_normalized(items, users, self.num_items, self.num_users, dtype),
                )
            )
        return out

    @torch.no_grad()
    def rebuild_modal_graphs(self) -> Tensor:
        """Rebuilds the modality-aware graphs from the current parameters (no dropout), a
        chunk of users at a time; returns ``modal_topk``."""
        views = self.modality_view(dropout=False)
        for k, m in enumerate(self.modalities):
            user_m, item_m = views[m]
            for start in range(0, self.num_users, GRAPH_CHUNK):
                users = torch.arange(
                    start, min(start + GRAPH_CHUNK, self.num_users), device=item_m.device
                )
                sim = self.masked_similarity(users, user_m[users], item_m)
                self.modal_topk[k, users] = sim.topk(self.graph_topk, dim=1).indices
        self.graph_built.fill_(True)
        self._built, self._graph_cache = True, {}
        return self.modal_topk

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._built, self._graph_cache = bool(self.graph_built), {}  # once, at load

    def pre_epoch(self, epoch: int) -> None:
        """Rebuilds the modality-aware graphs before every epoch but the first."""
        if epoch > 0:
            self.rebuild_modal_graphs()

    # ---- forward ------------------------------------------------------------------------------
    def modality_view(self, dropout: bool = True) -> dict[str, tuple[Tensor, Tensor]]:
        r"""``{m: (u^m (U, d), i^m (N, d))}``; ``dropout`` applies in training mode only."""
        out = {}
        for m, lin in self.feat_trs.items():
            f = lin(self.features(m))
            if dropout:
                f = self.feat_dropout(f)
            user = sparse_mm(self.ui_adj, f)
            out[m] = (user, sparse_mm(self.iu_adj, user))
        return out

    def encode(self) -> dict[str, object]:
        """Every representation of one forward pass: ``user``, ``item`` (final), ``modal``
        (``{m: (u^m, i^m)}``) and ``id_user`` (``{m: z^m_U}``)."""
        modal = self.modality_view()
        e_u, e_i = self.user_emb.weight, self.item_emb.weight
        id_user, id_item = {}, {}
        for m, (ui, iu) in zip(self.modalities, self.modal_graphs(), strict=True):
            id_user[m], id_item[m] = sparse_mm(ui, e_i), sparse_mm(iu, e_u)
        d = self.embedding_dim
        w = self.fusion.view(self.num_heads, d, d).sum(0)
        h_u = torch.stack(list(id_user.values())).mean(0) @ w
        h_i = torch.stack(list(id_item.values())).mean(0) @ w
        u = e_u + self.id_modal_weight * F.normalize(h_u, dim=1)
        i = e_i + self.id_modal_weight * F.normalize(h_i, dim=1)
        users, items = [u], [i]
        for layer in range(self.num_layers):
            last = layer == self.num_layers - 1
            u = sparse_mm(self.ui_adj, i)
            u = torch.softmax(u, dim=-1) if last else u
            i = sparse_mm(self.iu_adj, u)
            i = torch.softmax(i, dim=-1) if last else i
            users.append(u)
            items.append(i)
        user = torch.stack(users).mean(0)
        item = torch.stack(items).mean(0)
        for user_m, item_m in modal.values():
            user = user + self.modal_weight * F.normalize(user_m, dim=1)
            item = item + self.modal_weight * F.normalize(item_m, dim=1)
        return {"user": user, "item": item, "modal": modal, "id_user": id_user}

    def embeddings(self) -> tuple[Tensor, Tensor]:
        enc = self.encode()
        return enc["user"], enc["item"]

    def modal_item_representations(self, items: Tensor | None = None) -> dict[str, Tensor]:
        r"""The propagated modality item representations :math:`\mathbf{i}^m = \bar{A}_{iu}
        \bar{A}_{ui} \mathbf{f}^m` (they enter the item scores through
        :math:`\gamma \hat{\mathbf{i}}^m`), computed afresh with autograd attached."""
        views = self.modality_view()
        return {m: i if items is None else i[items] for m, (_, i) in views.items()}

    def real_rows(self, users: Tensor, user: Tensor, item: Tensor) -> Tensor:
        r"""The critic's real rows :math:`\mathbf{r}_u` ``(B, N)`` (detached; draws Gumbel
        noise from the global RNG)."""
        with torch.no_grad():
            rows = self.interaction_rows(users)
            noise = torch.rand_like(rows)
            gumbel = -torch.log(-torch.log(noise + 1e-8) + 1e-8)
            soft = torch.softmax((rows + self.gumbel_scale * gumbel) / self.real_tau, dim=1)
            sim = self.masked_similarity(users, user[users], item)
            return F.normalize(soft + self.real_scale * sim, dim=1)

    def forward_train(self, batch: Tensor, all_modal_items: bool = False) -> TrainOutput:
        """One training pass. ``rows``: ``user``/``pos``/``neg`` ``(B, d)``, ``batch_users``
        (distinct ids), ``id_user`` and ``final_user`` at them, ``modal`` (``{m: (u^m,
        i^m)}``) and ``fake`` (``(M * B_u, N)`` generated rows, or ``None`` when the
        adversarial term is off or there are fewer than 2 rows). ``modal`` of the output is
        ``{m: i^m}`` for all items (the pass computes them anyway)."""
        users, pos, neg = batch
        enc = self.encode()
        user, item = enc["user"], enc["item"]
        batch_users = torch.unique(users)
        rows = {
            "user": user[users],
            "pos": item[pos],
            "neg": item[neg],
            "batch_users": batch_users,
            "modal": enc["modal"],
            "id_user": {m: z[batch_users] for m, z in enc["id_user"].items()},
            "final_user": user[batch_users],
            "fake": None,
        }
        if self.adv_weight and batch_users.numel() * len(self.modalities) >= 2:
            fake = torch.cat(
                [
                    self.masked_similarity(batch_users, u[batch_users], i)
                    for u, i in enc["modal"].values()
                ]
            )
            rows["fake"] = fake
            if self.training:
                real = self.real_rows(batch_users, user.detach(), item.detach())
                self.critic.remember(real.repeat(len(self.modalities), 1), fake)
        modal = {m: i for m, (_, i) in enc["modal"].items()}
        return TrainOutput(modal=modal, modal_items=None, rows=rows)

    def loss_terms(self, out: TrainOutput) -> dict[str, Tensor]:
        r = out.rows
        u, p, n = r["user"], r["pos"], r["neg"]
        terms = {"bpr": bpr_loss((u * p).sum(-1), (u * n).sum(-1), variant="logsigmoid")}
        if self.reg_weight:
            sq = u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()
            terms["reg"] = self.reg_weight * 0.5 * sq / u.size(0)
        if self.feat_reg_weight:
            sq = sum(a.pow(2).sum() + b.pow(2).sum() for a, b in r["modal"].values())
            terms["feat_reg"] = self.feat_reg_weight * 0.5 * sq / self.num_items
        if self.cl_weight:
            cl = sum(
                info_nce_loss(z, r["final_user"], self.temperature, symmetric=False)
                for z in r["id_user"].values()
            )
            terms["cl"] = self.cl_weight * cl
        if r["fake"] is not None:
            terms["adv"] = self.adv_weight * self.critic.generator_loss(r["fake"])
        return terms

    def extra_repr(self) -> str:
        dims = ", ".join(f"{m}={self.features(m).size(1)}" for m in self.modalities)
        return (
            f"num_users={self.num_users}, num_items={self.num_items}, features=({dims}), "
            f"embedding_dim={self.embedding_dim}, graph_topk={self.graph_topk}"
        )
