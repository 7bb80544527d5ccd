"""PAMD (Han et al., 2022), "Modality Matches Modality", after the authors' code, for any number
(>= 2) of item modalities; its pre-training stage is part of the training run."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sea_pyg.models._multimodal import batch_item_rows, check_features
from sea_pyg.models.base import MultimodalRecommender, TrainOutput
from sea_pyg.models.registry import register_model
from sea_pyg.nn.data_parallel import sharded_sum

__all__ = ["PAMD"]

#: Elements of one ``(users, parts, items)`` score block in :meth:`PAMD.score` (128 MiB float32).
_SCORE_BLOCK = 2**25


# Authors' code (hantengyue/PAMD, main.py / reproduce_clothing.py; Clothing is their one Amazon
# dataset): pre_emb_dim = emb_dim 100, temperature 0.5, batch_size 100 (pre-training and
# training), pre-training lr 1e-3 (Adam, weight decay 1e-5), pre-training checkpoint of epoch
# 220 loaded for fine-tuning, fine-tuning lr 1e-3 (1e-4 for the pre-trained encoder, not
# reproduced: one learning rate here), weight decay 1e-5, up to 1000 epochs. Their other
# datasets use dimension 50 (Yelp, pre-training epoch 260) and 30 (food, epoch 140): the
# search space below.
@register_model(
    "pamd",
    "PAMD: modality-common / modality-specific item parts, contrastively pre-trained, then "
    "fused by user attention (WWW'22, authors' code)",
    train_defaults={"batch_size": 100, "lr": 1e-3, "weight_decay": 1e-5},
    search_space={"embedding_dim": (30, 50, 100), "pretrain_epochs": (140, 220, 260)},
)
class PAMD(MultimodalRecommender):
    r"""PAMD: pre-trained modality-disentangled item representations (Han et al., WWW 2022).

    **Disentangled encoder.** For each modality :math:`m` (raw features
    :math:`\mathbf{x}^m_i`, frozen as in the authors' code) a Linear encoder gives
    :math:`\mathbf{h}^m_i = \mathbf{W}_m \mathbf{x}^m_i + \mathbf{b}_m \in \mathbb{R}^d`, split
    into a **modality-common** part by a free :math:`d \times d` matrix (``kaiming_uniform_``)
    and the **modality-specific** remainder:

    .. math::
        \mathbf{c}^m_i = \mathbf{h}^m_i \mathbf{P}_m, \qquad
        \mathbf{s}^m_i = \mathbf{h}^m_i - \mathbf{c}^m_i

    **Pre-training** (the first ``pretrain_epochs`` epochs, on mini-batches of items
    :math:`\mathcal{B}`, see :class:`~sea_pyg.train.Trainer`). For every pair of modalities
    :math:`\{m, n\}`, with a cross-modal decoder :math:`D_{m\to n}` (a Linear ``d -> F_n``)
    per ordered pair and :math:`\cos` the cosine similarity:

    .. math::
        \mathcal{L}_{sim}^{mn} = \frac{1}{|\mathcal{B}|\,d}\sum_{i}
            \lVert \mathbf{c}^m_i - \mathbf{c}^n_i \rVert^2, \qquad
        \mathcal{L}_{ort}^{mn} = \frac{1}{|\mathcal{B}|}\sum_{i}
            \big(\mathbf{s}^{m\top}_i \mathbf{s}^n_i\big)^2

    and the contrastive reconstruction loss of :math:`n` from :math:`m`, with
    :math:`a_i = \cos(\mathbf{x}^n_i, D_{m\to n}\mathbf{c}^m_i)`,
    :math:`b_i = \cos(\mathbf{x}^n_i, D_{m\to n}\mathbf{h}^m_i)`,
    :math:`e_i = \cos(\mathbf{x}^n_i, D_{m\to n}\mathbf{s}^m_i)` and temperature :math:`\tau`:
    the common part must reconstruct the other modality better than the whole representation,
    and the whole better than the specific part,

    .. math::
        \mathcal{L}_{rec}^{m\to n} = -\frac{1}{|\mathcal{B}|}\sum_i \Big(
            \ln\frac{e^{a_i/\tau}}{e^{a_i/\tau} + e^{b_i/\tau} + e^{e_i/\tau}}
            + \ln\frac{e^{b_i/\tau}}{e^{b_i/\tau} + e^{e_i/\tau}} \Big)

    The pre-training loss averages over the :math:`M(M-1)/2` pairs (with two modalities it is
    the authors' sum :math:`\mathcal{L}_{sim} + \mathcal{L}_{ort} + \mathcal{L}_{rec}^{v\to t}
    + \mathcal{L}_{rec}^{t\to v}`); it is logged as ``pre_sim``, ``pre_ort``, ``pre_rec``:

    .. math::
        \mathcal{L}_{pre} = \binom{M}{2}^{-1} \sum_{\{m,n\}} \big(\mathcal{L}_{sim}^{mn}
            + \mathcal{L}_{ort}^{mn} + \mathcal{L}_{rec}^{m\to n} + \mathcal{L}_{rec}^{n\to m}\big)

    Only the encoders, :math:`\mathbf{P}_m` and the decoders learn in pre-training.

    **Recommendation** (the epochs after it). The :math:`2M` parts
    :math:`\mathbf{p}_{i,1..2M} = (\mathbf{c}^1_i, \dots, \mathbf{c}^M_i, \mathbf{s}^1_i,
    \dots, \mathbf{s}^M_i)` are fused by a user-aware attention and added to an item ID
    embedding :math:`\mathbf{e}_i`; with user embedding :math:`\mathbf{u}`:

    .. math::
        \alpha_{uik} = \operatorname{softmax}_k\big(\mathbf{u}^\top \mathbf{p}_{ik}\big), \qquad
        \mathbf{v}_{ui} = \mathbf{e}_i + \sum_k \alpha_{uik}\,\mathbf{p}_{ik}, \qquad
        \hat{y}_{ui} = \mathbf{u}^\top \mathbf{v}_{ui}

    trained, as in the authors' code, with the point-wise log loss on one sampled negative
    :math:`j` per row, **summed** over the batch (logged as ``bce``):

    .. math::
        \mathcal{L} = -\sum_{(u,i,j)} \big(\ln\sigma(\hat{y}_{ui}) + \ln(1 - \sigma(\hat{y}_{uj}))
        \big)

    Gradients reach :math:`\mathbf{u}`, :math:`\mathbf{e}`, the encoders and
    :math:`\mathbf{P}_m` (the decoders only serve pre-training). ``u`` and ``e`` start from
    ``xavier_uniform_`` (MMRec's convention; ``embedding_init="normal"`` gives the authors'
    :math:`\mathcal{N}(0, 1)`, whose scores of size :math:`\sqrt{d}` saturate the summed log
    loss: on the ``small`` preset it stays near Recall@20 0.03 until early stopping).
    The score depends on the user through :math:`\alpha`, so :meth:`score` is overridden
    (evaluated in blocks of users) and :meth:`embeddings` is not defined.

    **+SEA.** :meth:`modal_item_representations` are the encoder outputs
    :math:`\mathbf{h}^m` (``(N, d)``), the representations PAMD splits into its common and
    specific parts; separate-learning terms on them reach the encoders, which feed the scores.
    They are added in both stages.

    Args:
        num_users: Number of users ``U``.
        features: ``{modality: (N, F_m) tensor}``, row ``i`` = item ``i``; frozen
            non-persistent buffers. At least two modalities (the common part is what they share).
        embedding_dim: :math:`d`, the size of every representation (authors: 100 on Clothing,
            50 on Yelp, 30 on their food data; ``pre_emb_dim`` = ``emb_dim``).
        pretrain_epochs: Epochs of the pre-training stage at the start of the run (authors:
            the checkpoint of pre-training epoch 220 on Clothing); 0 trains the recommender on
            the randomly initialised encoder.
        temperature: :math:`\tau` of the reconstruction loss (authors: 0.5).
        embedding_init: ``"xavier"`` (default, MMRec's convention) or ``"normal"`` (the
            authors' ``nn.Embedding`` default :math:`\mathcal{N}(0, 1)`) for ``u`` and ``e``.

    Raises:
        ValueError: fewer than two modalities, or a non-positive size / temperature / negative
            number of epochs (the message names the argument).

    Shapes:
        - :meth:`disentangle`: ``{m: (h, c, s)}``, each ``(R, d)``
        - :meth:`modal_item_representations`: ``{m: (R, d)}``
        - :meth:`score`: ``(B, N)``
    """

    def __init__(
        self,
        num_users: int,
        features: Mapping[str, Tensor],
        embedding_dim: int = 100,
        pretrain_epochs: int = 220,
        temperature: float = 0.5,
        embedding_init: str = "xavier",
    ) -> None:
        super().__init__()
        if embedding_init not in ("normal", "xavier"):
            raise ValueError(
                f"`embedding_init` must be 'normal' (the authors' N(0, 1)) or 'xavier' (MMRec's "
                f"convention), got {embedding_init!r}"
            )
        self.embedding_init = embedding_init
        feats = check_features(features)
        if len(feats) < 2:
            raise ValueError(
                f"PAMD needs at least two modalities: it splits each modality's representation "
                f"into a part common to the modalities and a specific one, but `features` has "
                f"only {list(feats)}; give two or more (<modality>_feat.npy files), or use a "
                "model that takes one modality (e.g. vbpr, freedom)"
            )
        if embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be >= 1, got {embedding_dim}")
        if isinstance(pretrain_epochs, bool) or int(pretrain_epochs) != pretrain_epochs or (
            pretrain_epochs < 0
        ):
            raise ValueError(f"`pretrain_epochs` must be an integer >= 0, got {pretrain_epochs!r}")
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}")
        self.num_users = int(num_users)
        self.num_items = next(iter(feats.values())).size(0)
        self.embedding_dim = int(embedding_dim)
        self.pretrain_epochs = int(pretrain_epochs)
        self.temperature = float(temperature)
        self.modalities = list(feats)
        self._feature_names = {m: f"x_{i}" for i, m in enumerate(self.modalities)}
        for m, x in feats.items():
            self.register_buffer(self._feature_names[m], x, persistent=False)

        d = self.embedding_dim
        self.user_emb = nn.Embedding(self.num_users, d)
        self.item_emb = nn.Embedding(self.num_items, d)
        self.encoders = nn.ModuleDict({m: nn.Linear(x.size(1), d) for m, x in feats.items()})
        self.common = nn.ParameterDict({m: nn.Parameter(torch.empty(d, d)) for m in feats})
        self.decoders = nn.ModuleDict({
            m: nn.ModuleDict({n: nn.Linear(d, y.size(1)) for n, y in feats.items() if n != m})
            for m in feats
        })  # fmt: skip
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for emb in (self.user_emb, self.item_emb):
            if self.embedding_init == "xavier":
                nn.init.xavier_uniform_(emb.weight)
            else:
                emb.reset_parameters()  # N(0, 1), as the authors' nn.Embedding
        for m in self.modalities:
            self.encoders[m].reset_parameters()
            nn.init.kaiming_uniform_(self.common[m])
            for dec in self.decoders[m].values():
                dec.reset_parameters()

    def feature(self, modality: str) -> Tensor:
        """The frozen raw ``(N, F_m)`` features of ``modality``."""
        return getattr(self, self._feature_names[modality])

    # ---- the disentangled encoder ------------------------------------------------------------
    def disentangle(self, items: Tensor | None = None) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
        r"""``{m: (h^m, c^m, s^m)}`` at item ids ``items`` (default: all ``N`` items), each
        ``(R, d)``, with autograd attached."""
        out = {}
        for m in self.modalities:
            x = self.feature(m)
            h = self.encoders[m](x if items is None else x[items])
            c = h @ self.common[m]
            out[m] = (h, c, h - c)
        return out

    def modal_item_representations(self, items: Tensor | None = None) -> dict[str, Tensor]:
        r"""The encoder outputs :math:`\mathbf{h}^m` (``{m: (R, d)}``), for separate learning."""
        feats = {m: self.feature(m) for m in self.modalities}
        return {m: self.encoders[m](x if items is None else x[items]) for m, x in feats.items()}

    @staticmethod
    def _stack_parts(parts: Mapping[str, tuple[Tensor, Tensor, Tensor]]) -> Tensor:
        """``(2M, R, d)``: the common parts of every modality, then the specific ones."""
        return torch.stack([p[1] for p in parts.values()] + [p[2] for p in parts.values()])

    def fuse(self, users: Tensor, parts: Tensor, items: Tensor) -> Tensor:
        r"""Item representations :math:`\mathbf{v}_{ui}` ``(B, d)`` of rows ``(u, i)``.

        Args:
            users: ``(B, d)`` user embeddings.
            parts: ``(2M, B, d)`` parts of the rows' items.
            items: ``(B,)`` item ids (for :math:`\mathbf{e}_i`).
        """
        att = torch.softmax(torch.einsum("bd,kbd->bk", users, parts), dim=1)
        return self.item_emb(items) + torch.einsum("bk,kbd->bd", att, parts)

    # ---- training ------------------------------------------------------------------------------
    def forward_train(self, batch: Tensor, all_modal_items: bool = False) -> TrainOutput:
        """One training pass. A ``(1, B)`` batch (item ids, the pre-training stage) gives
        ``rows`` ``stage="pretrain"``, ``items`` and ``parts`` (``{m: (h, c, s)}``, ``(B, d)``
        each); a ``(3, B)`` batch gives ``stage="train"`` and the scores ``pos`` / ``neg``
        ``(B,)``. ``modal`` (the :math:`\\mathbf{h}^m`) covers all items with
        ``all_modal_items=True`` (from the same pass), else the batch's distinct items."""
        if batch.dim() != 2 or batch.size(0) not in (1, 3):
            raise ValueError(
                "PAMD.loss takes a (1, B) batch of item ids (pre-training) or a (3, B) batch "
                f"[users; positives; negatives], got shape {tuple(batch.shape)}"
            )
        items = batch[0] if batch.size(0) == 1 else torch.cat([batch[1], batch[2]])
        rows, index = batch_item_rows(items, all_modal_items)
        parts = self.disentangle(rows)
        out = TrainOutput({m: p[0] for m, p in parts.items()}, rows)
        if batch.size(0) == 1:
            out.rows = {"stage": "pretrain", "items": batch[0],
                        "parts": {m: tuple(t[index] for t in p) for m, p in parts.items()}}
            return out
        users, pos, neg = batch
        b = users.numel()
        stacked = self._stack_parts(parts)
        u = self.user_emb(users)
        scores = [
            (u * self.fuse(u, stacked[:, index[sl]], ids)).sum(-1)
            for sl, ids in ((slice(0, b), pos), (slice(b, 2 * b), neg))
        ]
        out.rows = {"stage": "train", "pos": scores[0], "neg": scores[1]}
        return out

    def reconstruction_loss(self, target: Tensor, common: Tensor, whole: Tensor,
                            specific: Tensor) -> Tensor:
        r""":math:`\mathcal{L}_{rec}`: mean over rows of the two ordered contrastive terms.

        Args:
            target: ``(B, F_n)`` raw features of the reconstructed modality.
            common, whole, specific: ``(B, F_n)`` decodings of :math:`\mathbf{c}^m`,
                :math:`\mathbf{h}^m`, :math:`\mathbf{s}^m`.
        """
        x = F.normalize(target, dim=-1)
        a, b, e = (
            (x * F.normalize(r, dim=-1)).sum(-1) / self.temperature
            for r in (common, whole, specific)
        )
        first = torch.logsumexp(torch.stack([a, b, e]), 0) - a
        second = torch.logsumexp(torch.stack([b, e]), 0) - b
        return (first + second).mean()

    def pretrain_terms(self, items: Tensor, parts: Mapping[str, tuple[Tensor, Tensor, Tensor]]
                       ) -> dict[str, Tensor]:
        """``pre_sim``, ``pre_ort``, ``pre_rec``: the pre-training terms of the items ``items``
        ``(B,)`` whose parts are ``{m: (h, c, s)}`` (``(B, d)`` each), averaged over the pairs
        of modalities."""
        pairs = list(combinations(self.modalities, 2))
        sim = ort = rec = 0.0
        for m, n in pairs:
            sim = sim + F.mse_loss(parts[m][1], parts[n][1])
            ort = ort + ((parts[m][2] * parts[n][2]).sum(-1) ** 2).mean()
            for src, dst, (h, c, s) in ((m, n, parts[m]), (n, m, parts[n])):
                dec = self.decoders[src][dst](torch.cat([c, h, s]))
                rec = rec + self.reconstruction_loss(self.feature(dst)[items], *dec.chunk(3))
        k = len(pairs)
        return {"pre_sim": sim / k, "pre_ort": ort / k, "pre_rec": rec / k}

    def loss_terms(self, out: TrainOutput) -> dict[str, Tensor]:
        rows = out.rows
        if rows["stage"] == "pretrain":
            return self.pretrain_terms(rows["items"], rows["parts"])
        # -ln sigma(y) = softplus(-y), -ln(1 - sigma(y)) = softplus(y)
        # a sum over the batch: over the whole batch under torchrun (sea_pyg.nn.data_parallel)
        return {"bce": sharded_sum(F.softplus(-rows["pos"]).sum() + F.softplus(rows["neg"]).sum())}

    # ---- scoring -----------------------------------------------------------------------------
    @torch.no_grad()
    def scoring_state(self) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        """``(user_emb (U, d), item_emb (N, d), parts (2M, N, d))``, computed once."""
        return self.user_emb.weight, self.item_emb.weight, self._stack_parts(self.disentangle())

    @torch.no_grad()
    def score(self, users: Tensor, state: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        r""":math:`\hat{y}_{ui}` ``(B, N)`` of ``users`` ``(B,)`` over all items, in blocks of
        users that keep the ``(users, 2M, N)`` attention logits under 128 MiB."""
        user_emb, item_emb, parts = self.scoring_state() if state is None else state
        u_all = user_emb[users.to(user_emb.device)]
        step = max(1, _SCORE_BLOCK // (parts.size(0) * parts.size(1)))
        out = []
        for u in u_all.split(step):
            logits = torch.einsum("bd,knd->bkn", u, parts)
            att = torch.softmax(logits, dim=1)
            out.append(u @ item_emb.t() + (att * logits).sum(1))
        return torch.cat(out) if out else u_all.new_zeros(0, item_emb.size(0))

    def embeddings(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(
            "PAMD's item representation depends on the user (attention over its parts), so "
            "there are no user-independent item embeddings: score with PAMD.score(users)"
        )

    def extra_repr(self) -> str:
        dims = ", ".join(f"{m}={self.feature(m).size(1)}" for m in self.modalities)
        return (
            f"num_users={self.num_users}, num_items={self.num_items}, features=({dims}), "
            f"embedding_dim={self.embedding_dim}, pretrain_epochs={self.pretrain_epochs}, "
            f"temperature={self.temperature}"
        )
