r"""Add SEA's separate-learning module to any host recommender (VBPR+SEA, FREEDOM+SEA, ...)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from sea_pyg.models.base import Recommender
from sea_pyg.nn.separate import SeparateLearning

__all__ = ["WithSeparateLearning"]


class WithSeparateLearning(Recommender):
    r"""A host recommender plus SEA's separate-learning losses on its per-modality item
    representations.

    The host must provide ``modal_item_representations(items=None) -> {m: (N, D_m)}``. Every
    training mini-batch, the wrapper takes the representations of **all** :math:`N` items
    :math:`\{\mathbf{R}^m\}` from the host's own forward pass and adds the terms of a
    :class:`~sea_pyg.nn.SeparateLearning` module on them (generic/unique split, alignment of the
    generic parts, distancing of generic and unique parts):

    .. math::
        \mathcal{L} = \mathcal{L}_\text{host}
        + \alpha\, \mathcal{L}_\text{align}(\{\mathbf{R}^m\})
        + \beta\, \mathcal{L}_\text{dis}(\{\mathbf{R}^m\})

    The separate terms are logged as ``<term_prefix>align`` and ``<term_prefix>dis``.

    * **One forward pass.** When the host has the plug-in methods ``_forward_train(batch,
      all_modal_items=True)`` (returning ``"modal"``, the representations of all items) and
      ``_loss_terms(out)`` (as :class:`~sea_pyg.models.VBPR`, :class:`~sea_pyg.models.FREEDOM`
      and :class:`~sea_pyg.models.BM3` do), the representations come from the very forward pass
      that produced the host's loss. Otherwise the wrapper calls ``host.loss(batch)`` and then
      ``host.modal_item_representations()`` (a second computation of the representations).
    * **Delegation.** Scores (:meth:`embeddings`), :meth:`pre_epoch` (e.g. FREEDOM's edge
      pruning) and :attr:`uses_negatives` are the host's; so are the host's own hooks, which
      the wrapper's hooks call before adding the module's.
    * **Estimators.** The CLUB estimators are fitted in :meth:`after_backward` (between the
      backward and the optimizer step, as in the official trainer), are left out of
      :meth:`optimizer_parameters`, and their optimizer state is part of
      :meth:`auxiliary_state_dict` (exact resume).

    The losses reach exactly the parameters that produce ``R^m``; whether those also produce the
    scores depends on the host (for VBPR they do; for FREEDOM only with
    ``fuse_modalities=True``, see ``docs/models.md``).

    Args:
        host: The host recommender.
        dims: Size :math:`D_m` of each modality's representation, in modality order. ``None``
            reads them from ``host.modal_item_representations`` on one item.
        term_prefix: Prefix of the separate-learning loss names (default ``"sea_"``: avoids
            clashes with host terms such as BM3's ``align``).
        **separate: Keyword arguments of :class:`~sea_pyg.nn.SeparateLearning` (``split``,
            ``alignment``, ``distancing``, ``align_weight``, ``dist_weight``, ``temperature``,
            ``proj_hidden_dim``, ``proj_dim``, ``trans_dim``, ``club_*``, ``chunk_size``).
            With one modality, ``alignment`` defaults to ``"none"``.

    Example:
        >>> model = WithSeparateLearning(VBPR(num_users, features), trans_dim=None)
        >>> terms = model.loss(batch)  # {"bpr", "reg", "sea_align", "sea_dis"}
    """

    def __init__(
        self,
        host: Recommender,
        dims: Mapping[str, int] | None = None,
        term_prefix: str = "sea_",
        **separate: Any,
    ) -> None:
        super().__init__()
        if not callable(getattr(host, "modal_item_representations", None)):
            raise TypeError(
                f"{type(host).__name__} cannot host separate learning: it has no "
                "`modal_item_representations(items=None) -> {modality: (N, D_m)}` method"
            )
        self.host = host
        if dims is None:
            dims = self._probe_dims(host)
        dims = {str(m): int(d) for m, d in dims.items()}
        if len(dims) == 1:
            separate.setdefault("alignment", "none")
        self.term_prefix = term_prefix
        self.separate = SeparateLearning(dims, **separate)
        self._single_pass = callable(getattr(host, "_forward_train", None)) and callable(
            getattr(host, "_loss_terms", None)
        )

    @staticmethod
    def _probe_dims(host: Recommender) -> dict[str, int]:
        ref = next(iter(host.parameters()), None)
        device = ref.device if ref is not None else None
        with torch.no_grad():
            reps = host.modal_item_representations(torch.zeros(1, dtype=torch.long, device=device))
        return {m: int(r.size(-1)) for m, r in reps.items()}

    # ------------------------------------------------------------------ delegation
    @property
    def uses_negatives(self) -> bool:  # type: ignore[override]
        return self.host.uses_negatives

    @property
    def modalities(self) -> list[str]:
        return list(self.separate.names)

    def embeddings(self) -> tuple[Tensor, Tensor]:
        return self.host.embeddings()

    def forward(self, *args: Any, **kwargs: Any):
        return self.host(*args, **kwargs)

    def pre_epoch(self, epoch: int) -> None:
        self.host.pre_epoch(epoch)

    def modal_item_representations(self, items: Tensor | None = None) -> dict[str, Tensor]:
        return self.host.modal_item_representations(items)

    # ------------------------------------------------------------------ losses
    def host_terms_and_representations(
        self, batch: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The host's loss terms for ``batch`` and its representations of all items."""
        if self._single_pass:
            out = self.host._forward_train(batch, all_modal_items=True)
            if out.get("modal_items", None) is not None:
                raise RuntimeError(
                    f"{type(self.host).__name__}._forward_train(all_modal_items=True) returned "
                    "representations of a subset of items; separate learning needs all of them"
                )
            return self.host._loss_terms(out), out["modal"]
        return self.host.loss(batch), self.host.modal_item_representations()

    def separate_terms(self, reps: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The (weighted, prefixed) separate-learning terms for ``{m: (N, D_m)}``."""
        return {self.term_prefix + k: v for k, v in self.separate(reps).items()}

    def loss(self, batch: Tensor) -> dict[str, Tensor]:
        terms, reps = self.host_terms_and_representations(batch)
        extra = self.separate_terms(reps)
        clash = sorted(set(terms) & set(extra))
        if clash:
            raise ValueError(
                f"loss term names {clash} are used by both the host and the separate-learning "
                "module; choose another `term_prefix`"
            )
        return {**terms, **extra}

    def separate_parts(self) -> dict[str, dict[str, Tensor]]:
        """Per modality the projections ``z`` and generic/unique parts ``g``/``u`` the losses
        see, on the current representations of all items (e.g. for t-SNE figures)."""
        reps = self.host.modal_item_representations()
        hidden = {
            m: [r[:, a:b] if c is None else c(r[:, a:b]) for c, (a, b) in
                self.separate.consumers(m)]
            for m, r in reps.items() if m in self.separate.dims
        }
        return self.separate.parts(hidden)

    # ------------------------------------------------------------------ trainer hooks
    def after_backward(self) -> dict[str, float]:
        log = dict(self.host.after_backward())
        log.update(self.separate.fit_estimators())
        return log

    def optimizer_parameters(self) -> Iterator[nn.Parameter]:
        aux = {id(p) for p in self.separate.estimator_parameters()}
        yield from self.host.optimizer_parameters()
        yield from (p for p in self.separate.parameters() if id(p) not in aux)

    def auxiliary_state_dict(self) -> dict:
        return {
            "host": self.host.auxiliary_state_dict(),
            "club_optimizer": self.separate.estimator_state_dict(),
        }

    def load_auxiliary_state_dict(self, state: dict) -> None:
        self.host.load_auxiliary_state_dict(state.get("host", {}))
        self.separate.load_estimator_state_dict(state.get("club_optimizer", {}))

    def extra_repr(self) -> str:
        return f"term_prefix={self.term_prefix!r}"
