"""Negative L2 distancing (SEA variants with NegativeL2 distancing).

* :func:`negative_l2_loss` / :class:`NegativeL2`: the negative squared distance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sea_pyg.nn.losses._checks import _check_same_shape
from sea_pyg.nn.precision import full_precision

__all__ = ["negative_l2_loss", "NegativeL2"]


# --------------------------------------------------------------------------------------------
# Negative L2 distancing
# --------------------------------------------------------------------------------------------


@full_precision
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
