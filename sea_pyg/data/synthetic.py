r"""Synthetic multimodal recommendation data with planted, known structure.

:func:`make_synthetic` builds a dataset in the MMRec layout (an interaction frame with
``userID, itemID, x_label`` and one feature matrix per item modality) whose generating factors are
known, so tests can check that a model recovers them and benchmarks can run at the sizes of the
real Amazon datasets without downloading anything.

Planted structure
-----------------
Let :math:`U` users, :math:`I` items and modalities :math:`m \in \mathcal{M}` (by default
``("image", "text")``). All factors are i.i.d. standard normal unless said otherwise.

Item factors (returned in :attr:`SyntheticData.factors`):

* ``"generic"`` :math:`g_i \in \mathbb{R}^{d_g}`: shared by **all** modalities;
* ``"unique_<m>"`` :math:`s^m_i \in \mathbb{R}^{d_s}`: seen by modality :math:`m` only;
* ``"collab"`` :math:`c_i \in \mathbb{R}^{d_c}`: seen by **no** modality, only through
  interactions;
* ``"popularity"`` :math:`b_i = -\alpha \log r_i` (centred to mean 0), where
  :math:`r_1, \dots, r_I` is a random permutation of :math:`1, \dots, I` (a Zipf-like long tail of
  log-popularity, :math:`\alpha` = ``popularity_skew``).

Item features (:attr:`SyntheticData.features`, float32, row :math:`i` = item :math:`i`). For each
modality a random map :math:`W_m \in \mathbb{R}^{(d_g + d_s) \times D_m}` with
:math:`\mathcal{N}(0, 1/(d_g + d_s))` entries (so every coordinate of the clean signal has unit
variance) and Gaussian noise :math:`\epsilon \sim \mathcal{N}(0, \sigma^2)` (:math:`\sigma` =
``feature_noise``) give the pre-activation :math:`z^m_i = [g_i, s^m_i] W_m + \epsilon`. Then

* sentence-like modalities (those in ``unit_norm_modalities``, by default ``"text"``):
  :math:`x^m_i = z^m_i / \lVert z^m_i \rVert_2`, unit-norm rows like sentence-transformer
  embeddings;
* CNN-like modalities (all others, by default ``"image"``):
  :math:`x^m_i = \max(0,\, z^m_i - t)` with the threshold :math:`t` chosen so that a fraction
  ``image_active_fraction`` of the entries is non-zero on average: non-negative, not normalised,
  sparse like post-ReLU CNN activations.

Hence the generic factor is linearly recoverable from every modality, each unique factor only from
its own modality, and the collaborative factor from none.

User preferences and interactions. Users fall into ``num_user_groups`` taste groups (uniformly at
random); group :math:`k` has a centre :math:`\mu_k \sim \mathcal{N}(0, I_D)` and user :math:`u` of
group :math:`k` has :math:`p_u = (\mu_k + \rho\, \eta_u) / \sqrt{1 + \rho^2}`,
:math:`\eta_u \sim \mathcal{N}(0, I_D)`, :math:`\rho` = ``user_spread`` (so that
:math:`p_u \sim \mathcal{N}(0, I_D)` marginally, while users of a group share tastes, which is
what collaborative filtering exploits). :math:`p_u` weighs the
concatenation :math:`q_i = [w_g g_i,\, w_s s^{m_1}_i, \dots,\, w_c c_i] / Z` of **all** item
factors (``factors["user"]`` has shape ``(U, D)``, :math:`D = d_g + |\mathcal{M}| d_s + d_c`; the
weights :math:`w` are ``generic_weight``, ``unique_weight``, ``collab_weight`` and :math:`Z` makes
:math:`\langle p_u, q_i\rangle` unit-variance). The true affinity is

.. math::
    a_{ui} = \langle p_u, q_i \rangle + b_i

(:meth:`SyntheticData.true_affinity`). User :math:`u` draws a count :math:`n_u \geq 5` from a
right-skewed (shifted log-normal) distribution whose mean hits the target number of interactions,
capped at ``max_user_fraction * I``; the counts are then nudged by one here and there so that
:math:`\sum_u n_u` equals ``num_interactions`` **exactly**. The user's items are :math:`n_u` draws
**without replacement** from :math:`\operatorname{softmax}_i(a_{ui} / T)` (:math:`T` =
``temperature``), done with the Gumbel top-k trick: the :math:`n_u` largest
:math:`a_{ui}/T + G_{ui}`, :math:`G_{ui}` i.i.d. standard Gumbel. Scores are computed in chunks of
users, never as one dense :math:`U \times I` matrix.

Coverage repair. An item that nobody drew replaces, in the list of a user who likes it (the best of
64 random users by :math:`a_{ui}/T + G`), that user's lowest-scored item among those held by at
least two users. This keeps every user's count and the total unchanged.

Guarantees: ids are 0-based and contiguous; every user has at least 5 distinct items (hence at least
3 train, 1 validation and 1 test row under the MMRec split); no duplicate (user, item) pair; every
item has at least one interaction (in some split, not necessarily train); the number of interactions
equals the preset's ``num_interactions``. Items are **not** 5-core (tail items may have a single
interaction). The split is :func:`sea_pyg.data.split.split_per_user`.

Determinism: one :class:`numpy.random.SeedSequence` per ``seed`` is split into independent streams
for factors, features, interactions and the split, so the same seed gives bit-identical output
and ``with_features=False`` gives exactly the same interactions and factors as ``True``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from sea_pyg.data.split import split_per_user

__all__ = ["SyntheticPreset", "SyntheticData", "PRESETS", "make_synthetic"]

_CHUNK_ELEMENTS = 1 << 24  # user x item scores per chunk (64 MB in float32)
_COVERAGE_CANDIDATES = 64


def _default_dims() -> dict[str, int]:
    return {"image": 4096, "text": 384}


@dataclass(frozen=True)
class SyntheticPreset:
    """Size and generative parameters of a synthetic dataset (see the module docstring).

    Args:
        name: dataset name (used as the MMRec file stem).
        num_users: number of users :math:`U`.
        num_items: number of items :math:`I`.
        num_interactions: total number of interactions; achieved exactly. Must lie in
            ``[max(5 U, I), U * max_per_user]``.
        feature_dims: modality -> feature dimension, in output order.
        unit_norm_modalities: modalities built like sentence embeddings (unit-norm rows); the
            other modalities are built like CNN activations (non-negative, sparse).
        generic_dim: :math:`d_g`, size of the generic (shared by all modalities) item factor.
        unique_dim: :math:`d_s`, size of each modality-unique item factor.
        collab_dim: :math:`d_c`, size of the interaction-only item factor.
        generic_weight, unique_weight, collab_weight: relative weight of each kind of factor in
            the user-item affinity.
        temperature: softmax temperature :math:`T` of the interaction sampling; lower means
            users follow their affinity more closely (an easier task).
        popularity_skew: :math:`\\alpha` in the log-popularity :math:`-\\alpha \\log r_i`; 0 turns
            popularity off.
        feature_noise: standard deviation of the Gaussian noise added to every feature
            coordinate (the clean signal has unit variance per coordinate).
        image_active_fraction: expected fraction of non-zero entries of CNN-like features.
        min_per_user: minimum number of interactions per user (5 mimics the 5-core filter).
        count_sigma: log-normal shape of the per-user count distribution (larger = longer tail).
        max_user_fraction: a user holds at most ``max_user_fraction * num_items`` items.
        num_user_groups: number of taste groups users are drawn from.
        user_spread: :math:`\\rho`, spread of users around their group centre (0: every user of a
            group has the same preferences; large: independent users).
    """

    name: str
    num_users: int
    num_items: int
    num_interactions: int
    feature_dims: Mapping[str, int] = field(default_factory=_default_dims)
    unit_norm_modalities: tuple[str, ...] = ("text",)
    generic_dim: int = 16
    unique_dim: int = 8
    collab_dim: int = 12
    generic_weight: float = 1.0
    unique_weight: float = 0.8
    collab_weight: float = 0.7
    temperature: float = 0.5
    popularity_skew: float = 0.25
    feature_noise: float = 0.3
    image_active_fraction: float = 0.3
    min_per_user: int = 5
    count_sigma: float = 1.0
    max_user_fraction: float = 0.5
    num_user_groups: int = 32
    user_spread: float = 0.7

    def __hash__(self) -> int:  # feature_dims is a dict, so hash it as sorted items
        return hash(
            tuple(
                tuple(sorted(v.items())) if isinstance(v, Mapping) else v
                for v in (getattr(self, f.name) for f in fields(self))
            )
        )

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.feature_dims)

    @property
    def max_per_user(self) -> int:
        return min(
            self.num_items - 1, max(self.min_per_user, int(self.max_user_fraction * self.num_items))
        )

    def validate(self) -> None:
        """Raise ``ValueError`` if the sizes cannot be met."""
        U, I, T = self.num_users, self.num_items, self.num_interactions
        if min(U, I) < 1 or self.min_per_user < 3:
            raise ValueError(
                f"preset {self.name!r}: need num_users, num_items >= 1 and min_per_user >= 3"
            )
        if self.max_per_user < self.min_per_user:
            raise ValueError(
                f"preset {self.name!r}: num_items={I} is too small for "
                f"min_per_user={self.min_per_user}"
            )
        lo, hi = max(self.min_per_user * U, I), self.max_per_user * U
        if not lo <= T <= hi:
            raise ValueError(
                f"preset {self.name!r}: num_interactions={T} must lie in [{lo}, {hi}] "
                f"(>= {self.min_per_user} per user, >= 1 per item, <= "
                f"{self.max_per_user} per user)"
            )
        if not self.feature_dims or min(self.feature_dims.values()) < 1:
            raise ValueError(f"preset {self.name!r}: feature_dims must be non-empty and positive")
        if self.temperature <= 0 or not 0 < self.image_active_fraction < 1:
            raise ValueError(
                f"preset {self.name!r}: need temperature > 0 and 0 < image_active_fraction < 1"
            )


PRESETS: dict[str, SyntheticPreset] = {
    p.name: p
    for p in [
        SyntheticPreset("tiny", 60, 40, 600, feature_dims={"image": 64, "text": 32}),
        SyntheticPreset("small", 2_000, 1_000, 20_000),
        SyntheticPreset("baby", 19_445, 7_050, 160_792),
        SyntheticPreset("sports", 35_598, 18_357, 296_337),
        SyntheticPreset("clothing", 39_387, 23_033, 278_677),
    ]
}


@dataclass
class SyntheticData:
    """A generated dataset: interactions, item features and the planted factors.

    Attributes:
        name: dataset name.
        interactions: frame with int64 columns ``userID, itemID, x_label`` (0 train, 1 valid,
            2 test), sorted by user then item.
        features: modality -> float32 ``(num_items, dim)`` array (empty if generated with
            ``with_features=False``).
        factors: planted factors: ``"generic"`` ``(I, d_g)``, ``"unique_<m>"`` ``(I, d_s)`` per
            modality, ``"collab"`` ``(I, d_c)``, ``"popularity"`` ``(I,)`` (log-popularity
            :math:`b_i`) and ``"user"`` ``(U, D)``, all float32.
        preset: the :class:`SyntheticPreset` used.
    """

    name: str
    interactions: pd.DataFrame
    features: dict[str, np.ndarray]
    factors: dict[str, np.ndarray]
    preset: SyntheticPreset

    @property
    def num_users(self) -> int:
        return self.preset.num_users

    @property
    def num_items(self) -> int:
        return self.preset.num_items

    def item_preference_factors(self) -> np.ndarray:
        """The weighted, normalised item vectors :math:`q_i`, shape ``(I, D)``, float32."""
        return _item_vectors(self.factors, self.preset)

    def true_affinity(self, users: np.ndarray | slice | None = None) -> np.ndarray:
        """True affinity :math:`a_{ui} = \\langle p_u, q_i \\rangle + b_i` for some users.

        Args:
            users: user ids (or a slice); all users if ``None`` (mind the memory: ``U x I``).

        Returns:
            float32 array of shape ``(len(users), num_items)``.
        """
        p = self.factors["user"] if users is None else self.factors["user"][users]
        scores = np.atleast_2d(p) @ self.item_preference_factors().T
        scores += self.factors["popularity"]
        return scores

    def to_mmrec(self, folder: str | os.PathLike, name: str | None = None) -> Path:
        """Write the dataset as an MMRec folder (``<name>.inter`` and ``<modality>_feat.npy``)."""
        from sea_pyg.data.mmrec import write_mmrec

        return write_mmrec(folder, name or self.name, self.interactions, self.features)


def _item_vectors(factors: Mapping[str, np.ndarray], preset: SyntheticPreset) -> np.ndarray:
    blocks = [preset.generic_weight * factors["generic"]]
    blocks += [preset.unique_weight * factors[f"unique_{m}"] for m in preset.modalities]
    blocks.append(preset.collab_weight * factors["collab"])
    q = np.concatenate(blocks, axis=1)
    norm = math.sqrt(
        preset.generic_weight**2 * preset.generic_dim
        + preset.unique_weight**2 * preset.unique_dim * len(preset.modalities)
        + preset.collab_weight**2 * preset.collab_dim
    )
    return (q / np.float32(norm)).astype(np.float32)


def _make_factors(preset: SyntheticPreset, rng: np.random.Generator) -> dict[str, np.ndarray]:
    I = preset.num_items

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)

    factors = {"generic": normal(I, preset.generic_dim)}
    for m in preset.modalities:
        factors[f"unique_{m}"] = normal(I, preset.unique_dim)
    factors["collab"] = normal(I, preset.collab_dim)
    rank = rng.permutation(I) + 1
    log_pop = -preset.popularity_skew * np.log(rank)
    factors["popularity"] = (log_pop - log_pop.mean()).astype(np.float32)
    dim = preset.generic_dim + len(preset.modalities) * preset.unique_dim + preset.collab_dim
    centres = normal(preset.num_user_groups, dim)
    group = rng.integers(preset.num_user_groups, size=preset.num_users)
    spread = np.float32(preset.user_spread)
    user = centres[group] + spread * normal(preset.num_users, dim)
    factors["user"] = user / np.float32(math.sqrt(1.0 + preset.user_spread**2))
    return factors


def _make_features(
    preset: SyntheticPreset, factors: Mapping[str, np.ndarray], seed_seq: np.random.SeedSequence
) -> dict[str, np.ndarray]:
    features = {}
    for (m, dim), ss in zip(
        preset.feature_dims.items(), seed_seq.spawn(len(preset.feature_dims)), strict=True
    ):
        rng = np.random.default_rng(ss)
        latent = np.concatenate([factors["generic"], factors[f"unique_{m}"]], axis=1)
        w = rng.standard_normal((latent.shape[1], dim), dtype=np.float32)
        w /= np.float32(math.sqrt(latent.shape[1]))
        unit_norm = m in preset.unit_norm_modalities
        # pre-activation std is sqrt(1 + noise^2); threshold for the wanted active fraction
        std = math.sqrt(1.0 + preset.feature_noise**2)
        threshold = np.float32(NormalDist().inv_cdf(1.0 - preset.image_active_fraction) * std)
        out = np.empty((preset.num_items, dim), dtype=np.float32)
        step = max(1, _CHUNK_ELEMENTS // dim)
        for a in range(0, preset.num_items, step):
            z = latent[a : a + step] @ w
            noise = rng.standard_normal(z.shape, dtype=np.float32)
            noise *= np.float32(preset.feature_noise)
            z += noise
            if unit_norm:
                z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), np.float32(1e-12))
            else:
                z -= threshold
                np.maximum(z, 0, out=z)
            out[a : a + step] = z
        features[m] = out
    return features


def _draw_counts(preset: SyntheticPreset, rng: np.random.Generator) -> np.ndarray:
    """Per-user counts: >= min_per_user, <= max_per_user, summing to num_interactions exactly."""
    U, lo, hi = preset.num_users, preset.min_per_user, preset.max_per_user
    mean_extra = preset.num_interactions / U - lo
    z = rng.standard_normal(U)
    # floor() loses 0.5 on average: aim the continuous mean at mean_extra + 0.5
    scale = (mean_extra + 0.5) / math.exp(preset.count_sigma**2 / 2)
    counts = lo + np.floor(scale * np.exp(preset.count_sigma * z)).astype(np.int64)
    np.clip(counts, lo, hi, out=counts)
    diff = preset.num_interactions - int(counts.sum())
    while diff != 0:
        movable = np.flatnonzero(counts < hi) if diff > 0 else np.flatnonzero(counts > lo)
        pick = rng.choice(movable, size=min(abs(diff), movable.size), replace=False)
        counts[pick] += 1 if diff > 0 else -1
        diff = preset.num_interactions - int(counts.sum())
    return counts


def _sample_interactions(
    preset: SyntheticPreset,
    factors: Mapping[str, np.ndarray],
    counts: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Gumbel top-k sampling per user, in chunks of users; then the coverage repair."""
    U, I = preset.num_users, preset.num_items
    q_t = np.ascontiguousarray(_item_vectors(factors, preset).T)
    inv_t = np.float32(1.0 / preset.temperature)
    pop = factors["popularity"] * inv_t
    user = factors["user"] * inv_t
    offsets = np.concatenate([[0], np.cumsum(counts)])
    items = np.empty(int(offsets[-1]), dtype=np.int64)
    scores = np.empty(int(offsets[-1]), dtype=np.float32)
    step = max(1, _CHUNK_ELEMENTS // I)
    for a in range(0, U, step):
        b = min(U, a + step)
        logits = user[a:b] @ q_t
        logits += pop
        # neg = log(E) - logits = -(logits + Gumbel), with E ~ Exp(1)
        neg = rng.standard_exponential((b - a, I), dtype=np.float32)
        np.maximum(neg, np.float32(1e-30), out=neg)  # float32 draws can be exactly 0
        np.log(neg, out=neg)
        neg -= logits
        del logits
        k = counts[a:b]
        kmax = int(k.max())
        top = np.argpartition(neg, kmax - 1, axis=1)[:, :kmax]
        top_val = np.take_along_axis(neg, top, axis=1)
        order = np.argsort(top_val, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        top_val = np.take_along_axis(top_val, order, axis=1)
        keep = np.arange(kmax) < k[:, None]
        items[offsets[a] : offsets[b]] = top[keep]
        scores[offsets[a] : offsets[b]] = -top_val[keep]
    _repair_coverage(preset, factors, user, pop, offsets, items, scores, rng)
    return np.repeat(np.arange(U, dtype=np.int64), counts), items


def _repair_coverage(
    preset: SyntheticPreset,
    factors: Mapping[str, np.ndarray],
    user: np.ndarray,
    pop: np.ndarray,
    offsets: np.ndarray,
    items: np.ndarray,
    scores: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Give every item at least one interaction by swapping, keeping all per-user counts."""
    U, I = preset.num_users, preset.num_items
    item_count = np.bincount(items, minlength=I)
    missing = np.flatnonzero(item_count == 0)
    if missing.size == 0:
        return
    q = _item_vectors(factors, preset)[missing]  # (M, D)
    num_cand = min(U, _COVERAGE_CANDIDATES)
    cand = np.stack([rng.choice(U, size=num_cand, replace=False) for _ in range(missing.size)])
    cand_logit = np.einsum("mcd,md->mc", user[cand], q) + pop[missing, None]
    cand_logit -= np.log(rng.standard_exponential(cand_logit.shape))
    cand_order = np.take_along_axis(cand, np.argsort(-cand_logit, axis=1), axis=1)
    for j, item in enumerate(missing):
        pos = -1
        for u in cand_order[j]:
            lo, hi = offsets[u], offsets[u + 1]
            ok = np.flatnonzero(item_count[items[lo:hi]] >= 2)
            if ok.size:
                pos = lo + ok[np.argmin(scores[lo:hi][ok])]
                break
        if pos < 0:  # no candidate can give an item away: take the globally weakest one
            ok = np.flatnonzero(item_count[items] >= 2)
            pos = ok[np.argmin(scores[ok])]
        item_count[items[pos]] -= 1
        items[pos] = item
        scores[pos] = np.inf
        item_count[item] = 1


def make_synthetic(
    preset: str | SyntheticPreset = "tiny", seed: int = 0, with_features: bool = True
) -> SyntheticData:
    """Generate a synthetic multimodal recommendation dataset with planted factors.

    Args:
        preset: a name in :data:`PRESETS` (``"tiny"``, ``"small"``, ``"baby"``, ``"sports"``,
            ``"clothing"``) or a :class:`SyntheticPreset`.
        seed: random seed; the same seed gives identical arrays.
        with_features: if ``False``, skip the (large) feature matrices; interactions and factors
            are unchanged.

    Returns:
        A :class:`SyntheticData`.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown synthetic preset {preset!r}; valid: {sorted(PRESETS)}")
        preset = PRESETS[preset]
    elif not isinstance(preset, SyntheticPreset):
        raise TypeError(f"preset must be a name or a SyntheticPreset, got {type(preset).__name__}")
    preset = replace(preset, feature_dims=dict(preset.feature_dims))
    preset.validate()

    ss_factors, ss_features, ss_inter, ss_split = np.random.SeedSequence(seed).spawn(4)
    factors = _make_factors(preset, np.random.default_rng(ss_factors))
    inter_rng = np.random.default_rng(ss_inter)
    counts = _draw_counts(preset, inter_rng)
    users, items = _sample_interactions(preset, factors, counts, inter_rng)

    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    split_seed = int(ss_split.generate_state(1)[0])
    interactions = pd.DataFrame(
        {"userID": users, "itemID": items, "x_label": split_per_user(users, split_seed)}
    )
    features = _make_features(preset, factors, ss_features) if with_features else {}
    return SyntheticData(preset.name, interactions, features, factors, preset)
