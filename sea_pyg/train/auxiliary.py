r"""Fitting auxiliary estimators (SEA's CLUB networks) inside the training step.

A module declares its estimators (:class:`~sea_pyg.nn.AuxiliaryEstimator`: parameters,
learning rate, inner steps, gradient); this module owns what trains them: their optimizers,
the inner loop run between the model's ``backward()`` and its optimizer step, and the
optimizers' state in checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from sea_pyg.nn.auxiliary import AuxiliaryEstimator
from sea_pyg.nn.losses import CLUB, club_gradient_step
from sea_pyg.train.optim import adam

__all__ = ["fit_estimator", "fit_clubs", "AuxiliaryTraining"]


def _run(step, optimizer: torch.optim.Optimizer, steps: int) -> Tensor:
    loss = None
    for i in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = step(i == steps - 1)
        optimizer.step()
    return loss


def fit_estimator(
    estimator: AuxiliaryEstimator, optimizer: torch.optim.Optimizer
) -> Tensor | None:
    """Runs ``estimator.steps`` steps of ``optimizer`` on the estimator's learning loss for the
    inputs of the last training forward pass.

    Call it between your model's ``backward()`` and its optimizer step, with an optimizer over
    ``estimator.parameters`` (e.g. ``torch.optim.Adam(est.parameters, lr=est.lr)``)::

        loss.backward()
        for est, opt in zip(estimators, estimator_optimizers):
            fit_estimator(est, opt)
        optimizer.step()

    Returns:
        The learning loss of the last step (before its update), a 0-d tensor; ``None`` when
        there was nothing to fit (no training forward since the last call, or ``steps == 0``).
    """
    step = estimator.prepare()
    if step is None or estimator.steps == 0:
        return None
    return _run(step, optimizer, estimator.steps)


def fit_clubs(
    groups: Sequence[tuple[CLUB, Sequence[tuple[Tensor, Tensor]]]],
    optimizer: torch.optim.Optimizer,
    steps: int,
) -> float:
    r"""Fits several CLUB estimators at once: ``steps`` steps of ``optimizer`` on the summed
    :meth:`~sea_pyg.nn.CLUB.learning_loss` of every estimator on each of its ``(x, y)`` pairs
    (detached), with the batched, hand-written gradient of
    :func:`~sea_pyg.nn.losses.club_gradient_step` where the architecture allows it.

    Args:
        groups: Non-empty sequence of ``(club, [(x, y), ...])``.
        optimizer: An optimiser over (at least) the estimators' parameters.
        steps: Number of steps; ``0`` only evaluates the loss.

    Returns:
        The summed learning loss of the last step (before its update), as a Python float.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"`steps` must be a non-negative int, got {steps!r}")
    step = club_gradient_step(groups)
    if steps == 0:
        return float(step(True, with_grads=False))
    return float(_run(step, optimizer, steps))


class AuxiliaryTraining:
    """The optimizers of a model's auxiliary estimators and their inner loops.

    Args:
        estimators: ``[(key, estimator)]`` from
            :meth:`~sea_pyg.models.Recommender.auxiliary_estimators`.
        weight_decay: Adam weight decay of the estimators' optimizers.
    """

    def __init__(
        self, estimators: Sequence[tuple[str, AuxiliaryEstimator]], weight_decay: float = 0.0
    ) -> None:
        keys = [k for k, _ in estimators]
        if len(set(keys)) != len(keys):
            raise ValueError(f"auxiliary estimator keys must be unique, got {keys}")
        self.estimators = list(estimators)
        self.optimizers = {
            key: adam(est.parameters, lr=est.lr, weight_decay=weight_decay, betas=est.betas)
            for key, est in self.estimators
        }

    def parameter_ids(self) -> set[int]:
        """``id`` of every estimator parameter (left out of the model's optimizer)."""
        return {id(p) for _, est in self.estimators for p in est.parameters}

    def model_parameters(self, model: nn.Module) -> Iterable[nn.Parameter]:
        """``model``'s parameters that its own optimizer trains: all but the estimators'."""
        aux = self.parameter_ids()
        return (p for p in model.parameters() if id(p) not in aux)

    def step(self, skip: Tensor | None = None) -> dict[str, Tensor]:
        """Fits every estimator (call between ``backward()`` and the model's step); returns
        ``{estimator name: last learning loss}`` (0-d tensors on the estimators' device, not
        read by the host) for those that had something to fit.

        Args:
            skip: Optional 0-d boolean tensor (e.g. ``~torch.isfinite(loss)``, left on the
                device): where it is true, the inner steps run but change neither the
                estimators' parameters nor their optimizers' state, with no host read (the
                fused Adam's ``found_inf``; an optimizer without the fused kernel reads the
                flag once).
        """
        with self._one_thread():
            return self._step(skip)

    @contextmanager
    def _one_thread(self) -> Iterator[None]:
        """On the CPU, the inner steps run on one intra-op thread: each of their many small
        operators would otherwise end at an OpenMP barrier, which on a machine shared with
        other work waits for a descheduled thread (measured in docs/performance.md)."""
        before = torch.get_num_threads()
        on_cpu = any(p.device.type == "cpu" for _, est in self.estimators
                     for p in est.parameters[:1])
        if before == 1 or not on_cpu:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def _step(self, skip: Tensor | None) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for key, est in self.estimators:
            opt = self.optimizers[key]
            if skip is not None and not opt.defaults.get("fused"):
                if bool(skip):  # no device-side skip without the fused kernel
                    est.prepare()  # consume the pass's inputs, as a fit would
                    continue
                loss = fit_estimator(est, opt)
            elif skip is not None:
                opt.found_inf = skip.detach().to(torch.float32).reshape(())
                try:
                    loss = fit_estimator(est, opt)
                finally:
                    del opt.found_inf
            else:
                loss = fit_estimator(est, opt)
            if loss is not None:
                out[est.name] = loss
        return out

    def state_dict(self) -> dict:
        return {key: opt.state_dict() for key, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != set(self.optimizers):
            legacy = state.get("club_optimizer")  # checkpoints of format version 1
            if legacy is not None and len(self.optimizers) == 1:
                state = {next(iter(self.optimizers)): legacy}
        for key, opt in self.optimizers.items():
            if state.get(key):
                opt.load_state_dict(state[key])
