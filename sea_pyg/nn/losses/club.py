"""The Contrastive Log-ratio Upper Bound of a mutual information (SEA's *distancing* loss).

* :class:`CLUB`: the estimator, with its own variational network.
* :func:`club_gradient_step`: the gradient of several estimators' learning loss at once,
  batched and written out by hand (the optimizer and the loop belong to the trainer:
  :func:`sea_pyg.train.fit_clubs`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from sea_pyg.nn.losses._checks import _check_rows
from sea_pyg.nn.precision import full_precision

__all__ = ["CLUB", "CLUB_ESTIMATORS", "club_gradient_step"]

CLUB_ESTIMATORS = ("sample", "all_pairs")


# --------------------------------------------------------------------------------------------
# CLUB
# --------------------------------------------------------------------------------------------


class CLUB(torch.nn.Module):
    r"""Contrastive Log-ratio Upper Bound of the mutual information :math:`I(X; Y)` from the
    `"CLUB: A Contrastive Log-ratio Upper Bound of Mutual Information"
    <https://arxiv.org/abs/2006.12013>`_ paper, used by SEA to push a modality's generic and
    unique parts apart.

    A Gaussian variational network approximates :math:`p(y \mid x)`:

    .. math::
        q_\theta(\mathbf{y} \mid \mathbf{x}) = \mathcal{N}\left(\mathbf{y};\,
        \boldsymbol{\mu}(\mathbf{x}), \operatorname{diag} \boldsymbol{\sigma}^2(\mathbf{x})\right),
        \quad \log \boldsymbol{\sigma}^2 = \tanh(\cdot) \in (-1, 1),

    with :math:`\boldsymbol{\mu}` = Linear-ReLU-Linear and :math:`\log\boldsymbol{\sigma}^2`
    = Linear-ReLU-Linear-Tanh. On :math:`N` paired rows, with
    :math:`\mu_{id}, \sigma^2_{id}` computed from :math:`\mathbf{x}_i`:

    * :meth:`log_likelihood` (no constant term), whose negative :meth:`learning_loss` trains
      :math:`\theta`:

      .. math::
          \ell(\theta) = \frac{1}{N} \sum_i \sum_d \left[ -\frac{(\mu_{id} - y_{id})^2}
          {2 \sigma^2_{id}} - \frac{\log \sigma^2_{id}}{2} \right]

    * :meth:`forward` with ``estimator="all_pairs"``: the original CLUB,

      .. math::
          \hat{I} = \frac{1}{N} \sum_i \log q(\mathbf{y}_i \mid \mathbf{x}_i)
          - \frac{1}{N^2} \sum_{i, j} \log q(\mathbf{y}_j \mid \mathbf{x}_i)
          = \frac{1}{N} \sum_i \sum_d \frac{(\mu_{id} - \bar{y}_d)^2 + s_d^2
          - (\mu_{id} - y_{id})^2}{2 \sigma^2_{id}},

      where :math:`\bar{y}_d` and :math:`s^2_d` are the mean and (biased) variance of column
      :math:`d` of :math:`\mathbf{Y}`, since :math:`\frac{1}{N} \sum_j (\mu_{id} - y_{jd})^2 =
      (\mu_{id} - \bar{y}_d)^2 + s^2_d`: :math:`O(ND)` time and memory, no :math:`N \times N`
      tensor.
    * :meth:`forward` with ``estimator="sample"`` (default): CLUBSample, one random negative
      per row through a fresh permutation :math:`\pi`,

      .. math::
          \hat{I}_\pi = \frac{1}{N} \sum_i \sum_d \frac{(\mu_{id} - y_{\pi(i) d})^2
          - (\mu_{id} - y_{id})^2}{2 \sigma^2_{id}},

      whose expectation over :math:`\pi` is (up to the :math:`1/N` weight of fixed points) the
      all-pairs value.

    The returned bound is :math:`\max(c,\, s \cdot \hat{I})` with ``scale`` :math:`s` and
    ``clamp_min`` :math:`c` (no clamp when ``None``). The official SEA code uses a hidden width
    of 8, the sample estimator, ``scale=0.5`` and ``clamp_min=0.0`` (half the original
    CLUBSample estimate, clamped at 0).

    Gradients of the bound flow into ``x``, ``y`` and the network; the network itself is fitted
    separately on the learning loss, several estimators at once with the hand-written gradient
    of :func:`club_gradient_step` (the official trainer discards the network's gradient of the
    bound); these use a hand-written gradient of the learning loss. If :math:`q_\theta`
    equals the true conditional of correlated unit Gaussians with correlation :math:`\rho` in
    each of :math:`D` dimensions, :math:`\hat{I} \to D \rho^2 / (1 - \rho^2) \ge -\frac{D}{2}
    \ln(1 - \rho^2) = I(X; Y)`.

    Args:
        x_dim: Dimension of :math:`\mathbf{x}`.
        y_dim: Dimension of :math:`\mathbf{y}`.
        hidden_dim: Hidden width of both the mean and the log-variance network.
        scale: Factor :math:`s > 0` applied to the estimate. (default: ``1.0``)
        clamp_min: Lower clamp :math:`c` of the scaled estimate, or ``None``.
            (default: ``None``)

    Shapes:
        - **input:** :math:`\mathbf{x}` :math:`(N, D_x)`, :math:`\mathbf{y}` :math:`(N, D_y)`
        - **output:** scalar
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        hidden_dim: int,
        scale: float = 1.0,
        clamp_min: float | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("x_dim", x_dim), ("y_dim", y_dim), ("hidden_dim", hidden_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}")
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"`scale` must be a finite number > 0 (e.g. 0.5), got {scale}")
        if clamp_min is not None and not math.isfinite(clamp_min):
            raise ValueError(f"`clamp_min` must be None or a finite number, got {clamp_min}")
        self.x_dim = x_dim
        self.y_dim = y_dim
        self.hidden_dim = hidden_dim
        self.scale = float(scale)
        self.clamp_min = None if clamp_min is None else float(clamp_min)
        self.p_mu = torch.nn.Sequential(
            torch.nn.Linear(x_dim, hidden_dim),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden_dim, y_dim),
        )
        self.p_logvar = torch.nn.Sequential(
            torch.nn.Linear(x_dim, hidden_dim),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden_dim, y_dim),
            torch.nn.Tanh(),
        )

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        for module in (*self.p_mu, *self.p_logvar):
            if isinstance(module, torch.nn.Linear):
                module.reset_parameters()

    def _check(self, x: Tensor, y: Tensor) -> None:
        _check_rows(x, "x", self.x_dim)
        _check_rows(y, "y", self.y_dim)
        if x.size(0) != y.size(0):
            raise ValueError(
                f"`x` and `y` must have the same number of rows (row i of x is paired with "
                f"row i of y), got {x.size(0)} and {y.size(0)}"
            )

    def mu_logvar(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Mean :math:`\boldsymbol{\mu}(\mathbf{x})` and log-variance
        :math:`\log \boldsymbol{\sigma}^2(\mathbf{x})` of :math:`q_\theta(\mathbf{y} \mid
        \mathbf{x})`, both of shape :math:`(N, D_y)`."""
        return self.p_mu(x), self.p_logvar(x)

    def _log_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        mu, logvar = self.mu_logvar(x)
        return (-0.5 * ((mu - y).square() * torch.exp(-logvar) + logvar)).sum(-1).mean()

    def log_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        r"""Mean Gaussian log-likelihood of :math:`\mathbf{y}_i` under
        :math:`q_\theta(\cdot \mid \mathbf{x}_i)`, without the constant
        :math:`-\frac{D_y}{2} \ln 2\pi`."""
        self._check(x, y)
        return self._log_likelihood(x, y)

    def learning_loss(self, x: Tensor, y: Tensor) -> Tensor:
        r"""The estimator's training loss: the negative of :meth:`log_likelihood`."""
        self._check(x, y)
        return -self._log_likelihood(x, y)

    @full_precision
    def forward(
        self,
        x: Tensor,
        y: Tensor,
        estimator: str = "sample",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""The (scaled, optionally clamped) upper bound of :math:`I(X; Y)`.

        Args:
            x: Rows of :math:`X`, shape :math:`(N, D_x)`.
            y: Paired rows of :math:`Y`, shape :math:`(N, D_y)`.
            estimator: ``"sample"`` (CLUBSample, one fresh permutation per call) or
                ``"all_pairs"`` (the original CLUB, deterministic).
            generator: Random generator for the permutation of ``"sample"``; it may live on
                another device than ``x``.
        """
        if estimator not in CLUB_ESTIMATORS:
            raise ValueError(f"`estimator` must be one of {CLUB_ESTIMATORS}, got {estimator!r}")
        self._check(x, y)
        mu, logvar = self.mu_logvar(x)
        inv_var = torch.exp(-logvar)
        if estimator == "sample":
            device = generator.device if generator is not None else x.device
            perm = torch.randperm(x.size(0), generator=generator, device=device).to(x.device)
            y_neg = y[perm]
            # (mu - y')^2 - (mu - y)^2 = (y' - y) (y' + y - 2 mu)
            gap = (y_neg - y) * (y_neg + y - 2.0 * mu)
        else:
            y_mean = y.mean(dim=0)
            y_var = (y - y_mean).square().mean(dim=0)
            gap = (mu - y_mean).square() + y_var - (mu - y).square()
        bound = (gap * inv_var).sum() * (0.5 * self.scale / x.size(0))
        if self.clamp_min is not None:
            bound = bound.clamp(min=self.clamp_min)
        return bound

    def extra_repr(self) -> str:
        return (
            f"x_dim={self.x_dim}, y_dim={self.y_dim}, hidden_dim={self.hidden_dim}, "
            f"scale={self.scale}, clamp_min={self.clamp_min}"
        )


# --------------------------------------------------------------------------------------------
# Fitting CLUB estimators: analytic gradients, several estimators batched
# --------------------------------------------------------------------------------------------


def _is_standard_club(club: CLUB) -> bool:
    """The estimator still has the architecture :class:`CLUB` builds (Linear-ReLU-Linear and
    Linear-ReLU-Linear-Tanh of the declared sizes, nothing overridden), so its learning-loss
    gradient can be written out by hand."""
    nn = torch.nn
    if (
        type(club).mu_logvar is not CLUB.mu_logvar
        or type(club)._log_likelihood is not CLUB._log_likelihood
        or [type(m) for m in club.p_mu] != [nn.Linear, nn.ReLU, nn.Linear]
        or [type(m) for m in club.p_logvar] != [nn.Linear, nn.ReLU, nn.Linear, nn.Tanh]
    ):
        return False
    h, dx, dy = club.hidden_dim, club.x_dim, club.y_dim
    return all(
        lin.weight.shape == shape and lin.bias is not None
        for net in (club.p_mu, club.p_logvar)
        for lin, shape in ((net[0], (h, dx)), (net[2], (dy, h)))
    )


def _club_groups(
    groups: Sequence[tuple[CLUB, Sequence[tuple[Tensor, Tensor]]]],
) -> list[tuple[CLUB, list[tuple[Tensor, Tensor]]]]:
    if len(groups) == 0:
        raise ValueError("`groups` must hold at least one (club, pairs) entry, got none")
    out = []
    for g, entry in enumerate(groups):
        if len(entry) != 2 or not isinstance(entry[0], CLUB):
            raise ValueError(f"`groups[{g}]` must be a (CLUB, [(x, y), ...]) pair")
        club, pairs = entry
        if len(pairs) == 0:
            raise ValueError(f"`groups[{g}]` holds no (x, y) pair")
        detached = []
        for k, pair in enumerate(pairs):
            if len(pair) != 2:
                raise ValueError(
                    f"`groups[{g}]` pair {k} must be an (x, y) pair, got {len(pair)} items"
                )
            x, y = pair
            club._check(x, y)
            # a forward under bfloat16 autocast leaves bfloat16 pairs: the estimator is
            # fitted in its own (float32) dtype, outside autocast
            dtype = next(club.parameters(), x).dtype
            detached.append((x.detach().to(dtype), y.detach().to(dtype)))
        out.append((club, detached))
    return out


class _StackedCLUBs:
    r"""The learning loss of :math:`K` estimators of equal sizes, each on the concatenation of
    its pairs (all pairs with :math:`N` rows), evaluated as one batch with hand-written
    gradients.

    With :math:`\mathbf{h} = \operatorname{relu}(\mathbf{x} \mathbf{A}^\top + \mathbf{a})`
    (both first layers side by side), :math:`\boldsymbol{\mu} = \mathbf{h} \mathbf{B}_\mu +
    \mathbf{b}_\mu` and :math:`\mathbf{p} = \mathbf{h} \mathbf{B}_p + \mathbf{b}_p` (each
    second layer zero-padded to read the joint hidden layer),
    :math:`\mathbf{t} = \tanh \mathbf{p}`, :math:`\mathbf{r} = \boldsymbol{\mu} - \mathbf{y}`
    and :math:`\mathbf{e} = e^{-\mathbf{t}}`, the summed loss is :math:`\frac{1}{2N} \sum
    (\mathbf{r}^2 \mathbf{e} + \mathbf{t})` and

    .. math::
        \frac{\partial \mathcal{L}}{\partial \boldsymbol{\mu}} = \frac{\mathbf{r}\mathbf{e}}{N},
        \qquad \frac{\partial \mathcal{L}}{\partial \mathbf{p}} =
        \frac{(1 - \mathbf{r}^2 \mathbf{e})(1 - \mathbf{t}^2)}{2N},

    back-propagated through the two layers by batched matrix products. This is the
    gradient autograd computes for :meth:`CLUB.learning_loss` (tested to rounding), at about a
    quarter of its cost on a CPU: few, large operations and ``tanh`` evaluated as
    :math:`2\sigma(2p) - 1` (several times faster than ``torch.tanh`` on x86 CPUs).
    """

    def __init__(self, clubs: Sequence[CLUB], xs: Sequence[Tensor], ys: Sequence[Tensor],
                 rows: int) -> None:
        self.clubs = list(clubs)
        self.x = torch.stack(list(xs))  # (K, R, Dx), contiguous
        self.y = torch.stack(list(ys))  # (K, R, Dy)
        self.scale = 1.0 / rows
        c = self.clubs[0]
        self.h, self.dy = c.hidden_dim, c.y_dim
        k = len(self.clubs)
        # second layers as (2h, Dy) matrices reading the mu (top) or the log-variance (bottom)
        # half of the joint hidden layer; the other half stays zero
        self.B_mu = self.x.new_zeros(k, 2 * self.h, self.dy)
        self.B_lv = self.x.new_zeros(k, 2 * self.h, self.dy)
        # work buffers, allocated once: fresh multi-megabyte tensors at every step would cost
        # page faults comparable to the arithmetic
        rows_total = self.x.size(1)
        self.hid = self.x.new_empty(k, rows_total, 2 * self.h)
        self.dhid = torch.empty_like(self.hid)
        self.r, self.t, self.re, self.q = (self.y.new_empty(self.y.shape) for _ in range(4))

    def _weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        h = self.h
        cs = self.clubs
        A = torch.stack([torch.cat([c.p_mu[0].weight, c.p_logvar[0].weight]) for c in cs])
        a = torch.stack([torch.cat([c.p_mu[0].bias, c.p_logvar[0].bias]) for c in cs])
        b_mu = torch.stack([c.p_mu[2].bias for c in cs])
        b_lv = torch.stack([c.p_logvar[2].bias for c in cs])
        for k, c in enumerate(cs):
            self.B_mu[k, :h].copy_(c.p_mu[2].weight.t())
            self.B_lv[k, h:].copy_(c.p_logvar[2].weight.t())
        return A, a.unsqueeze(1), b_mu.unsqueeze(1), b_lv.unsqueeze(1)

    @torch.no_grad()
    def __call__(self, with_loss: bool = True, with_grads: bool = True) -> Tensor | None:
        """Sets the estimators' ``.grad``; returns the summed loss if ``with_loss``."""
        h, scale = self.h, self.scale
        A, a, b_mu, b_lv = self._weights()
        hid = torch.baddbmm(a, self.x, A.transpose(1, 2), out=self.hid).clamp_(min=0.0)
        r = torch.baddbmm(b_mu, hid, self.B_mu, out=self.r).sub_(self.y)  # mu - y
        # t = tanh(p) = 2 sigmoid(2p) - 1
        t = torch.baddbmm(b_lv, hid, self.B_lv, out=self.t)
        t.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)
        re = torch.neg(t, out=self.re).exp_().mul_(r)  # r e^{-t}
        q = torch.mul(re, r, out=self.q)  # r^2 e^{-t}
        loss = (q.sum() + t.sum()) * (0.5 * scale) if with_loss else None
        if not with_grads:
            return loss
        # N dL/dp = (1 - r^2 e^{-t}) (1 - t^2) / 2, in place of q
        g_lv = q.neg_().add_(1.0).mul_(t.square_().neg_().add_(1.0)).mul_(0.5)
        hid_t = hid.transpose(1, 2)
        dB_mu = torch.bmm(hid_t, re)  # (K, 2h, Dy)
        dB_lv = torch.bmm(hid_t, g_lv)
        dhid = torch.bmm(re, self.B_mu.transpose(1, 2), out=self.dhid)
        dhid.baddbmm_(g_lv, self.B_lv.transpose(1, 2))
        torch.ops.aten.threshold_backward.grad_input(dhid, hid, 0.0, grad_input=dhid)  # relu'
        dA = torch.bmm(dhid.transpose(1, 2), self.x).mul_(scale)  # (K, 2h, Dx)
        da = dhid.sum(1).mul_(scale)
        db_mu = re.sum(1).mul_(scale)
        db_lv = g_lv.sum(1).mul_(scale)
        dW_mu = dB_mu[:, :h].transpose(1, 2).mul(scale).contiguous()  # (K, Dy, h)
        dW_lv = dB_lv[:, h:].transpose(1, 2).mul(scale).contiguous()
        for k, c in enumerate(self.clubs):
            c.p_mu[0].weight.grad = dA[k, :h]
            c.p_logvar[0].weight.grad = dA[k, h:]
            c.p_mu[0].bias.grad = da[k, :h]
            c.p_logvar[0].bias.grad = da[k, h:]
            c.p_mu[2].weight.grad = dW_mu[k]
            c.p_logvar[2].weight.grad = dW_lv[k]
            c.p_mu[2].bias.grad = db_mu[k]
            c.p_logvar[2].bias.grad = db_lv[k]
        return loss


class _AutogradCLUBs:
    """The summed learning loss of any estimators, with autograd's gradient (the fallback of
    :func:`club_gradient_step`)."""

    def __init__(self, groups: list[tuple[CLUB, list[tuple[Tensor, Tensor]]]]) -> None:
        self.groups = groups

    def _total(self) -> Tensor:
        loss = None
        for club, pairs in self.groups:
            for x, y in pairs:
                term = -club._log_likelihood(x, y)
                loss = term if loss is None else loss + term
        return loss

    def __call__(self, with_loss: bool = True, with_grads: bool = True) -> Tensor | None:
        if not with_grads:
            with torch.no_grad():
                return self._total()
        with torch.enable_grad():
            loss = self._total()
            loss.backward()
        return loss.detach() if with_loss else None


def club_gradient_step(
    groups: Sequence[tuple[CLUB, Sequence[tuple[Tensor, Tensor]]]],
) -> Callable[..., Tensor | None]:
    r"""The gradient step of several CLUB estimators' summed learning loss

    .. math::
        \sum_{(q, \text{pairs})} \; \sum_{(\mathbf{x}, \mathbf{y}) \in \text{pairs}}
        -\ell_q(\mathbf{x}, \mathbf{y})

    on fixed (detached) pairs: ``step(with_loss=True, with_grads=True)`` sets ``.grad`` of every
    estimator parameter (accumulating into ``.grad`` on the autograd path: zero them first) and
    returns the loss (a 0-d tensor, before any update) when ``with_loss``. No optimizer, no loop:
    a trainer runs ``steps`` of ``zero_grad -> step -> optimizer.step()``
    (:func:`sea_pyg.train.fit_clubs`, :class:`sea_pyg.train.AuxiliaryTraining`). SEA's
    :class:`~sea_pyg.nn.SeparateLearning` declares its estimators' step this way; the official
    trainer takes 50 such steps after every mini-batch.

    When every estimator has the architecture :class:`CLUB` builds, the sizes agree and all
    pairs have the same number of rows, the gradient is written out by hand and all estimators
    are evaluated as one batch (:class:`_StackedCLUBs`: same values as autograd up to rounding,
    several times faster, work buffers allocated once for all steps); otherwise each step runs
    autograd on the summed loss.

    Args:
        groups: Non-empty sequence of ``(club, pairs)``, ``pairs`` a non-empty sequence of
            ``(x, y)`` tensors of shapes :math:`(N, D_x)`, :math:`(N, D_y)`.
    """
    groups = _club_groups(groups)
    clubs = [c for c, _ in groups]
    rows = {x.size(0) for _, pairs in groups for x, _ in pairs}
    fast = (
        len(rows) == 1
        and len({id(c) for c in clubs}) == len(clubs)
        and all(_is_standard_club(c) for c in clubs)
        and len({(c.x_dim, c.y_dim, c.hidden_dim) for c in clubs}) == 1
        and len({len(p) for _, p in groups}) == 1
        and len(
            {(t.dtype, t.device) for _, p in groups for pair in p for t in pair}
            | {(w.dtype, w.device) for c in clubs for w in c.parameters()}
        ) == 1
    )
    if not fast:
        return _AutogradCLUBs(groups)
    return _StackedCLUBs(
        clubs,
        [torch.cat([x for x, _ in p]) for _, p in groups],
        [torch.cat([y for _, y in p]) for _, p in groups],
        rows.pop(),
    )
