"""The training loop of the MMRec protocol, for any :class:`~sea_pyg.models.Recommender`."""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from sea_pyg.data.mmrec import EDGE_TYPE
from sea_pyg.data.sampler import BPRSampler
from sea_pyg.io import fault_point, text_writer, torch_writer
from sea_pyg.models.base import Recommender
from sea_pyg.train.auxiliary import AuxiliaryTraining
from sea_pyg.train.checkpoint import (
    dataset_metadata,
    frozen_tensors,
    load_checkpoint,
    load_weights,
    model_payload,
)
from sea_pyg.train.config import TrainConfig
from sea_pyg.train.distributed import Distributed
from sea_pyg.train.metrics import PerUserRanking, evaluate_ranking, evaluate_ranking_per_user
from sea_pyg.train.optim import adam, step_unless
from sea_pyg.train.per_user import data_fingerprint, per_user_csv
from sea_pyg.train.precision import MixedPrecision
from sea_pyg.train.resume import differences_message, refused_changes, resume_differences
from sea_pyg.train.runfolder import (
    BEST,
    LAST,
    PER_USER,
    RESULTS,
    RUN_FILES,
    RunFolder,
    RunFolderError,
    check_output_dir,
    jsonable,
    read_results,
)
from sea_pyg.train.stopping import EarlyStopping

__all__ = ["Trainer", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _headline(metrics: dict[str, float]) -> dict[str, float]:
    """The Recall/NDCG entries, for the per-epoch log line."""
    return {k: v for k, v in metrics.items() if k.split("@")[0] in ("recall", "ndcg")}


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())


def _check_run_files(run_files: Mapping[str, str] | None) -> dict[str, str]:
    out = {}
    for name, text in dict(run_files or {}).items():
        name = str(name)
        if (
            not name or name in (".", "..") or "/" in name or "\\" in name
            or name in (*RUN_FILES, ".lock") or name.startswith(".")
        ):
            raise ValueError(
                f"run_files: {name!r} is not allowed: give plain file names (no folders, not "
                f"hidden, none of {list(RUN_FILES)})"
            )
        if not isinstance(text, str):
            raise ValueError(f"run_files[{name!r}] must be text (str), got {type(text).__name__}")
        out[name] = text
    return out


class Trainer:
    """Fit a :class:`~sea_pyg.models.Recommender` under the MMRec protocol.

    Per epoch: ``model.pre_epoch(epoch)``; one pass over shuffled training rows in mini-batches
    (fresh negatives each batch), where each step is ``zero_grad -> loss terms -> backward ->
    auxiliary estimator steps -> Adam step``; then full-sort evaluation on the validation split.
    The test split is evaluated whenever the rounded validation metric strictly improves, so the
    reported test metrics are those of the best-validation epoch (MMRec's
    ``best_test_upon_valid``), without paying for a test pass every epoch.

    Auxiliary estimators (:meth:`~sea_pyg.models.Recommender.auxiliary_estimators`, e.g. SEA's
    CLUB networks) get their own Adam optimizer (weight decay 0) and their declared number of
    inner steps between the model's ``backward()`` and its optimizer step (the official SEA
    order); they are left out of the model's optimizer, and their optimizer state is saved in
    ``last.pt``.

    **Pre-training stage.** A model whose ``pretrain_epochs`` is ``P > 0`` (e.g. PAMD) spends
    its first ``P`` epochs (counted in ``epochs``) pre-training: each such epoch is one pass over
    all items in a fresh random order, in mini-batches of ``batch_size`` item ids given to
    ``model.loss`` as ``(1, B)`` tensors (drawn from the sampler's generator, so resume stays
    exact); there is no validation and no early stopping, and the history records
    ``"stage": "pretrain"``. The first training epoch after it starts from a fresh optimizer
    state (a new Adam, as the two-stage scripts of such models do).

    Early stopping: the validation metric is rounded to 4 decimals; an epoch improves only if it
    is strictly greater than the best so far (initially -1); training stops after
    ``patience + 1`` consecutive non-improving epochs, after a non-finite loss, or at the epoch cap.

    **The run folder.** With ``output_dir`` set, :meth:`fit` claims the folder (a lock: a second
    run into it is refused; a folder holding a run is refused unless ``resume`` or ``overwrite``),
    writes ``run_files``, and commits after every ``checkpoint_every`` epochs and at the end, in
    one atomic step (see :mod:`sea_pyg.train.runfolder`, which also says which file is the truth):
    ``best.pt`` (model weights at the best epoch so far, the model's registry description and the
    dataset's metadata and fingerprints: a saved model that :func:`sea_pyg.load_model` rebuilds)
    with ``per_user.csv`` (each evaluated user's validation and test metrics at that epoch, see
    :mod:`sea_pyg.train.per_user`), ``last.pt`` (everything needed to resume exactly) and
    ``results.json`` (``status`` ``"running"`` / ``"interrupted"`` / ``"finished"``, epochs run,
    best epoch, metrics, history, and the ``stop_reason`` once finished). ``last.pt`` leaves out
    the frozen tensors the model rebuilds from the data (see :mod:`sea_pyg.train.checkpoint`);
    ``best.pt`` holds the whole ``state_dict``. Checkpoints load with
    ``torch.load(path, weights_only=True)``.

    **Resume** (``resume=True``) continues from ``last.pt`` after checking that the model,
    hyper-parameters, settings and data are those it was trained with (see
    :mod:`sea_pyg.train.resume`); a run that finished (early stop, non-finite loss, or its epoch
    cap when ``epochs`` is not raised) is reported and left unchanged. Resuming is exact: at
    a fixed device and thread count it ends with the same history, metrics and ``best.pt`` as
    an uninterrupted run (tested with ``SIGKILL`` at many moments, checkpoint writes included).

    **Under torchrun** (``WORLD_SIZE > 1``) every rank trains on its slice of each global batch
    with DDP and rank 0 alone evaluates and writes (:mod:`sea_pyg.train.distributed`,
    docs/distributed.md); ``results.json`` records ``world_size`` and ``per_rank_batch``.

    Args:
        model: The recommender.
        data: A :class:`HeteroData` from :func:`sea_pyg.data.read_mmrec` (or the same layout).
        config: A :class:`TrainConfig`.
        model_info: JSON-able description of the model (name and constructor arguments), stored
            in checkpoints and results so a run can be identified and rebuilt.
        run_files: Extra text files ``{file name: text}`` (e.g. the CLI's resolved
            ``config.yaml``) written atomically into ``output_dir`` once :meth:`fit` has claimed
            it (after the lock and the refusal checks), before training. Not written when a
            resume finds the run finished.
        epoch_callback: Called as ``epoch_callback(trainer, record)`` after every epoch but
            the last (after that epoch's commit), ``record`` being the epoch's entry of
            ``history``. An exception it raises ends training as any other does (the folder
            keeps its last commit and says ``"interrupted"``): ``sea-pyg tune`` prunes a
            trial this way (``optuna.TrialPruned``).

    Raises:
        RunFolderError: (a ``ValueError``) ``output_dir`` is a file, not writable, or holds a
            run while neither ``resume`` nor ``overwrite`` is set (checked here and again by
            :meth:`fit` under the lock).
    """

    def __init__(
        self,
        model: Recommender,
        data: HeteroData,
        config: TrainConfig | None = None,
        model_info: dict[str, Any] | None = None,
        run_files: Mapping[str, str] | None = None,
        epoch_callback: Callable[[Trainer, dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.epoch_callback = epoch_callback
        self.run_files = _check_run_files(run_files)
        #: torchrun's process group (inactive in one process); rank 0 alone writes
        self.dist = Distributed.from_env(self.config.device)
        out = self.config.output_dir if self.dist.is_main else None
        self.output_dir = Path(out) if out else None
        if self.output_dir is not None:
            check_output_dir(self.output_dir, self.config.resume, self.config.overwrite)
        self.device = self.dist.device
        #: Check each step's loss on the host (CPU); on accelerators the check stays on the device
        self.host_checks = self.device.type == "cpu"
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        self.model = model.to(self.device)
        self.precision = MixedPrecision(self.config.precision, self.device)
        if self.config.minibatch:  # the model samples each batch's neighbourhood (docs/scale.md)
            self.model.set_minibatch(self.config.fanout, chunk_size=self.config.eval_chunk_size)
        self.model_info = dict(model_info or {"name": type(model).__name__})
        store = data[EDGE_TYPE]
        self.num_users = int(data["user"].num_nodes)
        self.num_items = int(data["item"].num_nodes)
        self.dataset_name = str(getattr(data, "name", "unknown"))
        self.dataset_meta = dataset_metadata(data)
        self._data_fingerprint = data_fingerprint(self.dataset_meta)  # fixed: hashed once
        self.train_edge_index = store.edge_index.to(self.device)
        self.val_edge_index = store.val_edge_index.to(self.device)
        self.test_edge_index = store.test_edge_index.to(self.device)
        kmax = max(self.config.topk)
        if kmax > self.num_items:
            raise ValueError(
                f"TrainConfig.topk: cut-off {kmax} exceeds the number of items {self.num_items}"
            )
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.sampler = BPRSampler(
            store.edge_index,
            self.num_users,
            self.num_items,
            batch_size=self.config.batch_size,
            negatives=model.uses_negatives,
            generator=self.generator,
            device=self.device,
        )
        self.auxiliary = AuxiliaryTraining(self.model.auxiliary_estimators())
        self.optimizer = adam(
            self.auxiliary.model_parameters(self.model),
            lr=self.config.lr,
            weight_decay=self.config.weight_decay,
        )
        self.dist.sync_optimizers(list(self.auxiliary.optimizers.values()))
        self.dist.wrap(self.model)
        #: Frozen tensors as the constructor built them: left out of last.pt while unchanged.
        self.frozen = frozen_tensors(self.model) if self.output_dir is not None else {}
        self._reset_state()

    # -------------------------------------------------------------------------------------------
    def _reset_state(self) -> None:
        self.epoch = 0
        self.stopping = EarlyStopping(self.config.patience)
        self.best_epoch = -1
        self.best_valid: dict[str, float] = {}
        self.best_test: dict[str, float] = {}
        #: ``{"valid": PerUserRanking, "test": PerUserRanking}`` of the best epoch (``{}``
        #: before it, and after a resume until the run improves again: the run folder's
        #: ``per_user.csv`` holds it then).
        self.best_per_user: dict[str, PerUserRanking] = {}
        self.history: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.finished = False
        self.resumes: list[dict[str, Any]] = []
        self._best_payload: dict[str, Any] | None = None  # best.pt not yet committed
        self._folder: RunFolder | None = None
        #: What :meth:`fit` found: ``None`` (a new run), ``"resumed"`` or ``"finished"`` (a
        #: resume of a run that was over: nothing was trained or written).
        self.resumed: str | None = None

    def _log(self, msg: str) -> None:
        if self.config.verbose and self.dist.is_main:
            print(msg, flush=True)

    def evaluate(self, split: str = "valid") -> dict[str, float]:
        """Full-sort metrics of the current model on ``"valid"`` or ``"test"`` (not rounded),
        scored with :meth:`~sea_pyg.models.Recommender.score`."""
        return self._evaluate(split, evaluate_ranking)

    def evaluate_per_user(self, split: str = "valid") -> PerUserRanking:
        """:meth:`evaluate` with each evaluated user's metrics
        (:func:`~sea_pyg.train.metrics.evaluate_ranking_per_user`)."""
        return self._evaluate(split, evaluate_ranking_per_user)

    def _evaluate(self, split: str, evaluate: Any) -> Any:
        if split not in ("valid", "test"):
            raise ValueError(f"`split` must be 'valid' or 'test', got {split!r}")
        edges = self.val_edge_index if split == "valid" else self.test_edge_index
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self.config.knn_scope():  # LATTICE/MICRO rebuild graphs
                state = self.model.scoring_state()
                return evaluate(
                    lambda users: self.model.score(users, state),
                    edges,
                    self.train_edge_index,
                    self.num_users,
                    self.num_items,
                    ks=self.config.topk,
                    metrics=self.config.metrics,
                    chunk_size=self.config.eval_chunk_size,
                )
        finally:
            self.model.train(was_training)

    # ------------------------------------------------------------------------------ checkpoints
    def _checkpoint(self) -> dict[str, Any]:
        """``last.pt``: the whole training state."""
        return model_payload(
            self.model,
            self.model_info,
            self.dataset_meta,
            rebuilt=self.frozen,
            config=jsonable(asdict(self.config)),
            optimizer=self.optimizer.state_dict(),
            auxiliary=self.auxiliary.state_dict(),
            epoch=self.epoch,
            stopping=self.stopping.state_dict(),
            best_epoch=self.best_epoch,
            best_valid=self.best_valid,
            best_test=self.best_test,
            history=self.history,
            finished=self.finished,
            stop_reason=self.stop_reason,
            resumes=self.resumes,
            sampler_rng=self.generator.get_state(),
            torch_rng=torch.get_rng_state(),
            **({"cuda_rng": torch.cuda.get_rng_state(self.device)}
               if self.device.type == "cuda" else {}),
        )

    def _restore(self, ckpt: dict[str, Any]) -> None:
        load_weights(self.model, ckpt, check=False)  # the data check came before
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.auxiliary.load_state_dict(ckpt.get("auxiliary", {}))
        self.epoch = int(ckpt["epoch"])
        self.stopping.load_state_dict(ckpt["stopping"])
        self.best_epoch = int(ckpt["best_epoch"])
        self.best_valid = dict(ckpt["best_valid"])
        self.best_test = dict(ckpt["best_test"])
        self.history = list(ckpt["history"])
        self.resumes = list(ckpt.get("resumes", []))
        # RNG states must be CPU byte tensors (a checkpoint loaded onto a GPU moved them there)
        self.generator.set_state(ckpt["sampler_rng"].cpu())
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        if "cuda_rng" in ckpt and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["cuda_rng"].cpu(), self.device)
        self.finished, self.stop_reason = self._ended(ckpt)

    def _ended(self, ckpt: dict[str, Any]) -> tuple[bool, str | None]:
        """Whether the run of ``ckpt`` (``last.pt``) finished, and why."""
        if "finished" in ckpt:
            return bool(ckpt["finished"]), ckpt.get("stop_reason")
        # format 2 (no "finished"): infer it
        stopping = EarlyStopping(self.config.patience)
        stopping.load_state_dict(ckpt["stopping"])
        if stopping.bad_steps > int((ckpt.get("config") or {}).get("patience", stopping.patience)):
            return True, self._early_stop_reason()
        saved_epochs = (ckpt.get("config") or {}).get("epochs")
        if saved_epochs is not None and int(ckpt["epoch"]) >= int(saved_epochs):
            return True, "epoch cap"
        return False, None

    def _try_resume(self) -> str | None:
        """Restores the state of ``last.pt``; returns ``None`` (nothing to resume: a new run),
        ``"resumed"`` or ``"finished"`` (the run is over: nothing to do, nothing changed)."""
        if not (self.config.resume and self._folder is not None):
            return None
        folder = self.output_dir
        if not ((folder / LAST).exists() or (folder / f".{LAST}.next").exists()):
            if any((folder / n).exists() for n in (BEST, RESULTS)):
                raise RunFolderError(
                    f"cannot resume: {folder} holds a run but no {LAST}; replace it with "
                    "overwrite=True (--overwrite) or choose another output folder "
                    "(output_dir, --out)"
                )
            self._log(f"resume: no checkpoint in {folder}, starting a new run")
            return None
        ckpt = load_checkpoint(folder / LAST, map_location=self.device)
        done = int(ckpt["epoch"])
        diffs = resume_differences(
            ckpt, self.config, self.model_info, self.dataset_meta, self.frozen
        )
        refused = refused_changes(diffs, self.config.allow_changes)
        if refused:  # finished or not: this is another run than the one in the folder
            raise RunFolderError(differences_message(ckpt["path"], diffs, refused))
        finished, reason = self._ended(ckpt)
        if finished and not (reason == "epoch cap" and self.config.epochs > done):
            hint = (
                "; to train it further, raise epochs (--epochs) above its cap"
                if reason == "epoch cap" else ""
            )
            self._log(
                f"resume: the run in {folder} already finished ({reason}) after {done} "
                f"epoch(s), best epoch {ckpt.get('best_epoch')}: nothing to do, nothing "
                f"changed{hint}"
            )
            self._restore(ckpt)
            return "finished"
        if self.config.epochs < done:
            raise RunFolderError(
                f"cannot resume {folder} with epochs={self.config.epochs} (--epochs): it has "
                f"already trained {done} epochs; give epochs >= {done}"
            )
        self._restore(ckpt)
        self.finished, self.stop_reason = False, None  # a cap-finished run continues
        saved_epochs = (ckpt.get("config") or {}).get("epochs")
        changes = dict(diffs)
        if saved_epochs is not None and saved_epochs != self.config.epochs:
            changes["epochs"] = f"{saved_epochs!r} -> {self.config.epochs!r}"
        self.resumes.append({"epoch": done, "changes": changes})
        self._log(
            f"resumed from {ckpt['path']} after {done} epoch(s) (best epoch {self.best_epoch})"
            + (f"; changes: {changes}" if changes else "")
        )
        return "resumed"

    def _commit(self, results: dict[str, Any] | None = None) -> None:
        """Writes ``last.pt``, ``results.json`` (``results``, default :meth:`results`) and, if
        the model improved since the last commit, ``best.pt``, in one step."""
        if self._folder is None:
            self._best_payload = None
            return
        files = {}
        if self._best_payload is not None:
            files[BEST] = torch_writer(self._best_payload)
            per_user = {k: (v.users, v.values) for k, v in self.best_per_user.items()}
            files[PER_USER] = text_writer(per_user_csv(per_user))
        files[LAST] = torch_writer(self._checkpoint())
        results = self.results() if results is None else results
        files[RESULTS] = text_writer(json.dumps(jsonable(results), indent=2))
        self._folder.commit(files)
        self._best_payload = None

    # ---------------------------------------------------------------------------------- training
    def _train_step(self, batch: torch.Tensor) -> tuple[dict, dict] | None:
        """One mini-batch; returns ``(loss terms, auxiliary losses)``, or ``None`` when the
        loss is not finite (nothing is updated then). Under torchrun: this rank's slice of it,
        see :mod:`sea_pyg.train.distributed`."""
        if self.dist.active:
            return self.dist.train_step(batch, self.optimizer, self.auxiliary, self.precision)
        self.optimizer.zero_grad(set_to_none=True)
        with self.precision.forward(self.model):  # autocast under "bf16" (train/precision.py)
            terms = self.precision.loss_terms(self.model.loss(batch))
            loss = sum(terms.values())
        bad = None
        if self.host_checks:  # on a CPU a host read costs nothing: stop at once
            if not torch.isfinite(loss):
                return None
        else:  # no host read per step: a non-finite batch updates nothing (the fused Adam's
            # found_inf, the estimators' skip flag) and train_epoch reads the flag once
            bad = ~torch.isfinite(loss.detach())
            self._nonfinite = self._nonfinite | bad
        loss.backward()
        aux = self.auxiliary.step(skip=bad)
        if bad is None:
            self.optimizer.step()
        else:
            step_unless(self.optimizer, bad)
        self.optimizer.zero_grad(set_to_none=True)  # no dense gradient held between steps
        return terms, aux

    def _set_lr(self, epoch: int) -> None:
        """The learning rate of ``epoch`` (:attr:`TrainConfig.lr_schedule`); a function of the
        epoch alone, so a resumed run continues on the same schedule."""
        decay, step = self.config.lr_schedule
        if decay == 1.0:
            return
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * decay ** (epoch / step)

    def train_epoch(self, epoch: int) -> tuple[dict[str, float], set[str]] | None:
        """One pass over the training rows; returns ``(mean of every logged term per batch,
        names of the model's own loss terms)``, or ``None`` after a non-finite loss."""
        self.model.train()
        self.model.pre_epoch(epoch)
        self._set_lr(epoch)
        batches = self.sampler
        if self._pretraining(epoch):  # a pass over the items (see the class documentation)
            order = torch.randperm(self.num_items, generator=self.generator)
            batches = [b.view(1, -1).to(self.device) for b in order.split(self.config.batch_size)]
        elif epoch == self._pretrain_epochs() > 0:
            self.optimizer.state.clear()  # fine-tuning starts a fresh Adam
        # per-term sums stay on the model's device (float64: the same values as summing Python
        # floats in this order): no host round trip per step, one at the end of the epoch
        sums: dict[str, torch.Tensor] = {}
        model_terms: set[str] = set()
        self._nonfinite = self._nonfinite & False
        bar = tqdm(
            batches,
            total=len(batches),
            desc=f"epoch {epoch}",
            leave=False,
            disable=not (self.config.progress and self.dist.is_main),
            file=sys.stderr,
        )
        try:
            for batch in bar:
                step = self._train_step(batch)
                if step is None:
                    return None
                terms, aux = step
                for k, v in (*terms.items(), *aux.items()):
                    v = v.detach().to(torch.float64)
                    sums[k] = sums[k] + v if k in sums else v
                model_terms.update(terms)
                if self.config.progress and self.host_checks:  # no per-step GPU read
                    total = sum(float(terms[k]) for k in terms)
                    bar.set_postfix(loss=f"{total:.4f}", refresh=False)
        finally:
            bar.close()
        if bool(self._nonfinite):  # accelerators: a non-finite batch was skipped on the device
            return None
        nb = len(batches)
        return {k: float(v) / nb for k, v in sums.items()}, model_terms

    def _pretrain_epochs(self) -> int:
        """The model's pre-training epochs (``pretrain_epochs``, default 0)."""
        return int(getattr(self.model, "pretrain_epochs", 0))

    def _pretraining(self, epoch: int) -> bool:
        """Whether ``epoch`` belongs to the model's pre-training stage."""
        return epoch < self._pretrain_epochs()

    def validate(self, record: dict[str, Any]) -> bool:
        """Evaluates the validation split into ``record``; on a (rounded, strict) improvement
        also the test split. Returns whether the epoch improved."""
        t1 = time.perf_counter()
        valid_users = self.evaluate_per_user("valid")
        valid = valid_users.means
        record["eval_time"] = time.perf_counter() - t1
        record["valid"] = valid
        improved = self.stopping.update(valid[self.config.valid_metric])
        if improved:
            self.best_epoch = record["epoch"]
            self.best_valid = valid
            t2 = time.perf_counter()
            test_users = self.evaluate_per_user("test")
            self.best_per_user = {"valid": valid_users, "test": test_users}
            self.best_test = test_users.means
            record["test"] = self.best_test
            record["test_time"] = time.perf_counter() - t2
        return improved

    def _log_epoch(self, record: dict[str, Any], improved: bool) -> None:
        loss_str = " ".join(f"{k}={v:.4f}" for k, v in record["losses"].items())
        if record.get("stage") == "pretrain":
            self._log(f"epoch {record['epoch']:4d} | pretrain | {loss_str} | "
                      f"train {record['train_time']:.2f}s")
            return
        line = (
            f"epoch {record['epoch']:4d} | {loss_str} | train {record['train_time']:.2f}s "
            f"eval {record['eval_time']:.2f}s | valid {_fmt(_headline(record['valid']))}"
        )
        if improved:
            line += f" | test {_fmt(_headline(self.best_test))} *"
        self._log(line)

    def _early_stop_reason(self) -> str:
        return (
            f"early stop: no improvement of rounded {self.config.valid_metric} for "
            f"{self.config.patience + 1} epochs"
        )

    def _stop_now(self) -> str | None:
        """Why training is over after the epochs run so far (``None``: not over)."""
        if self.stopping.should_stop:
            return self._early_stop_reason()
        if self.epoch >= self.config.epochs:
            return "epoch cap"
        return None

    def results(self) -> dict[str, Any]:
        """The run's summary (what ``results.json`` holds).

        ``status`` is ``"finished"`` once training is over (``stop_reason`` says why: early
        stop, non-finite loss, or ``"epoch cap"`` when the cap was reached), else
        ``"running"`` (``stop_reason`` is ``None``); ``last_epoch`` is the last finished epoch
        (``-1``: none). ``data_fingerprint`` identifies the data
        (:func:`~sea_pyg.train.per_user.data_fingerprint`: sizes and SHA-1 of the splits,
        features and id maps); ``threads`` is torch's intra-op thread count of this process.
        A run folder's file says ``"interrupted"`` after an exception, and
        :func:`~sea_pyg.train.runfolder.run_status` reports a killed run as interrupted.
        """
        train_times = [h["train_time"] for h in self.history]
        eval_times = [h["eval_time"] for h in self.history if "eval_time" in h]  # not pretrain
        return {
            "status": "finished" if self.finished else "running",
            "model": self.model_info,
            "dataset": self.dataset_name,
            "num_users": self.num_users,
            "num_items": self.num_items,
            "data_fingerprint": self._data_fingerprint,
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "config": jsonable(asdict(self.config)),
            "epochs_run": len(self.history),
            "last_epoch": len(self.history) - 1,
            "best_epoch": self.best_epoch,
            "stop_reason": self.stop_reason,
            "best_valid": self.best_valid,
            "test": self.best_test,
            "train_seconds_per_epoch": float(np.mean(train_times)) if train_times else None,
            "eval_seconds_per_epoch": float(np.mean(eval_times)) if eval_times else None,
            "threads": torch.get_num_threads(),
            **self.dist.describe(self.config.batch_size),
            "resumes": self.resumes,
            "history": self.history,
        }

    def fit(self) -> dict[str, Any]:
        """Train until early stopping, a non-finite loss or the epoch cap; return
        :meth:`results` (with ``wall_seconds``, this call's time).

        With ``output_dir``: claims the run folder first (see the class documentation) and
        releases it at the end; on an exception (``KeyboardInterrupt`` included) the folder
        keeps its last commit and ``results.json`` says ``"interrupted"``.

        Raises:
            RunFolderError: the folder is in use by another run, holds a run (without
                ``resume`` / ``overwrite``), or the resume does not match (the message lists
                the differences).
            CheckpointError: ``last.pt`` cannot be read (the message names it).
        """
        cfg = self.config
        if self.output_dir is not None:
            folder = RunFolder(self.output_dir)
            folder.claim(resume=cfg.resume, overwrite=cfg.overwrite,
                         extra_files=self.run_files)
            self._folder = folder
        try:
            state = self.dist.resume(self)
            self.resumed = state
            if state == "finished":
                return (self.output_dir and read_results(self.output_dir)) or self.results()
            if state is None:
                torch.manual_seed(cfg.seed)
            if self._folder is not None:
                for name, text in self.run_files.items():
                    self._folder.write_text(name, text)
            with cfg.knn_scope():  # the k-NN searches of training (TrainConfig.knn_backend)
                return self._train()
        except BaseException:
            if self._folder is not None:
                self._folder.mark_interrupted()
            raise
        finally:
            if self._folder is not None:
                self._folder.release()
                self._folder = None

    def _train(self) -> dict[str, Any]:
        start = time.perf_counter()
        self._log(
            f"training {self.model_info.get('name')} on {self.dataset_name}: "
            f"{self.num_users} users, {self.num_items} items, "
            f"{self.sampler.num_rows} train rows, {len(self.sampler)} batches/epoch"
            + (f"; its first {pre} epochs pre-train it (no validation)"
               if (pre := self._pretrain_epochs()) else "")
        )
        while True:
            stop = self._stop_now()
            if stop is not None:
                self.stop_reason = stop
                break
            epoch = self.epoch
            t0 = time.perf_counter()
            out = self.train_epoch(epoch)
            if out is None:
                self.stop_reason = f"non-finite loss at epoch {epoch}"
                self._log(f"epoch {epoch}: non-finite loss, stopping (best epoch kept)")
                break
            losses, model_terms = out
            record: dict[str, Any] = {
                "epoch": epoch,
                "loss": float(sum(v for k, v in losses.items() if k in model_terms)),
                "losses": losses,
                "train_time": time.perf_counter() - t0,
            }
            self.dist.close_epoch(self, partial(self._close_epoch, record))  # rank 0 alone
        self.finished = True
        results = self.results()
        results["wall_seconds"] = time.perf_counter() - start
        self._commit(results)
        fault_point()  # crash tests: killed after the final commit
        if self._pretraining(self.epoch - 1):
            self._log(f"the run ended inside the pre-training stage ({self._pretrain_epochs()} "
                      "epochs): nothing was evaluated; raise epochs (--epochs) past it")
        self._log(
            f"done ({self.stop_reason}): best epoch {self.best_epoch}, "
            f"valid {_fmt(self.best_valid)}\n  test @ best valid: {_fmt(self.best_test)}"
        )
        return results

    def _close_epoch(self, record: dict[str, Any]) -> None:
        """After training epoch ``record["epoch"]``: validation, log, commit, callback."""
        cfg, epoch = self.config, record["epoch"]
        if self._pretraining(epoch):
            record["stage"], improved = "pretrain", False
        else:
            improved = self.validate(record)
        self.history.append(record)
        self.epoch = epoch + 1
        self._log_epoch(record, improved)
        ending = self._stop_now() is not None
        commit = not ending and self.epoch % cfg.checkpoint_every == 0
        if improved and self.output_dir is not None:
            # committed now, or kept (copied) until the next commit
            self._best_payload = model_payload(
                self.model, self.model_info, self.dataset_meta,
                copy=not (commit or ending), knn_backend=cfg.knn_backend,
                epoch=record["epoch"], valid=record["valid"], test=self.best_test,
            )
        if commit:
            self._commit()
        if self.epoch_callback is not None and not ending:
            self.epoch_callback(self, record)
