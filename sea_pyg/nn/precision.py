r"""Sparse products under mixed precision: always float32, outside autocast.

Under :func:`torch.autocast` (``sea-pyg train --precision bf16``) a product with a torch sparse
matrix is not something to leave to autocast: it casts both operands of ``mm`` / ``matmul``,
the CSR matrix included, and CPU has no bfloat16 CSR kernel (``"addmm_out_sparse_csr_impl_mkl"
not implemented for 'BFloat16'``). Graph products here therefore run in float32:

* they are memory-bound (a few multiply-adds per stored edge), so bfloat16 arithmetic would
  save little time;
* a node's sum over hundreds of neighbours keeps float32 accuracy (bfloat16 keeps 8
  significant bits).

:func:`full_precision` wraps such a function: called under autocast, it switches autocast off
for the call and takes its bfloat16 / float16 dense tensor arguments to float32 (the sparse
matrices are float32 already); its result is float32, and the next autocast product casts it
again. Called without autocast (float32 training, evaluation) it is the plain call: no cast,
the same numbers. Autograd records the casts, so gradients flow back in the inputs' dtypes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["full_precision", "sparse_mm"]

F = TypeVar("F", bound=Callable[..., Any])

_LOW = (torch.bfloat16, torch.float16)


def _device_type(args: tuple, kwargs: dict) -> str | None:
    for a in (*args, *kwargs.values()):
        if isinstance(a, Tensor):
            return a.device.type
    return None


def _float32(a: Any) -> Any:
    if isinstance(a, Tensor) and a.dtype in _LOW:
        return a.float()
    return a


def full_precision(fn: F) -> F:
    """Decorator: ``fn`` runs in float32 with autocast off when called under autocast on the
    device of its first tensor argument (its bfloat16 / float16 tensor arguments are cast to
    float32 first); otherwise it is called unchanged."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        device = _device_type(args, kwargs)
        if device is None or not torch.is_autocast_enabled(device):
            return fn(*args, **kwargs)
        with torch.autocast(device_type=device, enabled=False):
            return fn(*[_float32(a) for a in args], **{k: _float32(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


@full_precision
def sparse_mm(adj: Tensor, x: Tensor) -> Tensor:
    """``adj @ x`` for a torch sparse (CSR or COO) ``adj`` and a dense ``x``; in float32 under
    autocast (:func:`full_precision`)."""
    return adj @ x
