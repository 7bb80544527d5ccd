r"""Batch statistics of a data-parallel step (``torchrun``, see
:mod:`sea_pyg.train.distributed`).

In a data-parallel step every process computes a model's loss on its slice of the global
batch. A loss term that is a mean over the batch's rows needs nothing more (the trainer weights
each slice by its share of the rows), but a term that is a non-linear function of a sum over
the rows (MMRec's un-squared embedding norm :math:`\|E\|_F / B`, :func:`~sea_pyg.nn.emb_loss`)
needs the sum over the *whole* batch. :func:`sharded_sum` gives it: inside
:func:`data_parallel_step` it sums a tensor over the processes, differentiably (the backward
pass sums the incoming gradients over the processes too); elsewhere, and in one process, it is
the identity.

Why the gradient is right: a term :math:`T = f(S)`, :math:`S = \sum_r s_r`, is the same value
on every rank; rank :math:`r` back-propagates :math:`W w_r T` (:math:`\sum_r w_r = 1`), so
:math:`\partial / \partial s_r` of the whole objective is :math:`\sum_q W w_q f'(S) = W f'(S)`
(the backward all-reduce), and DDP's average over the :math:`W` ranks of
:math:`W f'(S) \nabla s_r` is :math:`f'(S) \sum_r \nabla s_r = \nabla T`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["data_parallel_step", "sharded_sum", "in_data_parallel_step"]

_GROUP: list[Any] = []  # the process group of the step in progress (empty: none)


@contextlib.contextmanager
def data_parallel_step(group: Any = None) -> Iterator[None]:
    """Marks a model's loss computation on one slice of a data-parallel batch: inside it,
    :func:`sharded_sum` sums over the processes of ``group`` (default: the whole world).
    Every process must enter it for the same steps (its sums are collective)."""
    _GROUP.append(group)
    try:
        yield
    finally:
        _GROUP.pop()


def in_data_parallel_step() -> bool:
    """Whether a :func:`data_parallel_step` is in progress in a process group of several
    processes."""
    return (
        bool(_GROUP)
        and dist.is_available()
        and dist.is_initialized()
        and (dist.get_world_size(_GROUP[-1]) > 1)
    )


class _SumOverProcesses(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def sharded_sum(x: Tensor) -> Tensor:
    r""":math:`\sum_r x_r` over the processes inside a :func:`data_parallel_step` (with the
    gradient of that sum), ``x`` itself otherwise."""
    if not in_data_parallel_step():
        return x
    return _SumOverProcesses.apply(x, _GROUP[-1])
