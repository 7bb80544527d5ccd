r"""Auxiliary estimators: networks fitted by their own optimizer inside a host's training step.

SEA's CLUB networks :math:`q_\theta` are not trained by the recommender's loss: after the
recommender's ``backward()`` and before its optimizer step, each estimator takes ``steps``
optimizer steps of its own learning loss on the (detached) pairs of the last forward pass.
A module that owns such an estimator **declares** it with an :class:`AuxiliaryEstimator`
(its parameters, learning rate, number of inner steps, and how to compute its gradient); it
builds no optimizer and runs no loop. The trainer (:class:`sea_pyg.train.Trainer`, or
:func:`sea_pyg.train.fit_estimator` in a loop of your own) owns the optimizer, runs the inner
steps and checkpoints the optimizer state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["GradientStep", "AuxiliaryEstimator"]

#: ``step(with_loss) -> loss or None``: computes the estimator's learning loss on fixed inputs
#: and **sets** (or accumulates into zeroed) ``.grad`` of its parameters; returns the loss
#: (a 0-d tensor, before the update) when ``with_loss`` is true, else ``None`` (cheaper).
GradientStep = Callable[[bool], "Tensor | None"]


@dataclass(frozen=True)
class AuxiliaryEstimator:
    """Declaration of an estimator trained between the host's ``backward()`` and its step.

    Attributes:
        name: Name of the logged learning loss (e.g. ``"club_nll"``).
        parameters: The estimator's parameters. They are left out of the host's optimizer.
        lr: Learning rate of the estimator's own Adam optimizer.
        steps: Inner steps after every host mini-batch (``0``: never fitted).
        prepare: Called once per host step, after ``backward()``: returns the
            :data:`GradientStep` for the inputs of the last training forward pass, or ``None``
            when there is nothing to fit (e.g. the forward ran in eval mode).
        betas: Adam's ``(beta1, beta2)`` of the estimator's optimizer (default
            PyTorch's; e.g. ``(0.5, 0.9)`` for a WGAN-GP critic).
    """

    name: str
    parameters: tuple[nn.Parameter, ...]
    lr: float
    steps: int
    prepare: Callable[[], GradientStep | None]
    betas: tuple[float, float] = (0.9, 0.999)
