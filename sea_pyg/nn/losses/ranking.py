"""Ranking loss and embedding regularisation.

* :func:`bpr_loss` / :class:`BPRLoss`: Bayesian personalised ranking, in the three numerically
  different forms used by MMRec, FREEDOM and the official SEA code.
* :func:`emb_loss` / :class:`EmbLoss`: MMRec's (un-squared) embedding-norm regulariser.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sea_pyg.nn.precision import full_precision

__all__ = ["bpr_loss", "BPRLoss", "emb_loss", "EmbLoss"]

BPR_VARIANTS = ("mmrec", "logsigmoid", "log2")


# --------------------------------------------------------------------------------------------
# BPR and embedding regularisation
# --------------------------------------------------------------------------------------------


@full_precision
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


@full_precision
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
