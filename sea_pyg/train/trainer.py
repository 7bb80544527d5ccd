"""The training loop of the MMRec protocol, for any :class:`~sea_pyg.models.Recommender`."""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from sea_pyg.data.mmrec import EDGE_TYPE
from sea_pyg.data.sampler import BPRSampler
from sea_pyg.io import atomic_torch_save, atomic_write_text
from sea_pyg.models.base import Recommender
from sea_pyg.train.auxiliary import AuxiliaryTraining
from sea_pyg.train.checkpoint import dataset_metadata, load_checkpoint, model_payload
from sea_pyg.train.config import TrainConfig
from sea_pyg.train.metrics import evaluate_ranking
from sea_pyg.train.optim import adam
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


def _jsonable(obj: Any) -> Any:
    """``obj`` with every value JSON can hold (non-finite floats become ``None``, one-element
    tensors numbers, anything else its ``str``)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    return str(obj)


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

    Early stopping: the validation metric is rounded to 4 decimals; an epoch improves only if it
    is strictly greater than the best so far (initially -1); training stops after
    ``patience + 1`` consecutive non-improving epochs, after a non-finite loss, or at the epoch cap.

    With ``output_dir`` set, the trainer writes (atomically) ``best.pt`` (model weights at the
    best epoch, the model's registry description and the dataset's metadata: a saved model that
    :func:`sea_pyg.load_model` rebuilds), ``last.pt`` (everything needed to resume after a
    crash) and ``results.json``. Checkpoints load with ``torch.load(path, weights_only=True)``.

    Args:
        model: The recommender.
        data: A :class:`HeteroData` from :func:`sea_pyg.data.read_mmrec` (or the same layout).
        config: A :class:`TrainConfig`.
        model_info: JSON-able description of the model (name and constructor arguments), stored
            in checkpoints and results so a run can be identified and rebuilt.
    """

    def __init__(
        self,
        model: Recommender,
        data: HeteroData,
        config: TrainConfig | None = None,
        model_info: dict[str, Any] | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.device = torch.device(self.config.device)
        self.model = model.to(self.device)
        self.model_info = dict(model_info or {"name": type(model).__name__})
        store = data[EDGE_TYPE]
        self.num_users = int(data["user"].num_nodes)
        self.num_items = int(data["item"].num_nodes)
        self.dataset_name = str(getattr(data, "name", "unknown"))
        self.dataset_meta = dataset_metadata(data)
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
        self.output_dir = Path(self.config.output_dir) if self.config.output_dir else None
        self._reset_state()

    # -------------------------------------------------------------------------------------------
    def _reset_state(self) -> None:
        self.epoch = 0
        self.stopping = EarlyStopping(self.config.patience)
        self.best_epoch = -1
        self.best_valid: dict[str, float] = {}
        self.best_test: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self.stop_reason = "epoch cap"

    def _log(self, msg: str) -> None:
        if self.config.verbose:
            print(msg, flush=True)

    def evaluate(self, split: str = "valid") -> dict[str, float]:
        """Full-sort metrics of the current model on ``"valid"`` or ``"test"`` (not rounded),
        scored with :meth:`~sea_pyg.models.Recommender.score`."""
        if split not in ("valid", "test"):
            raise ValueError(f"`split` must be 'valid' or 'test', got {split!r}")
        edges = self.val_edge_index if split == "valid" else self.test_edge_index
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                state = self.model.scoring_state()
                return evaluate_ranking(
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
        return model_payload(
            self.model,
            self.model_info,
            self.dataset_meta,
            config=_jsonable(asdict(self.config)),
            optimizer=self.optimizer.state_dict(),
            auxiliary=self.auxiliary.state_dict(),
            epoch=self.epoch,
            stopping=self.stopping.state_dict(),
            best_epoch=self.best_epoch,
            best_valid=self.best_valid,
            best_test=self.best_test,
            history=self.history,
            sampler_rng=self.generator.get_state(),
            torch_rng=torch.get_rng_state(),
        )

    def _try_resume(self) -> bool:
        if not (self.config.resume and self.output_dir):
            return False
        path = self.output_dir / "last.pt"
        if not path.exists():
            self._log(f"resume: no checkpoint at {path}, starting from scratch")
            return False
        ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt.get("model_info", {}).get("name") != self.model_info.get("name"):
            raise ValueError(
                f"resume: {path} was written for model {ckpt.get('model_info')}, not "
                f"{self.model_info}; use another output folder or resume=False"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.auxiliary.load_state_dict(ckpt.get("auxiliary", {}))
        self.epoch = int(ckpt["epoch"])
        self.stopping.load_state_dict(ckpt["stopping"])
        self.best_epoch = int(ckpt["best_epoch"])
        self.best_valid = dict(ckpt["best_valid"])
        self.best_test = dict(ckpt["best_test"])
        self.history = list(ckpt["history"])
        self.generator.set_state(ckpt["sampler_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        self._log(f"resumed from {path} at epoch {self.epoch} (best epoch {self.best_epoch})")
        return True

    def _save(self, record: dict[str, Any], improved: bool) -> None:
        """After the epoch of ``record``: writes ``best.pt`` (when it improved), ``last.pt``
        and ``results.json``."""
        if self.output_dir is None:
            return
        if improved:
            best = model_payload(
                self.model, self.model_info, self.dataset_meta,
                epoch=record["epoch"], valid=record["valid"], test=self.best_test,
            )
            atomic_torch_save(best, self.output_dir / "best.pt")
        atomic_torch_save(self._checkpoint(), self.output_dir / "last.pt")
        self._write_results(self.results())

    def _write_results(self, results: dict[str, Any]) -> None:
        if self.output_dir is not None:
            text = json.dumps(_jsonable(results), indent=2)
            atomic_write_text(text, self.output_dir / "results.json")

    def results(self) -> dict[str, Any]:
        """The run's summary (what ``results.json`` holds)."""
        train_times = [h["train_time"] for h in self.history]
        return {
            "model": self.model_info,
            "dataset": self.dataset_name,
            "num_users": self.num_users,
            "num_items": self.num_items,
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "config": _jsonable(asdict(self.config)),
            "epochs_run": len(self.history),
            "best_epoch": self.best_epoch,
            "stop_reason": self.stop_reason,
            "best_valid": self.best_valid,
            "test": self.best_test,
            "train_seconds_per_epoch": float(np.mean(train_times)) if train_times else None,
            "eval_seconds_per_epoch": (
                float(np.mean([h["eval_time"] for h in self.history])) if self.history else None
            ),
            "history": self.history,
        }

    # ---------------------------------------------------------------------------------- training
    def _train_step(self, batch: torch.Tensor) -> tuple[dict, dict] | None:
        """One mini-batch; returns ``(loss terms, auxiliary losses)``, or ``None`` when the
        loss is not finite (nothing is updated then)."""
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.model.loss(batch)
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            return None
        loss.backward()
        aux = self.auxiliary.step()
        self.optimizer.step()
        return terms, aux

    def train_epoch(self, epoch: int) -> tuple[dict[str, float], set[str]] | None:
        """One pass over the training rows; returns ``(mean of every logged term per batch,
        names of the model's own loss terms)``, or ``None`` after a non-finite loss."""
        self.model.train()
        self.model.pre_epoch(epoch)
        sums: dict[str, float] = {}
        model_terms: set[str] = set()
        bar = tqdm(
            self.sampler,
            total=len(self.sampler),
            desc=f"epoch {epoch}",
            leave=False,
            disable=not self.config.progress,
            file=sys.stderr,
        )
        try:
            for batch in bar:
                step = self._train_step(batch)
                if step is None:
                    return None
                terms, aux = step
                total = 0.0
                for k, v in terms.items():
                    value = float(v.detach())
                    sums[k] = sums.get(k, 0.0) + value
                    total += value
                    model_terms.add(k)
                for k, v in aux.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                if self.config.progress:
                    bar.set_postfix(loss=f"{total:.4f}", refresh=False)
        finally:
            bar.close()
        nb = len(self.sampler)
        return {k: v / nb for k, v in sums.items()}, model_terms

    def validate(self, record: dict[str, Any]) -> bool:
        """Evaluates the validation split into ``record``; on a (rounded, strict) improvement
        also the test split. Returns whether the epoch improved."""
        t1 = time.perf_counter()
        valid = self.evaluate("valid")
        record["eval_time"] = time.perf_counter() - t1
        record["valid"] = valid
        improved = self.stopping.update(valid[self.config.valid_metric])
        if improved:
            self.best_epoch = record["epoch"]
            self.best_valid = valid
            t2 = time.perf_counter()
            self.best_test = self.evaluate("test")
            record["test"] = self.best_test
            record["test_time"] = time.perf_counter() - t2
        return improved

    def _log_epoch(self, record: dict[str, Any], improved: bool) -> None:
        loss_str = " ".join(f"{k}={v:.4f}" for k, v in record["losses"].items())
        line = (
            f"epoch {record['epoch']:4d} | {loss_str} | train {record['train_time']:.2f}s "
            f"eval {record['eval_time']:.2f}s | valid {_fmt(_headline(record['valid']))}"
        )
        if improved:
            line += f" | test {_fmt(_headline(self.best_test))} *"
        self._log(line)

    def fit(self) -> dict[str, Any]:
        """Train until early stopping or the epoch cap; return :meth:`results`."""
        cfg = self.config
        if not self._try_resume():
            torch.manual_seed(cfg.seed)
        start = time.perf_counter()
        self._log(
            f"training {self.model_info.get('name')} on {self.dataset_name}: "
            f"{self.num_users} users, {self.num_items} items, "
            f"{self.sampler.num_rows} train rows, {len(self.sampler)} batches/epoch"
        )
        while self.epoch < cfg.epochs:
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
            improved = self.validate(record)
            self.history.append(record)
            self.epoch = epoch + 1
            self._log_epoch(record, improved)
            stop = self.stopping.should_stop
            if stop:
                self.stop_reason = (
                    f"early stop: no improvement of rounded {cfg.valid_metric} for "
                    f"{cfg.patience + 1} epochs"
                )
            self._save(record, improved)
            if stop:
                break
        results = self.results()
        results["wall_seconds"] = time.perf_counter() - start
        self._write_results(results)
        self._log(
            f"done ({self.stop_reason}): best epoch {self.best_epoch}, "
            f"valid {_fmt(self.best_valid)}\n  test @ best valid: {_fmt(self.best_test)}"
        )
        return results
