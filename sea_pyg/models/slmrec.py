"""SLMRec (Tao et al., 2022) as in MMRec, for any number of item modalities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sea_pyg.models._multimodal import batch_item_rows, check_features
from sea_pyg.models.base import MultimodalRecommender, TrainOutput
from sea_pyg.models.registry import register_model
from sea_pyg.nn.conv import LightGCNPropagation, bipartite_norm_adj
from sea_pyg.nn.losses import solosim_loss

__all__ = ["SLMRec", "SSL_TASKS"]

#: The self-supervised tasks (MMRec's ``ssl_task``): fine-and-coarse cross-modal contrast,
#: feature dropout, feature masking, and both of the last two.
SSL_TASKS = ("FAC", "FD", "FM", "FD+FM")
_FUSIONS = ("concat", "mean")


# MMRec SLMRec.yaml: recdim 64, layer_num 3, ssl_task FAC, dropout_rate 0.3, mm_fusion_mode
# concat, temp 0.2, init xavier, adj_type pre, weight_decay 1e-4 (train_defaults); grid
# learning_rate {1e-4, 1e-3, 1e-2, 0.1}, ssl_alpha {0.01, 0.05, 0.1, 0.5, 1.0}, ssl_temp {0.1, 0.2,
# 0.5, 1.0}, reg {1e-4, 1e-3, 1e-2, 0.1}. It chooses no grid point and none is published for Baby:
# the defaults are the first grid values (lr 1e-4, ssl_alpha 0.01, ssl_temp 0.1). MMRec's code
# never reads `reg`, so it is not a hyper-parameter here and not in the search space (searching
# it would only repeat every run four times).
@register_model(
    "slmrec",
    "SLMRec: ID + per-modality LightGCN branches, in-batch InfoNCE + an SSL task (MMRec)",
    train_defaults={"lr": 1e-4, "weight_decay": 1e-4},
    search_space={
        "lr": (1e-4, 1e-3, 1e-2, 0.1),
        "ssl_alpha": (0.01, 0.05, 0.1, 0.5, 1.0),
        "ssl_temp": (0.1, 0.2, 0.5, 1.0),
    },
)
class SLMRec(MultimodalRecommender):
    r"""SLMRec: self-supervised learning for multimedia recommendation.

    **Branches.** One LightGCN branch per "modality" :math:`b \in \{\mathrm{id}, m_1, \dots,
    m_K\}`, all sharing the user ID embeddings :math:`E_U`. The item input of the ID branch is
    the item ID table :math:`E_I`; that of modality :math:`m` is a dense projection of the
    row-normalised, frozen features, :math:`D_m = \overline{X^m} W_m + \mathbf{b}_m`
    (``Linear F_m -> d``). On the symmetric-normalised user-item graph :math:`\hat{A}` (MMRec's
    ``adj_type: pre``, degrees :math:`+10^{-8}`, no self-loops):

    .. math::
        [\mathbf{U}^b; \mathbf{I}^b] = \frac{1}{L+1}\sum_{l=0}^{L} \hat{A}^l\,[E_U; D_b]

    (the :math:`K+1` branches are propagated together as one ``(U+N) x (K+1)d`` matrix, which
    is the same computation).

    **Fusion and score** (``fusion="concat"``; ``"mean"`` averages the branches instead, then
    ``Linear d -> d``):

    .. math::
        \mathbf{e}_u = F_U\big[\mathbf{U}^{id}_u \,\|\, \mathbf{U}^{m_1}_u \| \dots\big], \qquad
        \mathbf{e}_i = F_I\big[\mathbf{I}^{id}_i \,\|\, \mathbf{I}^{m_1}_i \| \dots\big], \qquad
        \hat{y}_{ui} = \mathbf{e}_u^\top \mathbf{e}_i

    with :math:`F_U, F_I` ``Linear (K+1)d -> d``.

    **Loss** for a batch of :math:`B` interactions :math:`(u_b, i_b)` (no sampled negatives),
    with :math:`\mathrm{CE}_\tau(\mathbf{P}, \mathbf{Q}) = -\frac{1}{B}\sum_b \log
    \frac{\exp(\mathbf{p}_b^\top \mathbf{q}_b / \tau)}{\sum_{c} \exp(\mathbf{p}_b^\top
    \mathbf{q}_c / \tau)}` (in-batch softmax, :func:`~sea_pyg.nn.solosim_loss`) and
    :math:`\hat{\cdot}` the row L2 normalisation:

    .. math::
        \mathcal{L} = \underbrace{\mathrm{CE}_{\tau}(\hat{\mathbf{e}}_{u}, \hat{\mathbf{e}}_{i})
        }_{\text{infonce}} + \alpha\, \mathcal{L}_{ssl}

    **SSL tasks** (``ssl_task``), temperature :math:`\tau_s`:

    * ``"FAC"`` (fine and coarse): a chain of spaces from the batch items' ID branch, one per
      modality in feature order. With :math:`\mathbf{h}_0 = \mathbf{I}^{id}_{i}`,
      :math:`\mathbf{h}_k = G_k(\mathbf{h}_{k-1})` and :math:`\mathbf{p}_k =
      P_k(\mathbf{I}^{m_k}_i)` (Linear heads, output :math:`d`, the last one :math:`d/2`
      when :math:`K \ge 2`), :math:`\mathcal{L}_{ssl} = \sum_k \mathrm{CE}_{\tau_s}(
      \mathbf{h}_k, \mathbf{p}_k)` on **un-normalised** vectors.
    * ``"FD"`` (feature dropout): two views of the whole model, each propagating :math:`[E_U;
      D_b]` with dropout (rate :math:`p`, scaled by :math:`1/(1-p)`) after every propagation;
      ``"FM"`` (feature masking): two distinct branches :math:`b_1 \neq b_2` are drawn
      uniformly and view :math:`v` zeroes the item input :math:`D_{b_v}` (users never);
      ``"FD+FM"``: both. As in MMRec, view 1 is the mean of its own layer 0 and the propagated
      layers of view 2's chain, and vice versa (for FD the chains are identically
      distributed). Each view is fused by :math:`F_U, F_I`, and
      :math:`\mathcal{L}_{ssl} = \mathrm{CE}_{\tau_s}(\hat{\mathbf{e}}^{(1)}_u,
      \hat{\mathbf{e}}^{(2)}_u) + \mathrm{CE}_{\tau_s}(\hat{\mathbf{e}}^{(1)}_i,
      \hat{\mathbf{e}}^{(2)}_i)`.

    The batch rows keep their repeats (a repeated user or item is its own in-batch negative),
    as in MMRec. Random draws (dropout masks, masked branches) use the global torch RNG. The
    SSL term is not computed when :math:`\alpha = 0`.

    Initialisation as in MMRec (``init: xavier``): ID tables and every Linear weight
    ``xavier_uniform_``, biases PyTorch's default.

    Args:
        num_users: Number of users ``U``.
        train_edge_index: ``(2, E)`` training interactions (user ids, item ids); duplicate
            pairs are collapsed (binarised graph).
        features: ``{modality: (N, F_m) tensor}``, row ``i`` = item ``i``; L2-normalised per
            row and kept frozen (non-persistent buffers), as in MMRec.
        embedding_dim: :math:`d` (MMRec ``recdim``: 64).
        num_layers: LightGCN layers :math:`L` (MMRec ``layer_num``: 3).
        ssl_task: ``"FAC"`` (fine and coarse, MMRec's choice), ``"FD"`` (feature dropout),
            ``"FM"`` (feature masking) or ``"FD+FM"`` (:data:`SSL_TASKS`; any case).
        ssl_alpha: :math:`\alpha` (MMRec grid: 0.01, 0.05, 0.1, 0.5, 1.0).
        ssl_temp: :math:`\tau_s` (MMRec grid: 0.1, 0.2, 0.5, 1.0).
        temperature: :math:`\tau` of the main InfoNCE (MMRec ``temp``: 0.2).
        dropout: :math:`p` of ``"FD"`` / ``"FD+FM"`` (MMRec ``dropout_rate``: 0.3).
        fusion: ``"concat"`` (MMRec ``mm_fusion_mode``) or ``"mean"``.

    Shapes:
        - batches: ``(2, B)`` ``[users; items]`` (:attr:`uses_negatives` is ``False``)
        - :meth:`embeddings`: users ``(U, d)``, items ``(N, d)``
        - :meth:`modal_item_representations`: ``{m: (N, d)}``, the propagated modality branches
          :math:`\mathbf{I}^m`
    """

    uses_negatives = False

    def __init__(
        self,
        num_users: int,
        train_edge_index: Tensor,
        features: Mapping[str, Tensor],
        embedding_dim: int = 64,
        num_layers: int = 3,
        ssl_task: str = "FAC",
        ssl_alpha: float = 0.01,
        ssl_temp: float = 0.1,
        temperature: float = 0.2,
        dropout: float = 0.3,
        fusion: str = "concat",
    ) -> None:
        super().__init__()
        feats = check_features(features)
        num_items = next(iter(feats.values())).size(0)
        task = str(ssl_task).upper()
        if task not in SSL_TASKS:
            raise ValueError(f"`ssl_task` must be one of {SSL_TASKS}, got {ssl_task!r}")
        if fusion not in _FUSIONS:
            raise ValueError(f"`fusion` must be one of {_FUSIONS}, got {fusion!r}")
        if embedding_dim < 1 or (task == "FAC" and len(feats) > 1 and embedding_dim < 2):
            raise ValueError(
                f"`embedding_dim` must be >= 1 (>= 2 for ssl_task='FAC' with several "
                f"modalities: its last head has embedding_dim // 2 outputs), got {embedding_dim}"
            )
        if num_layers < 0:
            raise ValueError(f"`num_layers` must be >= 0, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must lie in [0, 1), got {dropout}")
        for name, value in (("ssl_temp", ssl_temp), ("temperature", temperature)):
            if not value > 0:
                raise ValueError(f"`{name}` must be > 0, got {value}")
        if ssl_alpha < 0:
            raise ValueError(f"`ssl_alpha` must be >= 0, got {ssl_alpha}")
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.embedding_dim, self.num_layers = embedding_dim, num_layers
        self.ssl_task, self.ssl_alpha, self.ssl_temp = task, float(ssl_alpha), float(ssl_temp)
        self.temperature, self.dropout, self.fusion = float(temperature), float(dropout), fusion
        self.modalities = list(feats)
        self.num_branches = len(feats) + 1  # the ID branch first, then the modalities

        for m, x in feats.items():
            self.register_buffer(f"x_{m}", F.normalize(x, dim=1), persistent=False)
        d = embedding_dim
        self.user_emb = nn.Embedding(num_users, d)
        self.item_emb = nn.Embedding(num_items, d)
        self.dense = nn.ModuleDict({m: nn.Linear(x.size(1), d) for m, x in feats.items()})
        fused_in = d * self.num_branches if fusion == "concat" else d
        self.user_fuse = nn.Linear(fused_in, d)
        self.item_fuse = nn.Linear(fused_in, d)
        if task == "FAC":
            sizes = [d] * len(feats)
            if len(feats) > 1:
                sizes[-1] = d // 2
            ins = [d, *sizes[:-1]]
            self.fac_chain = nn.ModuleList(nn.Linear(a, b) for a, b in zip(ins, sizes, strict=True))
            self.fac_modal = nn.ModuleDict(
                {m: nn.Linear(d, s) for m, s in zip(self.modalities, sizes, strict=True)}
            )
        self.propagation = LightGCNPropagation(num_layers, aggregation="mean")
        self.register_buffer(
            "adj",
            bipartite_norm_adj(train_edge_index, self.num_users, self.num_items, eps=1e-8),
            persistent=False,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        linears = [*self.dense.values(), self.user_fuse, self.item_fuse]
        if self.ssl_task == "FAC":
            linears += [*self.fac_chain, *self.fac_modal.values()]
        for lin in linears:
            lin.reset_parameters()
            nn.init.xavier_uniform_(lin.weight)

    # ---- branches -----------------------------------------------------------------------------
    def low_precision_buffers(self) -> list[str]:
        """The item features, which :meth:`loss` reads only as inputs of matrix products: a
        bfloat16 copy stands in for them under ``precision="bf16"``
        (:mod:`sea_pyg.train.precision`)."""
        return [f"x_{m}" for m in self.modalities]

    def feature(self, modality: str) -> Tensor:
        """The frozen, row-normalised ``(N, F_m)`` features of ``modality``."""
        return getattr(self, f"x_{modality}")

    def branch_inputs(self) -> list[Tensor]:
        """Item inputs of the branches, ``[E_I, D_{m_1}, ...]``, each ``(N, d)``."""
        return [self.item_emb.weight] + [self.dense[m](self.feature(m)) for m in self.modalities]

    def ego(self, inputs: Sequence[Tensor], masked: int | None = None) -> Tensor:
        """Layer 0 of all branches, ``(U + N, (K+1)d)``: users ``[E_U | E_U | ...]``, items
        ``[inputs[0] | inputs[1] | ...]``, with branch ``masked``'s item input zeroed."""
        items = [torch.zeros_like(x) if b == masked else x for b, x in enumerate(inputs)]
        users = self.user_emb.weight.repeat(1, len(inputs))
        return torch.cat([users, torch.cat(items, dim=1)])

    def fuse(self, branches: Tensor) -> tuple[Tensor, Tensor]:
        """Fused user ``(U, d)`` and item ``(N, d)`` embeddings of propagated branches
        ``(U + N, (K+1)d)``."""
        if self.fusion == "mean":
            n, d = branches.size(0), self.embedding_dim
            branches = branches.view(n, self.num_branches, d).mean(1)
        return self.user_fuse(branches[: self.num_users]), self.item_fuse(
            branches[self.num_users :]
        )

    def _modal(self, item_branches: Tensor) -> dict[str, Tensor]:
        d = self.embedding_dim
        return {m: item_branches[:, (k + 1) * d : (k + 2) * d] for k, m in
                enumerate(self.modalities)}  # fmt: skip

    def forward(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(users (U, d), items (N, d), branches (U + N, (K+1)d))`` on the training graph."""
        branches = self.propagation(self.ego(self.branch_inputs()), self.adj)
        users, items = self.fuse(branches)
        return users, items, branches

    def embeddings(self) -> tuple[Tensor, Tensor]:
        users, items, _ = self.forward()
        return users, items

    def modal_item_representations(self, items: Tensor | None = None) -> dict[str, Tensor]:
        r"""Per-modality propagated item branches :math:`\mathbf{I}^m` (``{m: (R, d)}``).

        These are what the fusion layer :math:`F_I` combines with the ID branch (so they shape
        the scores). Computed afresh (one propagation of all branches) with autograd attached.

        Args:
            items: Item ids to return (default: all ``N`` items).
        """
        _, _, branches = self.forward()
        rows = branches[self.num_users :]
        return self._modal(rows if items is None else rows[items])

    # ---- self-supervised views ----------------------------------------------------------------
    def draw_masked_branches(self) -> tuple[int, int]:
        """Two distinct branches (0 = ID, ``k`` = ``modalities[k-1]``), uniformly (global RNG)."""
        n = self.num_branches
        first = int(torch.randint(n, ()))
        second = (first + 1 + int(torch.randint(n - 1, ()))) % n
        return first, second

    def views(
        self, inputs: Sequence[Tensor], masked: tuple[int | None, int | None], dropout: float
    ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """The two fused views ``((users_1, items_1), (users_2, items_2))`` of the FD / FM tasks.

        Chain :math:`v` propagates ``ego(inputs, masked[v])`` with dropout after every
        propagation (drawn per layer, chain 1 then chain 2); view 1 is the mean of its own
        layer 0 and chain 2's propagated layers, view 2 the converse (MMRec's order).
        """
        ego = [self.ego(inputs, masked[0]), self.ego(inputs, masked[1])]
        x, acc = list(ego), [torch.zeros_like(ego[0]), torch.zeros_like(ego[1])]
        for _ in range(self.num_layers):
            for v in (0, 1):
                x[v] = self.propagation.conv(x[v], self.adj)
                if dropout > 0:
                    x[v] = F.dropout(x[v], p=dropout, training=True)
                acc[v] = acc[v] + x[v]
        scale = 1.0 / (self.num_layers + 1)
        view1 = self.fuse((ego[0] + acc[1]) * scale)
        view2 = self.fuse((ego[1] + acc[0]) * scale)
        return view1, view2

    # ---- training -----------------------------------------------------------------------------
    def forward_train(self, batch: Tensor, all_modal_items: bool = False) -> TrainOutput:
        """Everything the loss needs for a ``(2, B)`` batch ``[users; items]``.

        Returns a :class:`~sea_pyg.models.TrainOutput` with ``modal`` (``{m: (R, d)}``
        propagated modality branches at item ids ``modal_items``; ``None`` = all items) and
        ``rows``: ``user`` / ``item`` (``(B, d)`` fused rows), ``item_branches`` (``(B,
        (K+1)d)``, the batch items' propagated branches, for FAC), and for FD / FM
        ``view_users`` / ``view_items`` (pairs of ``(B, d)`` fused rows of the two views) and
        ``masked`` (the masked branches, ``(None, None)`` for FD).
        """
        if batch.dim() != 2 or batch.size(0) < 2:
            raise ValueError(
                f"SLMRec expects (2, B) batches [users; items], got {tuple(batch.shape)}"
            )
        users, items = batch[0], batch[1]
        inputs = self.branch_inputs()
        branches = self.propagation(self.ego(inputs), self.adj)
        user_all, item_all = self.fuse(branches)
        item_branches = branches[self.num_users :]
        rows, _ = batch_item_rows(items, all_modal_items)
        modal = self._modal(item_branches if rows is None else item_branches[rows])
        out = TrainOutput(modal, rows, {
            "user": user_all[users],
            "item": item_all[items],
            "item_branches": item_branches[items],
        })  # fmt: skip
        if self.ssl_alpha and self.ssl_task != "FAC":
            masked = (None, None)
            if "FM" in self.ssl_task:
                masked = self.draw_masked_branches()
            dropout = self.dropout if "FD" in self.ssl_task else 0.0
            (u1, i1), (u2, i2) = self.views(inputs, masked, dropout)
            out.rows["masked"] = masked
            out.rows["view_users"] = (u1[users], u2[users])
            out.rows["view_items"] = (i1[items], i2[items])
        return out

    def ssl_loss(self, out: TrainOutput) -> Tensor:
        r"""The unweighted :math:`\mathcal{L}_{ssl}` of the configured task."""
        rows = out.rows
        if self.ssl_task == "FAC":
            d = self.embedding_dim
            h, loss = rows["item_branches"][:, :d], 0.0
            for k, m in enumerate(self.modalities):
                h = self.fac_chain[k](h)
                p = self.fac_modal[m](rows["item_branches"][:, (k + 1) * d : (k + 2) * d])
                loss = loss + solosim_loss(h, p, self.ssl_temp, normalize=False)
            return loss
        (u1, u2), (i1, i2) = rows["view_users"], rows["view_items"]
        return solosim_loss(u1, u2, self.ssl_temp) + solosim_loss(i1, i2, self.ssl_temp)

    def loss_terms(self, out: TrainOutput) -> dict[str, Tensor]:
        terms = {"infonce": solosim_loss(out.rows["user"], out.rows["item"], self.temperature)}
        if self.ssl_alpha:
            terms["ssl"] = self.ssl_alpha * self.ssl_loss(out)
        return terms

    def extra_repr(self) -> str:
        dims = ", ".join(f"{m}={self.feature(m).size(1)}" for m in self.modalities)
        return (
            f"num_users={self.num_users}, num_items={self.num_items}, features=({dims}), "
            f"embedding_dim={self.embedding_dim}, num_layers={self.num_layers}, "
            f"ssl_task={self.ssl_task!r}, ssl_alpha={self.ssl_alpha}, ssl_temp={self.ssl_temp}, "
            f"temperature={self.temperature}, fusion={self.fusion!r}"
            + (f", dropout={self.dropout}" if "FD" in self.ssl_task else "")
        )
