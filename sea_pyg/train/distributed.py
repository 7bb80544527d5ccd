r"""Data-parallel training with ``torchrun``: :mod:`torch.distributed` and
:class:`~torch.nn.parallel.DistributedDataParallel` (DDP) under the MMRec protocol.

Started as ``torchrun --nproc_per_node=W $(which sea-pyg) train ...`` (or any script that builds
a :class:`~sea_pyg.train.Trainer` under ``torchrun``), each of the ``W`` processes ("ranks")
reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) and joins one process group: gloo on the CPU, NCCL on CUDA (rank ``r`` on
``cuda:LOCAL_RANK``). Without ``WORLD_SIZE > 1`` nothing here is active and training is the
single-process loop.

**The maths of one step.** Every rank holds the same model and draws the same *global* batch of
``B`` rows (2048 under the protocol) from the same seeded sampler; rank ``r`` keeps the slice
:math:`S_r` (``torch.tensor_split`` of the rows, sizes :math:`n_r` differing by at most one,
:math:`\sum_r n_r = B`; concatenated in rank order they are the single-process batch). Its loss
terms :math:`L_r` are the model's, computed on :math:`S_r`. With the weights
:math:`w_r = n_r / B` (:math:`\sum_r w_r = 1`) every rank back-propagates
:math:`W w_r L_r`; DDP averages the gradients over the ranks, so every rank applies

.. math::

    \frac{1}{W} \sum_r \nabla (W w_r L_r) = \sum_r \frac{n_r}{B} \nabla L_r .

* A batch-mean term (BPR, a per-row regulariser divided by the batch size) gives
  :math:`\sum_r \frac{n_r}{B} \frac{1}{n_r} \sum_{i \in S_r} \ell_i = \frac{1}{B}\sum_i \ell_i`:
  the single-process gradient, for even and uneven slices alike (the last, partial batch).
* A term that does not depend on the batch (a full-graph regulariser, SEA's alignment and
  CLUB bound over all items) is the same :math:`T` on every rank, and
  :math:`\sum_r w_r \nabla T = \nabla T`.
* A term that is a non-linear function of sums over the batch's rows (MMRec's un-squared
  embedding norm, :func:`~sea_pyg.nn.emb_loss` with ``batch_rows=True``) computes those sums
  over all ranks (:func:`~sea_pyg.nn.data_parallel.sharded_sum`, differentiable): it is then
  the whole batch's value on every rank, a batch-independent term as above.
* Any other term (a plain sum over the batch, in-batch negatives such as an InfoNCE whose
  negatives are the other rows of the batch, random draws per row) is *not* the single-process
  term: it is the weighted mean of the per-slice terms (docs/distributed.md lists the models).

The logged loss terms are reduced the same way (:math:`\sum_r w_r L_r`), so the per-epoch
losses are those of one process. A step whose reduced loss is not finite updates nothing on
any rank (the single-process rule, decided on the reduced value, so every rank agrees).
A rank whose slice is empty (a last batch of fewer than ``W`` rows) computes the loss on the
batch's first row with weight 0, so that it still takes part in the gradient all-reduce.

**Auxiliary estimators** (SEA's CLUB, :class:`~sea_pyg.train.AuxiliaryTraining`) are fitted on
every rank between the model's ``backward()`` and its optimizer step, as in one process; before
each of their optimizer steps their gradients are reduced with the same weights
(:math:`\sum_r w_r g_r`), so their parameters stay identical on every rank and equal those of
one process when the estimator's inputs are batch means or batch-independent (SEA's: all items).

**Parameters stay identical on every rank**: rank 0's are broadcast when the DDP wrapper is
built, rank 0's resumed state (a resume) is sent to the others afterwards, every rank
applies the same reduced gradients with the same optimizer,
DDP (``find_unused_parameters=True``) copes with parameters a step does not use (a pre-training
stage, a branch not taken) and leaves the gradient of a parameter unused on every rank untouched
(``None``: Adam skips it, as in one process). Buffers are not broadcast: every rank rebuilds
them from the same data and seed. At the end of every epoch rank 0's torch random state is sent
to the others, so draws made outside the steps (``pre_epoch``, e.g. FREEDOM's edge pruning) are
the same on every rank even after a model drew per-row random numbers inside its steps.

**Rank 0 alone evaluates and writes** (the run folder, ``results.json``, checkpoints, the log).
The others wait in a broadcast for its decision after every epoch (the epoch's record, the
early-stopping state, the best epoch's metrics and random state); an exception on rank 0 in
that part (an evaluation error, a full disk, a pruned tuning trial) is sent to them, and they
raise :class:`RankZeroError` instead of waiting for ever. A resume is read by rank 0 and its
state (weights, optimizer, random states, history) is sent to the others.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from sea_pyg.nn.data_parallel import data_parallel_step

__all__ = [
    "Distributed",
    "RankZeroError",
    "env_world_size",
    "is_main_process",
    "init_from_env",
    "shutdown",
]


class RankZeroError(RuntimeError):
    """Raised on the ranks other than 0 when rank 0 failed in a part only it runs."""


def env_world_size() -> int:
    """``WORLD_SIZE`` from torchrun's environment (1 when unset)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(value)
    except ValueError:
        raise ValueError(
            f"WORLD_SIZE={value!r} in the environment is not an integer; start the command "
            "with torchrun (which sets it), or unset it"
        ) from None
    if size < 1:
        raise ValueError(f"WORLD_SIZE={size} in the environment must be >= 1")
    return size


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ValueError(
            f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} is set but {name} is not: start "
            "the command with torchrun --nproc_per_node=N (it sets RANK, LOCAL_RANK, "
            "WORLD_SIZE, MASTER_ADDR and MASTER_PORT)"
        )
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} in the environment is not an integer") from None


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only one): the one that writes and prints."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0") or 0) == 0


def init_from_env(device: str = "cpu") -> bool:
    """Joins torchrun's process group when ``WORLD_SIZE > 1`` and none is initialised yet:
    backend NCCL when ``device`` is CUDA (rank on ``cuda:LOCAL_RANK``), else gloo. Returns
    whether this call initialised it (the caller then owns it: :func:`shutdown`)."""
    if env_world_size() == 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ValueError(
                f"WORLD_SIZE > 1 but {name} is not set: start the command with torchrun "
                "--nproc_per_node=N"
            )
    cuda = torch.device(device).type == "cuda"
    if cuda:
        visible = torch.cuda.device_count()
        if local_rank >= visible:  # NCCL needs one GPU per process on a machine
            raise ValueError(
                f"LOCAL_RANK={local_rank} needs GPU {local_rank} but this machine shows "
                f"{visible} (NCCL takes one GPU per process): start torchrun with "
                f"--nproc_per_node={max(visible, 1)} or fewer, or train with --device cpu "
                "(gloo)"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend="nccl" if cuda else "gloo", rank=rank, world_size=env_world_size()
    )
    return True


def shutdown() -> None:
    """Leaves the process group (if one is initialised)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _LossModule(nn.Module):
    """What DDP wraps: ``forward(batch) = model.loss(batch)`` (DDP hooks ``forward``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Tensor) -> dict[str, Tensor]:
        return self.model.loss(batch)


def _ddp_kwargs() -> dict[str, Any]:
    """No buffer broadcasts (every rank rebuilds its buffers; some are sparse), in the
    spelling of the installed torch (``forward_sync_buffers`` replaced ``broadcast_buffers``)."""
    params = inspect.signature(nn.parallel.DistributedDataParallel).parameters
    out: dict[str, Any] = {"find_unused_parameters": True}
    if "forward_sync_buffers" in params and "init_sync" in params:
        # parameters are broadcast by Distributed.sync_parameters (buffers stay local)
        out.update(forward_sync_buffers=False, init_sync=False)
    else:
        out["broadcast_buffers"] = False
    return out


class Distributed:
    """The process group of one training run, as the trainer sees it.

    ``Distributed(world_size=1)`` (what :meth:`from_env` gives without torchrun) is inactive:
    every method is then the single-process identity.

    Args:
        device: The training device (``"cuda"`` becomes ``cuda:LOCAL_RANK``).
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.world_size = dist.get_world_size() if self.active else 1
        self.rank = dist.get_rank() if self.active else 0
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank)) if self.active else 0
        dev = torch.device(device)
        if self.active and dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", self.local_rank)
        self.device = dev
        self.backend = dist.get_backend() if self.active else None
        # objects travel over gloo even when the gradients use NCCL (waiting ranks do not spin)
        self._objects = (
            dist.new_group(backend="gloo") if self.active and self.backend != "gloo" else None
        )
        # the differentiable batch sums of the models' losses (sea_pyg.nn.data_parallel)
        self._stats = dist.new_group() if self.active else None
        self.weight = 1.0  # w_r of the current step
        self._ddp: nn.Module | None = None

    @classmethod
    def from_env(cls, device: str | torch.device = "cpu") -> Distributed:
        """Joins torchrun's process group if the environment asks for one
        (:func:`init_from_env`), and describes it."""
        init_from_env(str(device))
        return cls(device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def per_rank_batch(self, batch_size: int) -> int:
        """Rows of a full global batch on the largest slice: ``ceil(batch_size / W)``."""
        return -(-int(batch_size) // self.world_size)

    # ------------------------------------------------------------------ objects from rank 0
    def broadcast(self, obj: Any = None) -> Any:
        """Rank 0's ``obj`` on every rank (the others' argument is ignored)."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self._objects)
        return box[0]

    def on_main(
        self, fn: Callable[[], Any], share: Callable[[Any], Any], apply: Callable[[Any], Any]
    ) -> Any:
        """Runs ``fn`` on rank 0 alone, then gives ``share(fn())`` (made on rank 0) to
        ``apply`` on the other ranks. An exception of ``fn`` or ``share`` on rank 0 is sent
        instead: rank 0 re-raises it, the others raise :class:`RankZeroError`. Returns
        ``fn()`` on rank 0 and ``apply(...)`` elsewhere."""
        if not self.active:
            return fn()
        if self.is_main:
            try:
                result = fn()
                payload = share(result)
            except BaseException as exc:
                self.broadcast(("error", f"{type(exc).__name__}: {exc}"))
                raise
            self.broadcast(("ok", payload))
            return result
        kind, payload = self.broadcast()
        if kind == "error":
            raise RankZeroError(f"rank 0 failed, so rank {self.rank} stops too: {payload}")
        return apply(payload)

    # ------------------------------------------------------------------ parameters
    def sync_parameters(self, model: nn.Module) -> None:
        """Copies rank 0's parameters to every rank, after checking that every rank has the
        same parameter names and shapes."""
        if not self.active:
            return
        shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
        every = [None] * self.world_size
        dist.all_gather_object(every, shapes, group=self._objects)
        for r, other in enumerate(every):
            if other != shapes:
                raise RuntimeError(
                    f"rank {r} builds another model than rank {self.rank} (parameter names or "
                    "shapes differ): every rank must run the same command"
                )
        with torch.no_grad():
            for p in model.parameters():
                dist.broadcast(p.data, src=0)

    def wrap(self, model: nn.Module) -> None:
        """Builds the DDP wrapper of ``model.loss`` (after :meth:`sync_parameters`)."""
        if not self.active:
            return
        self.sync_parameters(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        self._ddp = nn.parallel.DistributedDataParallel(
            _LossModule(model), device_ids=ids, **_ddp_kwargs()
        )

    def parameters_equal(self, model: nn.Module) -> bool:
        """Whether every rank holds exactly rank 0's parameters (all ranks must call it)."""
        if not self.active:
            return True
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
            ref = flat.clone()
            dist.broadcast(ref, src=0)
            same = torch.tensor([float(torch.equal(flat, ref))], device=flat.device)
            dist.all_reduce(same, op=dist.ReduceOp.MIN)
        return bool(same.item() == 1.0)

    # ------------------------------------------------------------------ one step
    def shard(self, batch: Tensor) -> tuple[Tensor, float]:
        """This rank's slice of the global ``batch`` (rows are its columns) and its weight
        :math:`w_r = n_r / B`."""
        if not self.active:
            return batch, 1.0
        total = batch.size(1)
        local = torch.tensor_split(batch, self.world_size, dim=1)[self.rank]
        if local.size(1) == 0:  # fewer rows than ranks: take part with weight 0
            return batch[:, :1], 0.0
        return local, local.size(1) / total

    def reduce_values(self, values: Mapping[str, Tensor | float]) -> dict[str, Tensor]:
        r"""``{name: \sum_r w_r v_r}`` of logged values (every rank has the same names), as
        0-d float64 tensors (on the device for NCCL, else on the CPU)."""
        dev = self._device_for_collectives()
        if not values:
            return {}
        vec = torch.stack(
            [torch.as_tensor(v, dtype=torch.float64, device=dev).detach() for v in values.values()]
        )
        if self.active:
            vec = vec * self.weight if self.weight else torch.zeros_like(vec)
            dist.all_reduce(vec)
        return dict(zip(values, vec.unbind(), strict=True))

    def _device_for_collectives(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def train_step(
        self, batch: Tensor, optimizer: torch.optim.Optimizer, auxiliary: Any,
        precision: Any = None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]] | None:
        """One data-parallel step (see the module documentation); returns the reduced
        ``(loss terms, auxiliary losses)`` or ``None`` when the reduced loss is not finite.
        ``precision``: the trainer's :class:`~sea_pyg.train.precision.MixedPrecision` (its
        autocast and feature copies around the forward pass), or ``None`` for float32."""
        local, self.weight = self.shard(batch)
        optimizer.zero_grad(set_to_none=True)
        with data_parallel_step(self._stats), (
            precision.forward(self._ddp.module.model) if precision is not None else nullcontext()
        ):
            terms = self._ddp(local)
            if precision is not None:
                terms = precision.loss_terms(terms)
        logged = self.reduce_values({k: v.detach() for k, v in terms.items()})
        if logged and not bool(torch.isfinite(torch.stack(list(logged.values())).sum())):
            return None
        loss = sum(terms.values())
        (loss * (self.weight * self.world_size)).backward()
        aux = self.reduce_values(auxiliary.step())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # as Trainer._train_step: no gradient between steps
        return logged, aux

    def sync_optimizers(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        r"""Before each step of these optimizers (the auxiliary estimators'), their gradients
        become :math:`\sum_r w_r g_r` on every rank (``None`` stays ``None`` where no rank had
        one)."""
        if not self.active:
            return
        for opt in optimizers:
            opt.register_step_pre_hook(lambda o, args, kwargs: self._reduce_grads(o))

    def _reduce_grads(self, optimizer: torch.optim.Optimizer) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if not params:
            return
        # one all-reduce: the weighted gradients, then a 1 per parameter that has one
        flat = torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) * self.weight
                for p in params
            ]
            + [torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)]
        )
        dist.all_reduce(flat)
        has = flat[-len(params) :].tolist()
        offset = 0
        for p, h in zip(params, has, strict=True):
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone() if h > 0 else None
            offset += n

    # ------------------------------------------------------------------ random state
    def rng_state(self) -> dict[str, Any]:
        """This process's torch random state (CPU and the training CUDA device)."""
        out: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            out["cuda"] = torch.cuda.get_rng_state(self.device)
        return out

    def set_rng_state(self, state: Mapping[str, Any]) -> None:
        torch.set_rng_state(state["cpu"])
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def describe(self, batch_size: int) -> dict[str, Any]:
        """What ``results.json`` records: ``world_size``, ``per_rank_batch`` (the largest
        slice of a full batch, ``ceil(batch_size / world_size)``) and the backend."""
        return {
            "world_size": self.world_size,
            "per_rank_batch": self.per_rank_batch(batch_size),
            "backend": self.backend,
        }

    # ------------------------------------------------------------------ the trainer's protocol
    def resume(self, trainer: Any) -> str | None:
        """``trainer._try_resume`` on rank 0; the other ranks restore the state it restored
        (weights, optimizers, history, random states) and get its answer."""

        def share(state: str | None) -> tuple[str | None, dict | None]:
            return state, (trainer._checkpoint() if state is not None else None)

        def apply(payload: tuple[str | None, dict | None]) -> str | None:
            state, ckpt = payload
            if ckpt is not None:
                trainer._restore(ckpt)
            return state

        return self.on_main(trainer._try_resume, share, apply)

    def close_epoch(self, trainer: Any, fn: Callable[[], Any]) -> None:
        """``fn`` (validation, log, commit, callback of the epoch just trained) on rank 0; the
        other ranks take over its outcome: the epoch's record, the early-stopping state, the
        best epoch's metrics and rank 0's random state."""

        def share(_: Any) -> dict[str, Any]:
            return {
                "record": trainer.history[-1],
                "epoch": trainer.epoch,
                "stopping": trainer.stopping.state_dict(),
                "best": (trainer.best_epoch, trainer.best_valid, trainer.best_test),
                "rng": self.rng_state(),
            }

        def apply(state: dict[str, Any]) -> None:
            trainer.history.append(state["record"])
            trainer.epoch = state["epoch"]
            trainer.stopping.load_state_dict(state["stopping"])
            trainer.best_epoch, trainer.best_valid, trainer.best_test = state["best"]
            self.set_rng_state(state["rng"])

        self.on_main(fn, share, apply)
