r"""Mixed precision for the training step (``TrainConfig.precision``, ``--precision``).

``"fp32"`` (the default) computes everything in float32: the trainer's code path is the one it
always had, so every number is unchanged.

``"bf16"`` runs the model's training forward pass and its loss terms under
:func:`torch.autocast` with ``dtype=torch.bfloat16`` on the model's device type (CPU or CUDA):

* matrix products (``mm``, ``addmm``, ``bmm``, ``matmul``, ``linear``) take bfloat16 inputs and
  give bfloat16 outputs; other operations run in the dtype of their inputs (on CPU autocast
  keeps only losses such as ``cross_entropy`` / ``mse_loss`` in float32, on CUDA also
  ``exp``, ``log``, ``softmax``, ``logsumexp``, ``sum``, ...);
* the shared loss functions of :mod:`sea_pyg.nn.losses` (BPR, embedding regularisers,
  InfoNCE-style cross entropies, distances, CLUB) take their inputs to float32 first, so their
  log-sigmoid / softmax / log-sum-exp terms are float32 on every device;
* the loss terms are returned to the trainer as float32 and summed in float32; ``backward()``
  runs outside autocast (autograd replays each operation in the dtype of its forward);
* parameters, their gradients and the Adam state stay float32 (autocast casts a parameter's
  value for each product, never the parameter itself);
* products with a torch **sparse** matrix (graph propagation) run in float32 with autocast
  switched off (:func:`sea_pyg.nn.sparse_mm`): CPU has no bfloat16 CSR kernel (autocast would
  otherwise cast the CSR matrix and fail), the products are memory-bound, not arithmetic-bound,
  and a node's sum over many neighbours keeps float32 accuracy;
* auxiliary estimators (SEA's CLUB networks) are fitted after ``backward()``, outside
  autocast, in float32: their detached input pairs are taken to the estimators' float32
  (:func:`sea_pyg.nn.losses.club_gradient_step`);
* ``pre_epoch`` hooks (e.g. FREEDOM's edge pruning) and the **evaluation** run in float32:
  bfloat16 keeps 8 significant bits, so scores within about 0.4 % of each other tie and the
  top-K order of close items would be decided by rounding; the reported metrics measure the
  trained model, not the rounding of its scores, and an evaluation costs about one training
  step per epoch.

A model may name float buffers that its training forward reads only as inputs of matrix
products (e.g. the frozen ``(N, F)`` item features of a linear transform) in
:meth:`~sea_pyg.models.Recommender.low_precision_buffers`: under ``"bf16"`` those are replaced
by a bfloat16 copy for the duration of each training step (made once, made again only if the
buffer changes), so autocast does not cast the full feature matrix at every step. The copy is
never saved: checkpoints, evaluation and ``pre_epoch`` see the float32 buffers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["PRECISIONS", "check_precision", "MixedPrecision"]

#: Accepted values of :attr:`sea_pyg.train.TrainConfig.precision` (``--precision``).
PRECISIONS = ("fp32", "bf16")

_DTYPES = {"bf16": torch.bfloat16}


def check_precision(precision: Any) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a :class:`ValueError` that says
    what to give."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision (--precision) must be one of {list(PRECISIONS)}, got {precision!r}: "
            "'fp32' computes in float32 (the default), 'bf16' runs the training forward under "
            "bfloat16 autocast"
        )
    return precision


def _buffer_owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    try:
        owner = model.get_submodule(path) if path else model
    except AttributeError:
        owner = None
    if owner is None or not isinstance(owner._buffers.get(leaf), Tensor):
        raise ValueError(
            f"{type(model).__name__}.low_precision_buffers() names {name!r}, which is not a "
            "buffer of the model: give names as in model.named_buffers()"
        )
    return owner, leaf


class MixedPrecision:
    """The precision of a trainer's steps (see the module documentation).

    Args:
        precision: ``"fp32"`` or ``"bf16"``.
        device: The model's device; autocast runs on its type (``"cpu"``, ``"cuda"``, ...).
    """

    def __init__(self, precision: str, device: torch.device | str) -> None:
        self.precision = check_precision(precision)
        self.device_type = torch.device(device).type
        self.dtype = _DTYPES.get(self.precision)
        if self.dtype is not None and not torch.amp.is_autocast_available(self.device_type):
            raise ValueError(
                f"precision={precision!r} (--precision) needs torch.autocast on device type "
                f"{self.device_type!r}, which this torch does not support: use 'fp32', or "
                "device 'cpu' / 'cuda'"
            )
        #: buffer name -> (the float32 buffer it was made from, its version, bfloat16 copy)
        self._copies: dict[str, tuple[Tensor, int, Tensor]] = {}

    @property
    def enabled(self) -> bool:
        """Whether steps run under autocast (``precision != "fp32"``)."""
        return self.dtype is not None

    def autocast(self):
        """``torch.autocast`` of this precision (a no-op context for ``"fp32"``)."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    @contextmanager
    def _low_precision_buffers(self, model: nn.Module) -> Iterator[None]:
        names = list(getattr(model, "low_precision_buffers", list)())
        swapped: list[tuple[nn.Module, str, Tensor]] = []
        try:
            for name in names:
                owner, leaf = _buffer_owner(model, name)
                buf = owner._buffers[leaf]
                if not buf.is_floating_point() or buf.dtype == self.dtype:
                    continue
                cached = self._copies.get(name)
                if cached is None or cached[0] is not buf or cached[1] != buf._version:
                    cached = (buf, buf._version, buf.detach().to(self.dtype))
                    self._copies[name] = cached
                owner._buffers[leaf] = cached[2]
                swapped.append((owner, leaf, buf))
            yield
        finally:
            for owner, leaf, buf in reversed(swapped):
                owner._buffers[leaf] = buf

    @contextmanager
    def forward(self, model: nn.Module) -> Iterator[None]:
        """Context of a training forward pass and its loss terms: autocast, with the model's
        :meth:`~sea_pyg.models.Recommender.low_precision_buffers` in bfloat16. A no-op for
        ``"fp32"``."""
        if self.dtype is None:
            yield
            return
        with self._low_precision_buffers(model), self.autocast():
            yield

    def loss_terms(self, terms: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``terms`` with each term in float32 (returned unchanged for ``"fp32"``)."""
        if self.dtype is None:
            return terms  # type: ignore[return-value]
        return {k: v.float() for k, v in terms.items()}
