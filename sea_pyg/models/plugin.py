r"""Add SEA's separate-learning module to any host recommender (VBPR+SEA, FREEDOM+SEA, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from sea_pyg.models.base import MultimodalRecommender, Recommender
from sea_pyg.nn.separate import SeparateLearning

__all__ = ["WithSeparateLearning"]


class WithSeparateLearning(Recommender):
    r"""A host recommender plus SEA's separate-learning losses on its per-modality item
    representations.

    The host is any :class:`~sea_pyg.models.MultimodalRecommender`. Every training
    mini-batch, the wrapper takes the representations of **all** :math:`N` items
    :math:`\{\mathbf{R}^m\}` from the host's own forward pass
    (``host.forward_train(batch, all_modal_items=True).modal``, so they are computed once)
    and adds the terms of a
    :class:`~sea_pyg.nn.SeparateLearning` module on them (generic/unique split, alignment of the
    generic parts, distancing of generic and unique parts):

    .. math::
        \mathcal{L} = \mathcal{L}_\text{host}
        + \alpha\, \mathcal{L}_\text{align}(\{\mathbf{R}^m\})
        + \beta\, \mathcal{L}_\text{dis}(\{\mathbf{R}^m\})

    The separate terms are logged as ``<term_prefix>align`` and ``<term_prefix>dis``.

    * **Delegation.** Scores (:meth:`embeddings`, :meth:`score`), :meth:`pre_epoch` (e.g.
      FREEDOM's edge pruning), :attr:`uses_negatives` and :attr:`pretrain_epochs` are the
      host's.
    * **Estimators.** The CLUB estimators are declared by the module
      (:meth:`~sea_pyg.nn.SeparateLearning.auxiliary_estimators`); the trainer fits them
      between the backward and the optimizer step, as the official trainer does, keeps them
      out of the model's optimizer and checkpoints their optimizer state.

    The losses reach exactly the parameters that produce ``R^m``; whether those also produce the
    scores depends on the host (for VBPR they do; for FREEDOM only with
    ``fuse_modalities=True``, see ``docs/models.md``).

    Args:
        host: The host recommender.
        dims: Size :math:`D_m` of each modality's representation, in modality order. ``None``
            reads them from the host (:meth:`~sea_pyg.models.MultimodalRecommender.modal_dims`).
        term_prefix: Prefix of the separate-learning loss names (default ``"sea_"``: avoids
            clashes with host terms such as BM3's ``align``).
        trans_dim: As in :class:`~sea_pyg.nn.SeparateLearning`; the plug-in default ``None``
            compares the generic and unique halves directly (the authors' VBPR+SEA and
            FREEDOM+SEA runs, reference.md 5).
        club_lr: Learning rate of the CLUB estimators; the plug-in default is the MMRec hosts'
            learning rate, 1e-3.
        chunk_size: Rows per chunk of the alignment logits; ``"auto"`` (default): the dense
            :math:`N \times N` matrix up to 8,192 items, chunks of 2,048 rows above.
        **separate: The other keyword arguments of :class:`~sea_pyg.nn.SeparateLearning`
            (``split``, ``alignment``, ``distancing``, ``align_weight``, ``dist_weight``,
            ``temperature``, ``proj_hidden_dim``, ``proj_dim``, ``club_*``), with its defaults.
            With one modality, ``alignment`` defaults to ``"none"``.

    Example:
        >>> model = WithSeparateLearning(VBPR(num_users, features))
        >>> terms = model.loss(batch)  # {"bpr", "reg", "sea_align", "sea_dis"}
    """

    #: ``**separate`` takes :class:`~sea_pyg.nn.SeparateLearning`'s hyper-parameters.
    forwards_kwargs_to = SeparateLearning
    #: Constructor arguments that are not hyper-parameters.
    structural_arguments = ("dims", "term_prefix")

    def __init__(
        self,
        host: MultimodalRecommender,
        dims: Mapping[str, int] | None = None,
        term_prefix: str = "sea_",
        trans_dim: int | None = None,
        club_lr: float = 1e-3,
        chunk_size: int | str | None = "auto",
        **separate: Any,
    ) -> None:
        super().__init__()
        if not isinstance(host, MultimodalRecommender):
            raise TypeError(
                f"{type(host).__name__} cannot host separate learning: it is not a "
                "MultimodalRecommender (per-modality item representations, forward_train and "
                "loss_terms; see sea_pyg.models.base)"
            )
        self.host = host
        dims = host.modal_dims() if dims is None else dims
        dims = {str(m): int(d) for m, d in dims.items()}
        if len(dims) == 1:
            separate.setdefault("alignment", "none")
        if chunk_size == "auto":
            chunk_size = None if int(host.num_items) <= 8192 else 2048
        self.term_prefix = term_prefix
        self.separate = SeparateLearning(
            dims, trans_dim=trans_dim, club_lr=club_lr, chunk_size=chunk_size, **separate
        )

    # ------------------------------------------------------------------ delegation
    @property
    def uses_negatives(self) -> bool:  # type: ignore[override]
        return self.host.uses_negatives

    @property
    def modalities(self) -> list[str]:
        return list(self.separate.modalities)

    @property
    def num_items(self) -> int:
        return int(self.host.num_items)

    @property
    def pretrain_epochs(self) -> int:  # type: ignore[override]
        return int(self.host.pretrain_epochs)

    def embeddings(self) -> tuple[Tensor, Tensor]:
        return self.host.embeddings()

    def scoring_state(self) -> Any:
        return self.host.scoring_state()

    def score(self, users: Tensor, state: Any = None) -> Tensor:
        return self.host.score(users, state)

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
        """The host's loss terms for ``batch`` and its representations of all items, from one
        forward pass."""
        out = self.host.forward_train(batch, all_modal_items=True)
        if out.modal is None or out.modal_items is not None:
            raise RuntimeError(
                f"{type(self.host).__name__}.forward_train(all_modal_items=True) did not return "
                "the representations of all items; separate learning needs all of them"
            )
        return self.host.loss_terms(out), out.modal

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

    def extra_repr(self) -> str:
        return f"term_prefix={self.term_prefix!r}"
