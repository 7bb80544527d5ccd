r"""Wasserstein adversarial training: a critic over rows and its gradient-penalised loss.

A generator (part of a host model) produces "fake" rows :math:`\mathbf{x}_f`; "real" rows
:math:`\mathbf{x}_r` come from the data. The critic :math:`D` is fitted by its **own** optimizer
(it is declared as an :class:`~sea_pyg.nn.AuxiliaryEstimator`: the trainer runs its steps
between the host's ``backward()`` and the host's optimizer step) on the WGAN-GP loss
(Gulrajani et al., 2017)

.. math::
    \mathcal{L}_D = -\operatorname{mean}_r D(\mathbf{x}_r) + \operatorname{mean}_f D(\mathbf{x}_f)
    + \lambda_{gp}\, \operatorname{mean}_b \big(\lVert \nabla_{\hat{\mathbf{x}}}
    D(\hat{\mathbf{x}}_b) \rVert_2 - 1\big)^2, \qquad
    \hat{\mathbf{x}}_b = \alpha_b \mathbf{x}_{r,b} + (1 - \alpha_b)\, \mathbf{x}_{f,b},
    \quad \alpha_b \sim U(0, 1),

while the host adds the generator's term :math:`-\operatorname{mean}_f D(\mathbf{x}_f)` (with
its weight) to its own loss (:meth:`WassersteinCritic.generator_loss`). MMSSL
(:class:`~sea_pyg.models.MMSSL`) uses it on user rows over all items.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sea_pyg.nn.auxiliary import AuxiliaryEstimator, GradientStep

__all__ = ["gradient_penalty", "WassersteinCritic"]


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, alpha: Tensor) -> Tensor:
    r"""WGAN-GP penalty :math:`\operatorname{mean}_b (\lVert \nabla D(\hat{\mathbf{x}}_b)
    \rVert_2 - 1)^2` at :math:`\hat{\mathbf{x}}_b = \alpha_b \mathbf{x}_{r,b} + (1 - \alpha_b)
    \mathbf{x}_{f,b}` (``real`` and ``fake`` are detached first).

    The gradient is taken with ``create_graph=True``, so the penalty back-propagates into the
    critic's parameters.

    Args:
        critic: Maps ``(B, F)`` rows to ``(B,)`` scores.
        real: ``(B, F)``.
        fake: ``(B, F)``.
        alpha: ``(B, 1)`` (or ``(B,)``) mixing weights in ``[0, 1]``.
    """
    if real.shape != fake.shape or real.dim() != 2:
        raise ValueError(
            f"`real` and `fake` must be (B, F) tensors of one shape, got {tuple(real.shape)} "
            f"and {tuple(fake.shape)}"
        )
    alpha = alpha.reshape(-1, 1).to(real.dtype)
    if alpha.size(0) != real.size(0):
        raise ValueError(f"`alpha` needs one value per row ({real.size(0)}), got {alpha.size(0)}")
    x = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    with torch.enable_grad():
        out = critic(x)
        (grad,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()


class WassersteinCritic(nn.Module):
    r"""An MLP critic over ``in_dim``-wide rows, trained by its own optimizer on WGAN-GP.

    .. math::
        D(\mathbf{x}) = s\,\sigma\big(W_{L+1}\, h_L\big), \qquad
        h_l = \operatorname{Dropout}_{p_l}\big(\operatorname{BN}(\operatorname{LeakyReLU}_a
        (W_l h_{l-1} + b_l))\big), \quad h_0 = \mathbf{x}

    (MMSSL's discriminator: hidden sizes ``in_dim/4, in_dim/8``, dropouts 0.31 / 0.5, scale
    :math:`s = 100`; its ``nn.LeakyReLU(True)`` sets the negative slope :math:`a` to 1, i.e.
    the identity). Linear weights are ``kaiming_normal_``, biases zero.

    The host calls :meth:`remember` with the detached real and fake rows of each training
    forward; :meth:`auxiliary_estimators` declares the critic to the trainer, which then runs
    ``steps`` Adam steps (learning rate ``lr``, ``betas``) of :meth:`critic_loss` on them.

    Args:
        in_dim: Row width :math:`F`.
        hidden: Hidden layer sizes (each ``>= 1``).
        dropout: Dropout after each hidden layer (one per hidden layer).
        negative_slope: LeakyReLU slope :math:`a` (``1.0``: linear, as MMSSL's code).
        scale: Output scale :math:`s`.
        gp_weight: :math:`\lambda_{gp}`.
        lr: Learning rate of the critic's Adam optimizer.
        betas: Its Adam betas.
        steps: Critic steps per host step.
        name: Name of the logged critic loss.

    Shapes:
        - **input:** ``(B, F)``
        - **output:** ``(B,)``
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        dropout: Sequence[float],
        negative_slope: float = 0.01,
        scale: float = 1.0,
        gp_weight: float = 10.0,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.9),
        steps: int = 1,
        name: str = "critic_loss",
    ) -> None:
        super().__init__()
        hidden, dropout = [int(h) for h in hidden], [float(p) for p in dropout]
        if in_dim < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"critic sizes must be >= 1, got in_dim={in_dim}, hidden={hidden}")
        if len(dropout) != len(hidden) or any(not 0.0 <= p < 1.0 for p in dropout):
            raise ValueError(
                f"`dropout` needs one value in [0, 1) per hidden layer ({len(hidden)}), got "
                f"{dropout}"
            )
        if gp_weight < 0 or lr <= 0 or steps < 0:
            raise ValueError(
                f"need gp_weight >= 0, lr > 0 and steps >= 0, got {gp_weight}, {lr}, {steps}"
            )
        layers: list[nn.Module] = []
        width = in_dim
        for h, p in zip(hidden, dropout, strict=True):
            layers += [
                nn.Linear(width, h),
                nn.LeakyReLU(negative_slope),
                nn.BatchNorm1d(h),
                nn.Dropout(p),
            ]
            width = h
        layers += [nn.Linear(width, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        self.in_dim, self.scale, self.gp_weight = int(in_dim), float(scale), float(gp_weight)
        self.lr, self.betas, self.steps, self.name = float(lr), tuple(betas), int(steps), name
        self._pending: tuple[Tensor, Tensor] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight)
                nn.init.zeros_(layer.bias)
            elif isinstance(layer, nn.BatchNorm1d):
                layer.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * self.net(x).view(-1)

    def generator_loss(self, fake: Tensor) -> Tensor:
        r"""The generator's term :math:`-\operatorname{mean} D(\mathbf{x}_f)` (gradients reach
        ``fake``; the critic's own parameters are left to its optimizer)."""
        return -self(fake).mean()

    def critic_loss(self, real: Tensor, fake: Tensor, alpha: Tensor | None = None) -> Tensor:
        r""":math:`\mathcal{L}_D` on detached rows; ``alpha`` ``(B, 1)`` defaults to
        :math:`U(0, 1)` draws from the global RNG."""
        real, fake = real.detach(), fake.detach()
        if alpha is None:
            alpha = torch.rand(real.size(0), 1, device=real.device, dtype=real.dtype)
        loss = -self(real).mean() + self(fake).mean()
        if self.gp_weight:
            loss = loss + self.gp_weight * gradient_penalty(self, real, fake, alpha)
        return loss

    # ---------------------------------------------------------------- estimator
    def remember(self, real: Tensor, fake: Tensor) -> None:
        """Keeps the detached rows of this training forward for the next critic step."""
        if real.shape != fake.shape or real.dim() != 2 or real.size(1) != self.in_dim:
            raise ValueError(
                f"real and fake rows must both be (B, {self.in_dim}), got {tuple(real.shape)} "
                f"and {tuple(fake.shape)}"
            )
        self._pending = (real.detach(), fake.detach())

    def _prepare(self) -> GradientStep | None:
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        real, fake = pending
        params = tuple(self.parameters())

        def step(with_loss: bool) -> Tensor | None:
            with torch.enable_grad():
                loss = self.critic_loss(real, fake)
                grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            return loss.detach() if with_loss else None

        return step

    def auxiliary_estimators(self) -> list[AuxiliaryEstimator]:
        """The critic as one :class:`~sea_pyg.nn.AuxiliaryEstimator` (logged as ``name``)."""
        return [
            AuxiliaryEstimator(
                self.name, tuple(self.parameters()), self.lr, self.steps, self._prepare, self.betas
            )
        ]

    def extra_repr(self) -> str:
        return f"scale={self.scale}, gp_weight={self.gp_weight}, lr={self.lr}, steps={self.steps}"
