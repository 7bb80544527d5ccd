r"""InfoNCE of a batch of anchors against a whole table of candidates (one positive each).

* :func:`candidate_info_nce_loss` / :class:`CandidateInfoNCE`: anchor :math:`\mathbf{a}_b`
  (one view of node :math:`t_b`) against every row of a candidate table :math:`\mathbf{C}`
  (another view of all nodes), the positive being row :math:`t_b`. LGMRec's hypergraph
  contrastive loss (MMRec ``ssl_triple_loss``, summed over the batch). The softmax runs over
  **all** candidates, so the exact row-chunked path of
  :mod:`~sea_pyg.nn.losses.contrastive` keeps a ``chunk_size x C`` block at most.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sea_pyg.nn.losses._checks import _check_chunk_size, _check_rows, _check_temperature
from sea_pyg.nn.losses.contrastive import _row_cross_entropy
from sea_pyg.nn.precision import full_precision

__all__ = ["candidate_info_nce_loss", "CandidateInfoNCE"]

_REDUCTIONS = ("sum", "mean")


@full_precision
def candidate_info_nce_loss(
    anchors: Tensor,
    candidates: Tensor,
    target: Tensor,
    temperature: float = 0.2,
    reduction: str = "sum",
    normalize: bool = True,
    chunk_size: int | None = None,
    *,
    check_values: bool = True,
) -> Tensor:
    r"""InfoNCE of anchors against all candidates; see :class:`CandidateInfoNCE`.

    ``check_values=False`` skips the range check of ``target`` (it reads the ids: a host
    synchronisation on an accelerator), for ids a model's training step built itself."""
    temperature = _check_temperature(temperature)
    chunk_size = _check_chunk_size(chunk_size)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}")
    _check_rows(anchors, "anchors")
    _check_rows(candidates, "candidates", anchors.size(1))
    if not isinstance(target, Tensor) or target.dim() != 1 or target.numel() != anchors.size(0):
        shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(
            f"`target` must be a 1-D tensor with one candidate row per anchor "
            f"({anchors.size(0)}), got {shape}"
        )
    if target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(f"`target` must hold integer row ids, got dtype {target.dtype}")
    target = target.long()
    if check_values and (int(target.min()) < 0 or int(target.max()) >= candidates.size(0)):
        raise ValueError(
            f"`target` holds ids outside [0, {candidates.size(0)}) (the candidate rows)"
        )
    if normalize:
        anchors = F.normalize(anchors, dim=-1)
        candidates = F.normalize(candidates, dim=-1)
    loss = _row_cross_entropy(
        anchors, candidates, target, None, temperature, chunk_size, bounded=normalize
    )
    return loss * anchors.size(0) if reduction == "sum" else loss


class CandidateInfoNCE(torch.nn.Module):
    r"""InfoNCE of :math:`B` anchors against a table of :math:`C` candidates.

    Anchor :math:`\mathbf{a}_b` is one view of node :math:`t_b`; the candidates
    :math:`\mathbf{c}_1, \dots, \mathbf{c}_C` are another view of **all** nodes, and the
    positive of :math:`\mathbf{a}_b` is :math:`\mathbf{c}_{t_b}` (it also appears in the
    denominator). With :math:`\hat{\cdot}` the row-wise L2 normalisation (if ``normalize``):

    .. math::
        \ell_b = -\log \frac{\exp(\langle \hat{\mathbf{a}}_b, \hat{\mathbf{c}}_{t_b}
        \rangle / \tau)}{\sum_{j=1}^{C} \exp(\langle \hat{\mathbf{a}}_b, \hat{\mathbf{c}}_j
        \rangle / \tau)}, \qquad
        \mathcal{L} = \sum_{b=1}^{B} \ell_b \ \text{(``"sum"``)} \quad \text{or} \quad
        \frac{1}{B} \sum_{b=1}^{B} \ell_b \ \text{(``"mean"``)}.

    A node repeated among the anchors counts once per occurrence. LGMRec's hypergraph
    contrastive loss (MMRec ``ssl_triple_loss(a[t], c[t], c)``) is this loss with the sum
    (not the mean) over the batch and :math:`\tau = 0.2`. Gradients reach the candidates
    through the positive and through the denominator.

    With ``chunk_size`` set, the logits are computed ``chunk_size`` rows at a time by the exact
    chunked cross-entropy of :class:`~sea_pyg.nn.SoloSimLoss` (at most ``chunk_size x C``
    logits at a time, forward and backward; values and gradients equal the dense path up to
    floating-point summation order; not twice differentiable).

    Args:
        temperature: :math:`\tau > 0` (default ``0.2``).
        reduction: ``"sum"`` (default, LGMRec) or ``"mean"`` over the anchors.
        normalize: L2-normalise the rows of both inputs first (default ``True``).
        chunk_size: Rows per chunk, or ``None`` for the dense ``B x C`` logits (default).

    Shapes:
        - **input:** anchors ``(B, D)``, candidates ``(C, D)``, target ``(B,)`` in
          ``[0, C)``
        - **output:** scalar
    """

    def __init__(
        self,
        temperature: float = 0.2,
        reduction: str = "sum",
        normalize: bool = True,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}")
        self.temperature = _check_temperature(temperature)
        self.reduction = reduction
        self.normalize = normalize
        self.chunk_size = _check_chunk_size(chunk_size)

    def forward(self, anchors: Tensor, candidates: Tensor, target: Tensor) -> Tensor:
        return candidate_info_nce_loss(
            anchors,
            candidates,
            target,
            self.temperature,
            self.reduction,
            self.normalize,
            self.chunk_size,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, reduction={self.reduction!r}, "
            f"normalize={self.normalize}, chunk_size={self.chunk_size}"
        )
