"""Mini-batches of training triples under the MMRec protocol."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["BPRSampler"]


class BPRSampler:
    r"""Shuffled mini-batches of ``(user, positive item, negative item)`` training triples.

    It follows MMRec's ``TrainDataLoader`` (see ``docs/protocol.md``):

    * every epoch visits every training row exactly once, in a fresh random order, in
      consecutive batches of ``batch_size`` (the last one partial), ``len = ceil(E / B)``;
    * one negative per row, redrawn every time a batch is built (so fresh every epoch),
      uniformly from the items that occur in the **training** split, rejecting (and redrawing)
      items the user has in **training**. Validation/test items of the user may be drawn.

    Sampling is vectorised: a whole batch is drawn at once and only the rejected entries are
    redrawn, membership being a ``searchsorted`` over the sorted keys ``user * num_items + item``.

    Args:
        edge_index: Training interactions ``(2, E)``, row 0 users, row 1 items. Duplicate rows
            are kept as separate training rows, as MMRec does.
        num_users: Number of users.
        num_items: Number of items.
        batch_size: Rows per batch (MMRec: 2048).
        negatives: Draw one negative per row (``(3, B)`` batches). With ``False`` batches are
            ``(2, B)`` ``[users; items]`` (MMRec's ``use_neg_sampling: False``, used by BM3).
        generator: A seeded :class:`torch.Generator` (CPU) controlling order and negatives.
        device: Where to put the batches (built on the CPU; to a CUDA device they go from
            page-locked memory, asynchronously).
    """

    def __init__(
        self,
        edge_index: Tensor,
        num_users: int,
        num_items: int,
        batch_size: int = 2048,
        negatives: bool = True,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(
                f"BPRSampler: `edge_index` must have shape (2, E), got {tuple(edge_index.shape)}"
            )
        if edge_index.size(1) == 0:
            raise ValueError("BPRSampler: `edge_index` is empty; there is nothing to train on")
        if batch_size < 1:
            raise ValueError(f"BPRSampler: `batch_size` must be >= 1, got {batch_size}")
        edge_index = edge_index.detach().to("cpu", torch.long)
        users, items = edge_index[0], edge_index[1]
        if int(users.min()) < 0 or int(users.max()) >= num_users:
            raise ValueError("BPRSampler: user ids in `edge_index` must lie in [0, num_users)")
        if int(items.min()) < 0 or int(items.max()) >= num_items:
            raise ValueError("BPRSampler: item ids in `edge_index` must lie in [0, num_items)")
        self.users = users.contiguous()
        self.items = items.contiguous()
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.negatives = negatives
        self.generator = generator if generator is not None else torch.Generator()
        self.device = torch.device(device)
        # Negative candidates: items seen in training (MMRec's `all_items`).
        self.candidates = torch.unique(items)
        # Sorted unique keys of (user, train item) pairs for the rejection test.
        self.keys = torch.unique(users * self.num_items + items)
        if negatives:
            per_user = torch.bincount(self.keys // self.num_items, minlength=self.num_users)
            worst = int(per_user.max())
            if worst >= self.candidates.numel():
                u = int(per_user.argmax())
                raise ValueError(
                    f"BPRSampler: user {u} has interacted with every candidate item in training "
                    f"({worst} of {self.candidates.numel()}), so no negative can be drawn"
                )

    def __len__(self) -> int:
        return -(-self.users.numel() // self.batch_size)

    @property
    def num_rows(self) -> int:
        return self.users.numel()

    def _is_train_pair(self, users: Tensor, items: Tensor) -> Tensor:
        q = users * self.num_items + items
        pos = torch.searchsorted(self.keys, q).clamp_(max=self.keys.numel() - 1)
        return self.keys[pos] == q

    def sample_negatives(self, users: Tensor) -> Tensor:
        """Draw one valid negative item for each entry of ``users`` (CPU long tensor)."""
        n_cand = self.candidates.numel()
        idx = torch.randint(n_cand, (users.numel(),), generator=self.generator)
        neg = self.candidates[idx]
        bad = self._is_train_pair(users, neg)
        while bool(bad.any()):
            where = bad.nonzero().view(-1)
            idx = torch.randint(n_cand, (where.numel(),), generator=self.generator)
            neg[where] = self.candidates[idx]
            bad_sub = self._is_train_pair(users[where], neg[where])
            bad = torch.zeros_like(bad)
            bad[where] = bad_sub
        return neg

    def __iter__(self) -> Iterator[Tensor]:
        perm = torch.randperm(self.users.numel(), generator=self.generator)
        for start in range(0, perm.numel(), self.batch_size):
            rows = perm[start : start + self.batch_size]
            u, i = self.users[rows], self.items[rows]
            if self.negatives:
                batch = torch.stack([u, i, self.sample_negatives(u)])
            else:
                batch = torch.stack([u, i])
            if self.device.type == "cuda":  # page-locked: the copy overlaps the GPU's work
                batch = batch.pin_memory()
            yield batch.to(self.device, non_blocking=True)
