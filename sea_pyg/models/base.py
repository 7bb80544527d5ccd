"""The small interface between a recommender and :class:`sea_pyg.train.Trainer`."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = ["Recommender"]


class Recommender(nn.Module):
    """Base class of every model the trainer can fit.

    A subclass implements :meth:`loss` and :meth:`embeddings`; the hooks have sensible defaults.

    * :meth:`loss` takes one mini-batch from :class:`~sea_pyg.data.BPRSampler` (a ``(3, B)``
      tensor ``[users; positives; negatives]``, or ``(2, B)`` when :attr:`uses_negatives` is
      ``False``) and returns a dict of **named, already weighted** loss terms; the trainer
      back-propagates their sum and logs each term.
    * :meth:`embeddings` returns ``(user_emb, item_emb)`` over the full graph such that the
      score of user ``u`` for item ``i`` is ``user_emb[u] @ item_emb[i]``. The trainer calls it
      under ``torch.no_grad()`` in eval mode before ranking all items.
    * :meth:`pre_epoch` runs before each training epoch (e.g. FREEDOM's edge pruning).
    * :meth:`after_backward` runs between the model's ``backward()`` and its optimizer step:
      auxiliary estimators (e.g. a CLUB network) take their own optimisation steps here.
    * :meth:`optimizer_parameters` are the parameters of the model's own optimizer; parameters of
      auxiliary estimators with their own optimizer must be left out.
    """

    #: Whether the model's batches carry a sampled negative item (``(3, B)``).
    uses_negatives: bool = True

    def loss(self, batch: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def embeddings(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def pre_epoch(self, epoch: int) -> None:  # noqa: B027 - optional hook
        """Hook called before training epoch ``epoch`` (0-based)."""

    def after_backward(self) -> dict[str, float]:
        """Hook between ``backward()`` and the optimizer step; returns values to log."""
        return {}

    def optimizer_parameters(self) -> Iterator[nn.Parameter]:
        return self.parameters()

    def auxiliary_state_dict(self) -> dict:
        """State of auxiliary optimizers (saved in checkpoints for an exact resume)."""
        return {}

    def load_auxiliary_state_dict(self, state: dict) -> None:  # noqa: B027 - optional hook
        """Restore what :meth:`auxiliary_state_dict` returned."""

    @torch.no_grad()
    def score(self, users: Tensor) -> Tensor:
        """Scores of ``users`` over all items (recomputes the embeddings)."""
        user_emb, item_emb = self.embeddings()
        return user_emb[users] @ item_emb.t()
