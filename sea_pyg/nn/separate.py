r"""SEA's separate-learning module, usable on any model's per-modality item representations."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from sea_pyg.nn.auxiliary import AuxiliaryEstimator, GradientStep
from sea_pyg.nn.encoders import ProjectionHead
from sea_pyg.nn.fused import Consumer
from sea_pyg.nn.losses import (
    CLUB,
    club_gradient_step,
    info_nce_loss,
    negative_l2_loss,
    solosim_loss,
)

__all__ = ["SeparateLearning", "ALIGNMENTS", "DISTANCINGS", "CLUB_FITS"]

ALIGNMENTS = ("solosim", "infonce", "none")
DISTANCINGS = ("club", "negl2", "none")
CLUB_FITS = ("own", "cross_modal")


class SeparateLearning(nn.Module):
    r"""Split, align and distance: the separate-learning part of SEA as one module.

    For each modality :math:`m` with item representation :math:`\mathbf{R}^m \in
    \mathbb{R}^{N \times D_m}`, the first :math:`\lfloor s D_m \rfloor` columns are the
    **generic** part :math:`\mathbf{G}^m` and the rest the **unique** part
    :math:`\mathbf{U}^m` (``split`` :math:`s = 0.5` in the official code). Then

    * **alignment** of the generic parts across modalities: :math:`\mathbf{z}^m =
      \mathrm{head}_m(\mathbf{G}^m)` (:class:`~sea_pyg.nn.ProjectionHead`) and, over every
      pair of modalities :math:`(a, b)` with :math:`a` after :math:`b` in the given order
      (for ``image, text``: text :math:`\to` image, as in the official code),
      :math:`\mathcal{L}_\text{align} = \operatorname{mean}_{(a,b)}
      \mathrm{SoloSim}_\tau(\mathbf{z}^a, \mathbf{z}^b)` (or the symmetric
      :class:`~sea_pyg.nn.InfoNCE`);
    * **distancing** of generic and unique parts within each modality: :math:`\mathbf{g}^m =
      \mathrm{trans1}_m(\mathbf{G}^m)`, :math:`\mathbf{u}^m = \mathrm{trans2}_m(\mathbf{U}^m)`
      (linear maps to ``trans_dim``; with ``trans_dim=None`` the parts themselves, which then
      need equal sizes) and :math:`\mathcal{L}_\text{dis} = \operatorname{mean}_m
      \mathrm{CLUB}(\mathbf{g}^m, \mathbf{u}^m)` (the sampled, halved and clamped bound) or the
      negative L2 distance :class:`~sea_pyg.nn.NegativeL2`.

    :meth:`forward` returns ``{"align": align_weight * L_align, "dis": dist_weight * L_dis}``
    (terms that are switched off are omitted). With the official weights (0.012, 0.006) and two
    modalities this is exactly the official ``(ureg B_t + ureg B_v) / 2 + alpha L_align``.

    The CLUB estimators :math:`q_\theta` are not trained by the host's optimizer: the module
    declares them (:meth:`auxiliary_estimators`) and the trainer, between the host's
    ``backward()`` and its optimizer step (as the official trainer does), runs ``club_steps``
    Adam steps of their log-likelihood on the detached pairs of the last training
    :meth:`forward` (:func:`sea_pyg.train.fit_estimator` does this in a loop of your own).
    Which pairs:

    * ``club_fit="own"`` (the paper's method, preset ``default``): each modality's estimator
      (one per modality unless ``club_shared``) is fitted on :math:`(\mathbf{g}^m,
      \mathbf{u}^m)`, the very pairs whose mutual information it bounds;
    * ``club_fit="cross_modal"`` (the official code, preset ``reference``): one shared
      estimator fitted on :math:`(\mathbf{g}^a, \mathbf{g}^b)` and :math:`(\mathbf{u}^a,
      \mathbf{u}^b)` for the alignment pairs, while the bound is evaluated on
      :math:`(\mathbf{g}^m, \mathbf{u}^m)`.

    **Host models.** A model with per-modality item representations calls ``forward({m: R_m})``
    and adds the returned terms to its loss. A model whose representation is itself a linear
    transform of fixed features can instead compute the inputs of this module's first linear
    layers fused with that transform: :meth:`consumers` lists those layers and the columns
    they read, :meth:`forward_from_hidden` finishes from their outputs
    (see :func:`~sea_pyg.nn.linear_then_consumers`).

    Args:
        dims: Size :math:`D_m` of each modality's representation, in the modality order.
        split: Fraction of columns in the generic part. (default: ``0.5``)
        alignment: ``"solosim"``, ``"infonce"`` or ``"none"``. Needs two modalities or more;
            with one modality alignment must be ``"none"``.
        distancing: ``"club"``, ``"negl2"`` or ``"none"``.
        align_weight: :math:`\alpha` (official ``alpha_contrast``: 0.012).
        dist_weight: :math:`\beta` (official ``ureg``: 0.006).
        temperature: :math:`\tau` of SoloSim / InfoNCE (official: 0.2).
        proj_hidden_dim: Hidden size of the projection heads (official: 64).
        proj_dim: Output size of the projection heads (official: 32).
        trans_dim: Output size of ``trans1`` / ``trans2`` (official: 32), or ``None``.
        club_hidden_dim: Hidden width of each CLUB network (official: 8).
        club_scale: Scale of the CLUB estimate (official: 0.5).
        club_clamp_min: Lower clamp of the scaled estimate (official: 0.0), or ``None``.
        club_estimator: ``"sample"`` (official) or ``"all_pairs"``.
        club_fit: ``"own"`` or ``"cross_modal"``, see above.
        club_shared: One estimator for all modalities (official: ``True``). Required by
            ``"cross_modal"``.
        club_steps: Estimator steps after every host mini-batch (official: 50).
        club_lr: Adam learning rate of the estimators (official: the model's, 1e-4).
        chunk_size: Rows per chunk of the :math:`N \times N` SoloSim / InfoNCE logits, or
            ``None`` for the dense matrix.
    """

    def __init__(
        self,
        dims: Mapping[str, int],
        split: float = 0.5,
        alignment: str = "solosim",
        distancing: str = "club",
        align_weight: float = 0.012,
        dist_weight: float = 0.006,
        temperature: float = 0.2,
        proj_hidden_dim: int = 64,
        proj_dim: int = 32,
        trans_dim: int | None = 32,
        club_hidden_dim: int = 8,
        club_scale: float = 0.5,
        club_clamp_min: float | None = 0.0,
        club_estimator: str = "sample",
        club_fit: str = "own",
        club_shared: bool = False,
        club_steps: int = 50,
        club_lr: float = 1e-4,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if alignment not in ALIGNMENTS:
            raise ValueError(f"`alignment` must be one of {ALIGNMENTS}, got {alignment!r}")
        if distancing not in DISTANCINGS:
            raise ValueError(f"`distancing` must be one of {DISTANCINGS}, got {distancing!r}")
        if club_fit not in CLUB_FITS:
            raise ValueError(f"`club_fit` must be one of {CLUB_FITS}, got {club_fit!r}")
        if not 0.0 < split < 1.0:
            raise ValueError(f"`split` must be in (0, 1), got {split}")
        self.modalities = list(dims)
        if not self.modalities:
            raise ValueError("`dims` must name at least one modality, e.g. {'text': 384}")
        if alignment != "none" and len(self.modalities) < 2:
            raise ValueError(
                f"alignment={alignment!r} needs two modalities or more, got {self.modalities}; "
                "use alignment='none' for a single modality"
            )
        if club_fit == "cross_modal" and distancing == "club":
            if not club_shared:
                raise ValueError("club_fit='cross_modal' fits one shared estimator: "
                                 "set club_shared=True")
            if len(self.modalities) < 2:
                raise ValueError("club_fit='cross_modal' needs two modalities or more")
        if isinstance(club_steps, bool) or not isinstance(club_steps, int) or club_steps < 0:
            raise ValueError(f"`club_steps` must be a non-negative int, got {club_steps!r}")
        self.dims = {m: int(d) for m, d in dims.items()}
        self.split = float(split)
        self.alignment, self.distancing = alignment, distancing
        self.align_weight, self.dist_weight = float(align_weight), float(dist_weight)
        self.temperature = float(temperature)
        self.trans_dim = trans_dim
        self.club_estimator, self.club_fit = club_estimator, club_fit
        self.club_shared, self.club_steps = bool(club_shared), club_steps
        self.chunk_size = chunk_size
        # Alignment pairs (anchor, target): later modality -> earlier modality.
        self.pairs = [(b, a) for a, b in itertools.combinations(self.modalities, 2)]

        self.heads = nn.ModuleDict()
        self.trans_generic = nn.ModuleDict()
        self.trans_unique = nn.ModuleDict()
        for m, d in self.dims.items():
            g, u = self.generic_slice(m), self.unique_slice(m)
            if min(g[1] - g[0], u[1] - u[0]) < 1:
                raise ValueError(f"modality {m!r} of size {d} cannot be split at {split}")
            if alignment != "none":
                self.heads[m] = ProjectionHead(g[1] - g[0], proj_hidden_dim, proj_dim)
            if distancing != "none" and trans_dim is not None:
                self.trans_generic[m] = nn.Linear(g[1] - g[0], trans_dim)
                self.trans_unique[m] = nn.Linear(u[1] - u[0], trans_dim)
            elif distancing != "none" and g[1] - g[0] != u[1] - u[0]:
                raise ValueError(
                    f"trans_dim=None compares the generic and unique parts directly, which "
                    f"needs equal sizes; modality {m!r} splits {d} into {g[1] - g[0]} and "
                    f"{u[1] - u[0]}"
                )

        self.club_lr = float(club_lr)
        self.clubs = nn.ModuleDict()
        if distancing == "club":
            # the bound compares trans1(G) with trans2(U), or the halves themselves
            for key, m in ([("shared", self.modalities[0])] if club_shared else
                           [(m, m) for m in self.modalities]):
                dim = trans_dim if trans_dim is not None else self._part_size(m)
                self.clubs[key] = CLUB(dim, dim, club_hidden_dim, club_scale, club_clamp_min)
        self._pending: list[tuple[CLUB, list[tuple[Tensor, Tensor]]]] = []

    # ---------------------------------------------------------------- layout
    def generic_slice(self, m: str) -> tuple[int, int]:
        """Columns ``(start, stop)`` of modality ``m``'s generic part."""
        return 0, int(self.dims[m] * self.split)

    def unique_slice(self, m: str) -> tuple[int, int]:
        """Columns ``(start, stop)`` of modality ``m``'s unique part."""
        return int(self.dims[m] * self.split), self.dims[m]

    def _part_size(self, m: str) -> int:
        a, b = self.generic_slice(m)
        return b - a

    def club_for(self, m: str) -> CLUB:
        """The CLUB estimator of modality ``m``."""
        return self.clubs["shared" if self.club_shared else m]

    def consumers(self, m: str) -> list[Consumer]:
        """The first linear layers applied to modality ``m``'s representation and the columns
        each reads, in the order :meth:`forward_from_hidden` expects their outputs."""
        out: list[Consumer] = []
        g, u = self.generic_slice(m), self.unique_slice(m)
        if self.alignment != "none":
            out.append((self.heads[m].input_linear, g))
        if self.distancing != "none":
            if self.trans_dim is None:
                out += [(None, g), (None, u)]
            else:
                out += [(self.trans_generic[m], g), (self.trans_unique[m], u)]
        return out

    # ---------------------------------------------------------------- losses
    def parts(self, hidden: Mapping[str, Sequence[Tensor]]) -> dict[str, dict[str, Tensor]]:
        """Per modality ``{"z": projection, "g": generic, "u": unique}`` (when used) from the
        outputs of :meth:`consumers`."""
        out: dict[str, dict[str, Tensor]] = {}
        for m in self.modalities:
            h = list(hidden[m])
            if len(h) != len(self.consumers(m)):
                raise ValueError(
                    f"modality {m!r}: expected {len(self.consumers(m))} consumer outputs, "
                    f"got {len(h)}"
                )
            parts: dict[str, Tensor] = {}
            if self.alignment != "none":
                parts["z"] = self.heads[m].forward_from_hidden(h.pop(0))
            if self.distancing != "none":
                parts["g"], parts["u"] = h
            out[m] = parts
        return out

    def forward_from_hidden(self, hidden: Mapping[str, Sequence[Tensor]]) -> dict[str, Tensor]:
        """Loss terms from the outputs of :meth:`consumers` (one list per modality)."""
        parts = self.parts(hidden)
        terms: dict[str, Tensor] = {}
        if self.alignment != "none":
            fn = solosim_loss if self.alignment == "solosim" else info_nce_loss
            losses = [
                fn(parts[a]["z"], parts[b]["z"], self.temperature, chunk_size=self.chunk_size)
                for a, b in self.pairs
            ]
            terms["align"] = self.align_weight * torch.stack(losses).mean()
        if self.distancing != "none":
            if self.distancing == "club":
                bounds = [
                    self.club_for(m)(parts[m]["g"], parts[m]["u"], self.club_estimator)
                    for m in self.modalities
                ]
                if self.training and torch.is_grad_enabled():
                    self._remember(parts)
            else:
                bounds = [negative_l2_loss(parts[m]["g"], parts[m]["u"]) for m in self.modalities]
            terms["dis"] = self.dist_weight * torch.stack(bounds).mean()
        return terms

    def forward(self, reps: Mapping[str, Tensor]) -> dict[str, Tensor]:
        r"""Loss terms for per-modality item representations ``{m: (N, D_m)}``."""
        missing = [m for m in self.modalities if m not in reps]
        if missing:
            raise ValueError(f"missing representations for modalities {missing}")
        hidden = {}
        for m in self.modalities:
            r = reps[m]
            if r.dim() != 2 or r.size(1) != self.dims[m]:
                raise ValueError(
                    f"representation of {m!r} must be (N, {self.dims[m]}), got {tuple(r.shape)}"
                )
            hidden[m] = [r[:, a:b] if c is None else c(r[:, a:b]) for c, (a, b) in
                         self.consumers(m)]
        return self.forward_from_hidden(hidden)

    # ---------------------------------------------------------------- estimators
    def _remember(self, parts: dict[str, dict[str, Tensor]]) -> None:
        """Keeps the detached fitting pairs of this forward, grouped by estimator as
        :func:`~sea_pyg.nn.losses.club_gradient_step` takes them."""
        if self.club_fit == "cross_modal":
            pairs = [(parts[a][k], parts[b][k]) for a, b in self.pairs for k in ("g", "u")]
            groups = [(self.clubs["shared"], pairs)]
        elif self.club_shared:
            groups = [(self.clubs["shared"], [(parts[m]["g"], parts[m]["u"])
                                              for m in self.modalities])]
        else:
            groups = [(self.clubs[m], [(parts[m]["g"], parts[m]["u"])]) for m in self.modalities]
        self._pending = [(club, [(x.detach(), y.detach()) for x, y in pairs])
                         for club, pairs in groups]

    def _club_step(self) -> GradientStep | None:
        """The gradient step of the CLUB estimators on the pairs of the last training
        :meth:`forward` (consumed: ``None`` until the next one)."""
        pending, self._pending = self._pending, []
        return club_gradient_step(pending) if pending else None

    def auxiliary_estimators(self) -> list[AuxiliaryEstimator]:
        """The CLUB estimators, as one :class:`~sea_pyg.nn.AuxiliaryEstimator` named
        ``"club_nll"`` (the summed learning loss it logs); empty without CLUB distancing."""
        if not len(self.clubs):
            return []
        return [
            AuxiliaryEstimator(
                "club_nll", tuple(self.clubs.parameters()), self.club_lr, self.club_steps,
                self._club_step,
            )
        ]

    def estimator_parameters(self):
        """Parameters of the CLUB estimators (fitted by their own optimizer, not the host's)."""
        return self.clubs.parameters()

    def extra_repr(self) -> str:
        return (
            f"dims={self.dims}, split={self.split}, alignment={self.alignment!r}, "
            f"distancing={self.distancing!r}, align_weight={self.align_weight}, "
            f"dist_weight={self.dist_weight}, club_fit={self.club_fit!r}, "
            f"club_shared={self.club_shared}, club_steps={self.club_steps}"
        )
