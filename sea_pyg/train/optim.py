"""Optimizer construction for the trainer (the model's and its auxiliary estimators' optimizers)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["adam", "step_unless"]


def adam(
    params: Iterable[torch.nn.Parameter],
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
):
    """``torch.optim.Adam`` with the fused kernel when every parameter allows it.

    The fused implementation computes the same update as the default one (up to rounding) in
    one kernel per step: measured here on a 4096 x 4096 + 256 x 4096 parameter set, 20 ms per
    step instead of 250 ms (single-tensor) or 150 ms (``foreach``). It needs floating-point
    parameters on a CPU or CUDA device; otherwise the default implementation is used.
    """
    params = list(params)
    fused = bool(params) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params
    )
    return torch.optim.Adam(
        params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=fused or None
    )


def step_unless(optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> None:
    """``optimizer.step()`` unless the 0-d bool tensor ``bad`` is true (e.g. a non-finite
    loss), without reading ``bad`` on the host when the optimizer is a fused Adam (as
    :func:`adam` builds): its ``found_inf`` makes the kernel leave the parameters, the moments
    and the step count as they are. Other optimizers read the flag (one host round trip)."""
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = bad.to(torch.float32)
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif not bool(bad):
        optimizer.step()
