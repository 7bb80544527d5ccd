r"""Losses for multimodal recommendation and the SEA mutual-information terms.

* :func:`bpr_loss` / :class:`BPRLoss`: Bayesian personalised ranking, in the three numerically
  different forms used by MMRec, FREEDOM and the official SEA code.
* :func:`emb_loss` / :class:`EmbLoss`: MMRec's (un-squared) embedding-norm regulariser.
* :class:`CLUB`: the Contrastive Log-ratio Upper Bound of a mutual information, with its own
  variational network and fitting loop (SEA's *distancing* loss).
* :func:`solosim_loss` / :class:`SoloSimLoss`: one-directional cross-modal InfoNCE over all items
  (SEA's *alignment* loss), with an exact row-chunked path that never holds the full
  :math:`N \times N` similarity matrix, not even in the backward pass.
* :func:`info_nce_loss` / :class:`InfoNCE`: the symmetric NT-Xent loss with in-modality negatives
  (SEA variants with InfoNCE alignment).
* :func:`negative_l2_loss` / :class:`NegativeL2`: the negative squared distance (SEA variants with
  NegativeL2 distancing).

Every loss takes the dtype and device of its inputs and returns a scalar tensor.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "bpr_loss",
    "BPRLoss",
    "emb_loss",
    "EmbLoss",
    "CLUB",
    "fit_clubs",
    "solosim_loss",
    "SoloSimLoss",
    "info_nce_loss",
    "InfoNCE",
    "negative_l2_loss",
    "NegativeL2",
]

BPR_VARIANTS = ("mmrec", "logsigmoid", "log2")
CLUB_ESTIMATORS = ("sample", "all_pairs")


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


# --------------------------------------------------------------------------------------------
# BPR and embedding regularisation
# --------------------------------------------------------------------------------------------


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor, variant: str = "mmrec") -> Tensor:
    r"""Bayesian personalised ranking loss of paired positive and negative scores.

    With :math:`\Delta_b = \hat{y}_{u_b, i_b} - \hat{y}_{u_b, j_b}` over a batch of :math:`B`
    triples, :math:`\sigma` the logistic sigmoid:

    .. math::
        \mathcal{L}_{\text{mmrec}} &= -\frac{1}{B} \sum_b \ln\left(10^{-10} + \sigma(\Delta_b)
        \right) \\
        \mathcal{L}_{\text{logsigmoid}} &= -\frac{1}{B} \sum_b \ln \sigma(\Delta_b) \\
        \mathcal{L}_{\text{log2}} &= -\frac{1}{B} \sum_b \log_2 \sigma(\Delta_b)

    * ``"mmrec"``: MMRec's ``BPRLoss`` (natural log plus an epsilon, which caps the loss of a
      single triple at :math:`\ln 10^{10} \approx 23.03`).
    * ``"logsigmoid"``: FREEDOM; numerically stable for every gap.
    * ``"log2"``: the official SEA (and DRAGON) code. It equals the ``"logsigmoid"`` loss
      divided by :math:`\ln 2`, so its gradient is :math:`1/\ln 2 \approx 1.44` times larger,
      which changes the balance against auxiliary losses. It has **no epsilon**: when
      :math:`\sigma(\Delta)` underflows to 0 (gaps below about :math:`-88.7` in float32,
      :math:`-745` in float64) the log is :math:`-\infty`, the loss :math:`+\infty` and the
      gradient NaN. Kept for faithfulness to the reference code.

    Args:
        pos_scores: Scores of the positive items, any shape.
        neg_scores: Scores of the negative items, same shape as ``pos_scores``.
        variant: ``"mmrec"``, ``"logsigmoid"`` or ``"log2"``.

    Returns:
        A scalar tensor in the dtype of the scores.
    """
    if variant not in BPR_VARIANTS:
        raise ValueError(f"`variant` must be one of {BPR_VARIANTS}, got {variant!r}")
    if pos_scores.shape != neg_scores.shape:
        raise ValueError(
            f"`pos_scores` and `neg_scores` must have the same shape (one negative per "
            f"positive), got {tuple(pos_scores.shape)} and {tuple(neg_scores.shape)}"
        )
    if pos_scores.numel() == 0:
        raise ValueError("`pos_scores` is empty: the BPR loss needs at least one pair")
    diff = pos_scores - neg_scores
    if variant == "mmrec":
        return -torch.log(1e-10 + torch.sigmoid(diff)).mean()
    if variant == "logsigmoid":
        return -F.logsigmoid(diff).mean()
    return -torch.log2(torch.sigmoid(diff)).mean()


class BPRLoss(torch.nn.Module):
    r"""Bayesian personalised ranking loss; see :func:`bpr_loss` for the maths of each variant.

    Args:
        variant: ``"mmrec"`` (MMRec, :math:`-\ln(10^{-10} + \sigma)`), ``"logsigmoid"``
            (FREEDOM) or ``"log2"`` (official SEA, no epsilon). (default: ``"mmrec"``)

    Shapes:
        - **input:** positive scores :math:`(*)`, negative scores :math:`(*)`
        - **output:** scalar
    """

    def __init__(self, variant: str = "mmrec") -> None:
        super().__init__()
        if variant not in BPR_VARIANTS:
            raise ValueError(f"`variant` must be one of {BPR_VARIANTS}, got {variant!r}")
        self.variant = variant

    def forward(self, pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
        return bpr_loss(pos_scores, neg_scores, self.variant)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"


def emb_loss(*embeddings: Tensor) -> Tensor:
    r"""MMRec's embedding regulariser: summed **un-squared** Frobenius norms.

    .. math::
        \mathcal{L}_{\text{emb}}(E_1, \dots, E_K) = \frac{1}{n_K} \sum_{k=1}^{K} \|E_k\|_F

    where :math:`\|E\|_F` is the Frobenius norm of the whole tensor (not squared, not per row)
    and :math:`n_K` is the number of rows of the **last** argument.

    Args:
        *embeddings: One or more tensors, e.g. the batch's user, positive and negative rows.

    Returns:
        A scalar tensor.
    """
    if len(embeddings) == 0:
        raise ValueError("`emb_loss` needs at least one embedding tensor, got none")
    last = embeddings[-1]
    if last.dim() == 0 or last.size(0) == 0:
        raise ValueError(
            f"the last embedding must have at least one row (its row count divides the sum), "
            f"got shape {tuple(last.shape)}"
        )
    total = torch.linalg.vector_norm(embeddings[0])
    for emb in embeddings[1:]:
        total = total + torch.linalg.vector_norm(emb)
    return total / last.size(0)


class EmbLoss(torch.nn.Module):
    r"""MMRec's embedding regulariser; see :func:`emb_loss`.

    .. math::
        \mathcal{L}_{\text{emb}}(E_1, \dots, E_K) = \frac{1}{n_K} \sum_{k=1}^{K} \|E_k\|_F

    Shapes:
        - **input:** any number of tensors; the last one has shape :math:`(n_K, *)`
        - **output:** scalar
    """

    def forward(self, *embeddings: Tensor) -> Tensor:
        return emb_loss(*embeddings)


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
    separately on the learning loss with :meth:`fit` / :meth:`fit_pairs`, or several estimators
    at once with :func:`fit_clubs` (the official trainer discards the network's gradient of the
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

    def fit(self, x: Tensor, y: Tensor, optimizer: torch.optim.Optimizer, steps: int) -> float:
        r"""Fits :math:`q_\theta` to the pairs :math:`(\mathbf{x}_i, \mathbf{y}_i)`.

        Runs ``steps`` full-batch steps of ``optimizer`` on :meth:`learning_loss` of
        ``x.detach()`` and ``y.detach()`` (no gradient reaches the callers' tensors). The
        official trainer also shuffles the rows before each step, which leaves the full-batch
        mean unchanged and is therefore omitted.

        Args:
            x: Rows of :math:`X`, shape :math:`(N, D_x)`.
            y: Paired rows of :math:`Y`, shape :math:`(N, D_y)`.
            optimizer: An optimiser over (at least) this module's parameters.
            steps: Number of steps; ``0`` only evaluates the loss.

        Returns:
            The learning loss of the last step, computed before that step's update, as a
            Python float.
        """
        return self.fit_pairs([(x, y)], optimizer, steps)

    def fit_pairs(
        self,
        pairs: Sequence[tuple[Tensor, Tensor]],
        optimizer: torch.optim.Optimizer,
        steps: int,
    ) -> float:
        r"""Like :meth:`fit`, with the loss of each step the **sum** of :meth:`learning_loss`
        over several :math:`(\mathbf{x}, \mathbf{y})` pairs (one network shared by all pairs).

        The official SEA trainer runs 50 Adam (lr :math:`10^{-4}`) steps per mini-batch of
        ``fit_pairs([(g_t, g_v), (u_t, u_v)], ...)`` (cross-modal pairs), whereas the paper's
        method corresponds to ``fit_pairs([(g_t, u_t), (g_v, u_v)], ...)``.

        Args:
            pairs: Non-empty sequence of ``(x, y)`` tensor pairs.
            optimizer: An optimiser over (at least) this module's parameters.
            steps: Number of steps; ``0`` only evaluates the loss.

        Returns:
            The summed learning loss of the last step (before its update), as a Python float.
        """
        if len(pairs) == 0:
            raise ValueError("`pairs` must hold at least one (x, y) pair, got none")
        for k, pair in enumerate(pairs):
            if len(pair) != 2:
                raise ValueError(f"`pairs[{k}]` must be an (x, y) pair, got {len(pair)} items")
        return fit_clubs([(self, pairs)], optimizer, steps)

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
            detached.append((x.detach(), y.detach()))
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
    def step(self, with_grads: bool = True, with_loss: bool = True) -> Tensor | None:
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


def fit_clubs(
    groups: Sequence[tuple[CLUB, Sequence[tuple[Tensor, Tensor]]]],
    optimizer: torch.optim.Optimizer,
    steps: int,
) -> float:
    r"""Fits several CLUB estimators at once: ``steps`` steps of ``optimizer`` on

    .. math::
        \sum_{(q, \text{pairs})} \; \sum_{(\mathbf{x}, \mathbf{y}) \in \text{pairs}}
        -\ell_q(\mathbf{x}, \mathbf{y}),

    the summed :meth:`CLUB.learning_loss` of every estimator on each of its pairs (detached:
    no gradient reaches the callers' tensors). ``groups`` lists ``(club, [(x, y), ...])``;
    ``fit_clubs([(club, pairs)], opt, k)`` is :meth:`CLUB.fit_pairs`. SEA's
    :class:`~sea_pyg.nn.SeparateLearning` fits its per-modality estimators this way: 50 steps
    after every mini-batch.

    When every estimator has the architecture :class:`CLUB` builds, the sizes agree and all
    pairs have the same number of rows, the gradient is written out by hand and all estimators
    are evaluated as one batch (same values as autograd up to rounding, several times faster);
    otherwise each step runs autograd on the summed loss.

    Args:
        groups: Non-empty sequence of ``(club, pairs)``, ``pairs`` a non-empty sequence of
            ``(x, y)`` tensors of shapes :math:`(N, D_x)`, :math:`(N, D_y)`.
        optimizer: An optimiser over (at least) the estimators' parameters.
        steps: Number of steps; ``0`` only evaluates the loss.

    Returns:
        The summed learning loss of the last step (before its update), as a Python float.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"`steps` must be a non-negative int, got {steps!r}")
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
    if fast:
        stacked = _StackedCLUBs(
            clubs,
            [torch.cat([x for x, _ in p]) for _, p in groups],
            [torch.cat([y for _, y in p]) for _, p in groups],
            rows.pop(),
        )
        if steps == 0:
            return float(stacked.step(with_grads=False))
        for i in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = stacked.step(with_loss=i == steps - 1)
            optimizer.step()
        return float(loss)

    def total() -> Tensor:
        loss = None
        for club, pairs in groups:
            for x, y in pairs:
                term = -club._log_likelihood(x, y)
                loss = term if loss is None else loss + term
        return loss

    with torch.enable_grad():
        if steps == 0:
            with torch.no_grad():
                return float(total())
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = total()
            loss.backward()
            optimizer.step()
    return float(loss.detach())


# --------------------------------------------------------------------------------------------
# Contrastive losses (shared row-wise cross-entropy, dense or chunked)
# --------------------------------------------------------------------------------------------


class _ChunkedRowCrossEntropy(torch.autograd.Function):
    r"""Mean over rows :math:`r` of :math:`-\log\operatorname{softmax}(\mathbf{q}_r
    \mathbf{K}^\top / \tau)_{t_r}`, with column :math:`e_r` removed from row :math:`r`'s
    softmax if ``exclude`` is given; computed ``chunk_size`` rows at a time.

    Each chunk's softmax :math:`P` is complete (a chunk holds whole rows), so the gradient is
    accumulated in the same pass, right after :math:`P`, and the backward pass only scales it:
    :math:`\partial \mathcal{L} / \partial \mathbf{q} = (P \mathbf{K} - \mathbf{K}_t) /
    (M\tau)` and :math:`\partial \mathcal{L} / \partial \mathbf{K} = (P^\top \mathbf{q} -
    \text{scatter}_t(\mathbf{q})) / (M\tau)`, the one-hot part applied to the small factors.
    Each chunk of logits is written by one matrix product into one reused buffer, exponentiated
    in place, summed, and read by the two gradient products; only an ``(M, D)`` and an
    ``(N, D)`` gradient are kept for the backward pass. The gradient is computed only when
    ``with_grad`` (grad mode on and an input requiring it).

    If ``bound`` is given, every logit is known to lie in ``[-bound, bound]`` (unit-norm rows:
    ``bound = 1 / tau``); the log-sum-exp then uses the fixed shift ``bound``, folded into the
    matrix product as an extra column (no overflow or underflow while ``2 * bound < 80``);
    otherwise each row is shifted by its maximum.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        q: Tensor,
        k: Tensor,
        target: Tensor,
        exclude: Tensor | None,
        tau: float,
        chunk_size: int,
        bound: float | None,
        with_grad: bool,
    ) -> Tensor:
        m, n = q.size(0), k.size(0)
        need_q = with_grad and ctx.needs_input_grad[0]
        need_k = with_grad and ctx.needs_input_grad[1]
        qs = q * (1.0 / tau)
        if bound is not None:  # [q / tau, -bound] @ [k, 1]^T = logits - bound
            qa = torch.cat([qs, qs.new_full((m, 1), -bound)], dim=1)
            kt = torch.cat([k, k.new_ones(n, 1)], dim=1).t()
        else:
            qa, kt = qs, k.t()
        lse = q.new_empty(m)
        buf = q.new_empty(min(chunk_size, m), n)
        grad_q = q.new_empty(q.shape) if need_q else None
        grad_k = torch.zeros_like(k) if need_k else None
        for start in range(0, m, chunk_size):
            end = min(start + chunk_size, m)
            prob = torch.mm(qa[start:end], kt, out=buf[: end - start])
            if exclude is not None:
                prob.scatter_(1, exclude[start:end].unsqueeze(1), float("-inf"))
            if bound is None:
                shift = prob.amax(dim=1)
                prob.sub_(shift.unsqueeze(1))
            else:
                shift = bound
            total = prob.exp_().sum(dim=1)
            lse[start:end] = total.log().add_(shift)
            if need_q or need_k:
                inv = total.reciprocal_().unsqueeze(1)  # rows of P = prob / total
                if need_q:
                    torch.mm(prob, k, out=grad_q[start:end]).mul_(inv)
                if need_k:
                    grad_k.addmm_(prob.t(), q[start:end] * inv)
        pos = (qs * k[target]).sum(dim=1)
        coef = 1.0 / (m * tau)
        if need_q:
            grad_q.sub_(k[target]).mul_(coef)
        if need_k:
            grad_k.index_add_(0, target, q, alpha=-1.0).mul_(coef)
        ctx.save_for_backward(grad_q, grad_k)
        return (lse - pos).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        grad_q, grad_k = ctx.saved_tensors
        return (
            None if grad_q is None else grad_q * grad_out,
            None if grad_k is None else grad_k * grad_out,
            None, None, None, None, None, None,
        )


def _row_cross_entropy(
    q: Tensor,
    k: Tensor,
    target: Tensor,
    exclude: Tensor | None,
    tau: float,
    chunk_size: int | None,
    bounded: bool = False,
) -> Tensor:
    if chunk_size is not None:
        bound = 1.0 / tau if bounded and 2.0 / tau < 80.0 else None
        with_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
        return _ChunkedRowCrossEntropy.apply(q, k, target, exclude, tau, chunk_size, bound,
                                             with_grad)
    logits = (q @ k.T) / tau
    if exclude is not None:
        mask = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
        mask.scatter_(1, exclude.unsqueeze(1), True)
        logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, target)


def solosim_loss(
    a: Tensor,
    b: Tensor,
    temperature: float = 0.2,
    chunk_size: int | None = None,
    normalize: bool = True,
) -> Tensor:
    r"""One-directional cross-modal InfoNCE from ``a`` to ``b``; see :class:`SoloSimLoss`."""
    temperature = _check_temperature(temperature)
    chunk_size = _check_chunk_size(chunk_size)
    _check_same_shape(a, b, "a", "b")
    if normalize:
        a = F.normalize(a, dim=-1)
        b = F.normalize(b, dim=-1)
    target = torch.arange(a.size(0), device=a.device)
    return _row_cross_entropy(a, b, target, None, temperature, chunk_size, bounded=normalize)


class SoloSimLoss(torch.nn.Module):
    r"""SEA's SoloSim alignment loss: one-directional cross-modal InfoNCE from an anchor
    modality :math:`\mathbf{A}` (e.g. text) to another modality :math:`\mathbf{B}` (e.g. image)
    over all :math:`N` items, in-batch negatives from :math:`\mathbf{B}` only:

    .. math::
        \mathcal{L} = -\frac{1}{N} \sum_{i=1}^{N} \log
        \frac{\exp(\langle \hat{\mathbf{a}}_i, \hat{\mathbf{b}}_i \rangle / \tau)}
        {\sum_{j=1}^{N} \exp(\langle \hat{\mathbf{a}}_i, \hat{\mathbf{b}}_j \rangle / \tau)},

    with :math:`\hat{\cdot}` the row-wise L2 normalisation (if ``normalize``). This equals
    ``F.cross_entropy(a_n @ b_n.T / tau, arange(N))``.

    With ``chunk_size`` set, the loss is computed ``chunk_size`` rows at a time by a custom
    autograd function that saves only :math:`\hat{\mathbf{A}}`, :math:`\hat{\mathbf{B}}` and
    one log-sum-exp per row, and recomputes each chunk's softmax in the backward pass, so at
    most ``chunk_size`` :math:`\times N` logits exist at any time (forward or backward). Values
    and gradients equal the dense path up to floating-point summation order; the backward
    costs one extra :math:`N \times N \times D` matmul. This path is not twice differentiable.

    Args:
        temperature: Softmax temperature :math:`\tau > 0`. The official SEA code uses 0.2.
            (default: ``0.2``)
        chunk_size: Rows per chunk, or ``None`` for the dense :math:`N \times N` path.
            (default: ``None``)
        normalize: L2-normalise the rows of both inputs first. (default: ``True``)

    Shapes:
        - **input:** :math:`\mathbf{A}` :math:`(N, D)`, :math:`\mathbf{B}` :math:`(N, D)`
        - **output:** scalar
    """

    def __init__(
        self,
        temperature: float = 0.2,
        chunk_size: int | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)
        self.chunk_size = _check_chunk_size(chunk_size)
        self.normalize = normalize

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return solosim_loss(a, b, self.temperature, self.chunk_size, self.normalize)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, chunk_size={self.chunk_size}, "
            f"normalize={self.normalize}"
        )


def info_nce_loss(
    a: Tensor,
    b: Tensor,
    temperature: float = 0.2,
    symmetric: bool = True,
    normalize: bool = True,
    chunk_size: int | None = None,
) -> Tensor:
    r"""NT-Xent with in-modality negatives; see :class:`InfoNCE`."""
    temperature = _check_temperature(temperature)
    chunk_size = _check_chunk_size(chunk_size)
    _check_same_shape(a, b, "a", "b")
    if normalize:
        a = F.normalize(a, dim=-1)
        b = F.normalize(b, dim=-1)
    n = a.size(0)
    z = torch.cat([a, b], dim=0)  # keys: b_0..b_{N-1} follow a_0..a_{N-1}
    rows = torch.arange(2 * n if symmetric else n, device=a.device)
    target = (rows + n) % (2 * n)  # a_i -> b_i, b_i -> a_i
    q = z if symmetric else a
    return _row_cross_entropy(q, z, target, rows, temperature, chunk_size, bounded=normalize)


class InfoNCE(torch.nn.Module):
    r"""The NT-Xent contrastive loss (SimCLR) between two views with in-modality negatives,
    used by the SEA variants with InfoNCE alignment.

    For anchor :math:`\hat{\mathbf{a}}_i` the positive is :math:`\hat{\mathbf{b}}_i` and the
    negatives are every :math:`\hat{\mathbf{b}}_j` and every :math:`\hat{\mathbf{a}}_j`,
    :math:`j \neq i` (the self-similarity is excluded). With :math:`s(\mathbf{u}, \mathbf{v})
    = \langle \mathbf{u}, \mathbf{v} \rangle / \tau`:

    .. math::
        \ell(\mathbf{a}_i; \mathbf{A}, \mathbf{B}) = -\log
        \frac{e^{s(\hat{\mathbf{a}}_i, \hat{\mathbf{b}}_i)}}
        {\sum_{j=1}^{N} e^{s(\hat{\mathbf{a}}_i, \hat{\mathbf{b}}_j)}
        + \sum_{j \neq i} e^{s(\hat{\mathbf{a}}_i, \hat{\mathbf{a}}_j)}}

    .. math::
        \mathcal{L} = \frac{1}{2N} \sum_{i=1}^{N} \left[ \ell(\mathbf{a}_i; \mathbf{A},
        \mathbf{B}) + \ell(\mathbf{b}_i; \mathbf{B}, \mathbf{A}) \right]
        \quad \text{(symmetric)}, \qquad
        \mathcal{L} = \frac{1}{N} \sum_{i=1}^{N} \ell(\mathbf{a}_i; \mathbf{A}, \mathbf{B})
        \quad \text{(otherwise)},

    with :math:`\hat{\cdot}` the row-wise L2 normalisation (if ``normalize``).

    Args:
        temperature: Softmax temperature :math:`\tau > 0`. (default: ``0.2``)
        symmetric: Average the :math:`A \to B` and :math:`B \to A` directions; otherwise only
            :math:`A \to B`. (default: ``True``)
        normalize: L2-normalise the rows of both inputs first. (default: ``True``)
        chunk_size: Rows per chunk for the memory-lean exact path (see
            :class:`SoloSimLoss`), or ``None`` for the dense path. (default: ``None``)

    Shapes:
        - **input:** :math:`\mathbf{A}` :math:`(N, D)`, :math:`\mathbf{B}` :math:`(N, D)`
        - **output:** scalar
    """

    def __init__(
        self,
        temperature: float = 0.2,
        symmetric: bool = True,
        normalize: bool = True,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)
        self.symmetric = symmetric
        self.normalize = normalize
        self.chunk_size = _check_chunk_size(chunk_size)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return info_nce_loss(
            a, b, self.temperature, self.symmetric, self.normalize, self.chunk_size
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, symmetric={self.symmetric}, "
            f"normalize={self.normalize}, chunk_size={self.chunk_size}"
        )


# --------------------------------------------------------------------------------------------
# Negative L2 distancing
# --------------------------------------------------------------------------------------------


def negative_l2_loss(x: Tensor, y: Tensor, normalize: bool = True) -> Tensor:
    r"""Negative mean squared row distance; see :class:`NegativeL2`."""
    _check_same_shape(x, y, "x", "y")
    if normalize:
        x = F.normalize(x, dim=-1)
        y = F.normalize(y, dim=-1)
    return -(x - y).square().sum(dim=-1).mean()


class NegativeL2(torch.nn.Module):
    r"""The negative-distance distancing loss of the SEA paper (appendix A.4): minimising it
    pushes the generic part :math:`\mathbf{x}_i` and the unique part :math:`\mathbf{y}_i` of
    each item apart.

    .. math::
        \mathcal{L} = -\frac{1}{N} \sum_{i=1}^{N} \| \hat{\mathbf{x}}_i - \hat{\mathbf{y}}_i
        \|_2^2

    With ``normalize=True`` the rows are L2-normalised first, so :math:`\|\hat{\mathbf{x}}_i -
    \hat{\mathbf{y}}_i\|_2^2 = 2 - 2 \cos(\mathbf{x}_i, \mathbf{y}_i)` and
    :math:`\mathcal{L} \in [-4, 0]`. With ``normalize=False`` the loss is unbounded below:
    minimising it can simply inflate the norms, and training can diverge.

    Args:
        normalize: L2-normalise the rows of both inputs first. (default: ``True``)

    Shapes:
        - **input:** :math:`\mathbf{X}` :math:`(N, D)`, :math:`\mathbf{Y}` :math:`(N, D)`
        - **output:** scalar
    """

    def __init__(self, normalize: bool = True) -> None:
        super().__init__()
        self.normalize = normalize

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return negative_l2_loss(x, y, self.normalize)

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}"
