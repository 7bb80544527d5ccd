"""Shared argument validators of the losses: temperatures, chunk sizes and ``(N, D)`` row
tensors.
"""

from __future__ import annotations

import math
import numbers

from torch import Tensor

# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ValueError(
            f"`temperature` must be a positive float, got {type(temperature).__name__}"
        )
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"`temperature` must be a finite number > 0 (e.g. 0.2), got {temperature}")
    return float(temperature)


def _check_chunk_size(chunk_size: int | None) -> int | None:
    if chunk_size is None:
        return None
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, numbers.Integral)
        or chunk_size < 1
    ):
        raise ValueError(
            f"`chunk_size` must be None (dense) or a positive int number of rows, "
            f"got {chunk_size!r}"
        )
    return int(chunk_size)


def _check_rows(x: Tensor, name: str, dim: int | None = None) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(
            f"`{name}` must be a 2-D tensor of shape (N, D), got shape {tuple(x.shape)}"
        )
    if x.size(0) == 0:
        raise ValueError(f"`{name}` must have at least one row, got shape {tuple(x.shape)}")
    if dim is not None and x.size(1) != dim:
        raise ValueError(
            f"`{name}` must have {dim} columns (as configured), got shape {tuple(x.shape)}"
        )


def _check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    _check_rows(a, name_a)
    _check_rows(b, name_b)
    if a.shape != b.shape:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same shape (N, D) with row i of one "
            f"paired with row i of the other, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
