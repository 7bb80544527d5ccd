r"""Contrastive losses over a shared row-wise cross-entropy, dense or chunked.

* :func:`solosim_loss` / :class:`SoloSimLoss`: one-directional cross-modal InfoNCE over all items
  (SEA's *alignment* loss), with an exact row-chunked path that never holds the full
  :math:`N \times N` similarity matrix, not even in the backward pass.
* :func:`info_nce_loss` / :class:`InfoNCE`: the symmetric NT-Xent loss with in-modality negatives
  (SEA variants with InfoNCE alignment).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from sea_pyg.nn.losses._checks import _check_chunk_size, _check_same_shape, _check_temperature
from sea_pyg.nn.precision import full_precision

__all__ = ["solosim_loss", "SoloSimLoss", "info_nce_loss", "InfoNCE"]


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

    If ``low`` is given (``torch.bfloat16``; the callers pass it under bfloat16 autocast) and
    so is ``bound`` (the logits minus the bound lie in ``[-2 bound, 0]``, so the largest terms
    of the sum are rounded least), the three products per chunk (the logits,
    :math:`P \mathbf{K}`, :math:`P^\top \mathbf{q}`) take ``low`` operands and the logits
    buffer is in ``low``; the row sums of the
    exponentials, the log-sum-exp, the positive logits and both gradient accumulators stay in
    the inputs' float32.
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
        low: torch.dtype | None = None,
    ) -> Tensor:
        m, n = q.size(0), k.size(0)
        need_q = with_grad and ctx.needs_input_grad[0]
        need_k = with_grad and ctx.needs_input_grad[1]
        qs = q * (1.0 / tau)
        if bound is not None:  # [q / tau, -bound] @ [k, 1]^T = logits - bound
            qa = torch.cat([qs, qs.new_full((m, 1), -bound)], dim=1)
            kt = torch.cat([k, k.new_ones(n, 1)], dim=1).t()
        else:  # float32: a row maximum rounded to ``low`` would shift the log-sum-exp
            qa, kt, low = qs, k.t(), None
        # ``low``: the three products in that dtype, the softmax statistics in float32
        dt = q.dtype if low is None else low
        qa, kt, k_mm = qa.to(dt), kt.to(dt), k.to(dt)
        lse = q.new_empty(m)
        buf = q.new_empty(min(chunk_size, m), n, dtype=dt)
        # the float32 copy a ``low`` chunk is summed in (one buffer, not one per chunk)
        sum_buf = None if low is None else q.new_empty(buf.shape)
        grad_q = q.new_empty(q.shape) if need_q else None
        grad_k = torch.zeros_like(k) if need_k else None
        if exclude is not None:
            offsets = torch.arange(buf.size(0), device=q.device) * n
        for start in range(0, m, chunk_size):
            end = min(start + chunk_size, m)
            prob = torch.mm(qa[start:end], kt, out=buf[: end - start])
            if exclude is not None:  # flat fill: scatter_ of a scalar is slow on bfloat16
                flat = exclude[start:end] + offsets[: end - start]
                prob.view(-1).index_fill_(0, flat, float("-inf"))
            if bound is None:
                shift = prob.amax(dim=1)
                prob.sub_(shift.unsqueeze(1))
            else:
                shift = bound
            prob.exp_()
            total = (prob if sum_buf is None else sum_buf[: end - start].copy_(prob)).sum(dim=1)
            lse[start:end] = total.log().add_(shift)
            if need_q or need_k:
                inv = total.reciprocal_().unsqueeze(1)  # rows of P = prob / total
                if need_q:
                    if low is None:
                        torch.mm(prob, k, out=grad_q[start:end]).mul_(inv)
                    else:
                        grad_q[start:end] = torch.mm(prob, k_mm).float().mul_(inv)
                if need_k:
                    if low is None:
                        grad_k.addmm_(prob.t(), q[start:end] * inv)
                    else:
                        grad_k.add_(torch.mm(prob.t(), (q[start:end] * inv).to(dt)))
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
            None, None, None, None, None, None, None,
        )


def _low_precision(x: Tensor) -> torch.dtype | None:
    """``torch.bfloat16`` when bfloat16 autocast is on for ``x``'s device, else ``None``."""
    device = x.device.type
    if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16:
        return torch.bfloat16
    return None


def _row_cross_entropy(
    q: Tensor,
    k: Tensor,
    target: Tensor,
    exclude: Tensor | None,
    tau: float,
    chunk_size: int | None,
    bounded: bool = False,
    low: torch.dtype | None = None,
) -> Tensor:
    if chunk_size is not None:
        bound = 1.0 / tau if bounded and 2.0 / tau < 80.0 else None
        with_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
        return _ChunkedRowCrossEntropy.apply(q, k, target, exclude, tau, chunk_size, bound,
                                             with_grad, low)
    logits = (q @ k.T) / tau
    if exclude is not None:
        mask = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
        mask.scatter_(1, exclude.unsqueeze(1), True)
        logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, target)


def _pair_inputs(
    a: Tensor, b: Tensor, temperature: float, chunk_size: int | None, normalize: bool
) -> tuple[Tensor, Tensor, float, int | None]:
    """Checked arguments of a two-view contrastive loss, the views L2-normalised if asked."""
    temperature = _check_temperature(temperature)
    chunk_size = _check_chunk_size(chunk_size)
    _check_same_shape(a, b, "a", "b")
    if normalize:
        a = F.normalize(a, dim=-1)
        b = F.normalize(b, dim=-1)
    return a, b, temperature, chunk_size


def solosim_loss(
    a: Tensor,
    b: Tensor,
    temperature: float = 0.2,
    chunk_size: int | None = None,
    normalize: bool = True,
) -> Tensor:
    r"""One-directional cross-modal InfoNCE from ``a`` to ``b``; see :class:`SoloSimLoss`."""
    return _solosim(a, b, temperature, chunk_size, normalize, _low_precision(a))


@full_precision
def _solosim(
    a: Tensor,
    b: Tensor,
    temperature: float,
    chunk_size: int | None,
    normalize: bool,
    low: torch.dtype | None,
) -> Tensor:
    a, b, temperature, chunk_size = _pair_inputs(a, b, temperature, chunk_size, normalize)
    target = torch.arange(a.size(0), device=a.device)
    return _row_cross_entropy(a, b, target, None, temperature, chunk_size, normalize, low)


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
    autograd function: each chunk's softmax is complete, so its contribution to both gradients
    is accumulated in the same pass and the backward pass only scales the two saved
    :math:`(N, D)` gradients; at most ``chunk_size`` :math:`\times N` logits exist at any time.
    Values and gradients equal the dense path up to floating-point summation order. This path
    is not twice differentiable.

    Under bfloat16 autocast (``--precision bf16``) the chunked path with ``normalize`` computes
    its three :math:`N \times N \times D` products in bfloat16 and the softmax statistics (sum
    of exponentials, log-sum-exp, positive logits) and gradient accumulation in float32; the
    dense path, ``normalize=False`` and every call without autocast are float32 throughout.

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
    return _info_nce(a, b, temperature, symmetric, normalize, chunk_size, _low_precision(a))


@full_precision
def _info_nce(
    a: Tensor,
    b: Tensor,
    temperature: float,
    symmetric: bool,
    normalize: bool,
    chunk_size: int | None,
    low: torch.dtype | None,
) -> Tensor:
    a, b, temperature, chunk_size = _pair_inputs(a, b, temperature, chunk_size, normalize)
    n = a.size(0)
    z = torch.cat([a, b], dim=0)  # keys: b_0..b_{N-1} follow a_0..a_{N-1}
    rows = torch.arange(2 * n if symmetric else n, device=a.device)
    target = (rows + n) % (2 * n)  # a_i -> b_i, b_i -> a_i
    q = z if symmetric else a
    return _row_cross_entropy(q, z, target, rows, temperature, chunk_size, normalize, low)


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
