"""The training loop of the MMRec protocol, for any :class:`~sea_pyg.models.Recommender`."""

from __future__ import annotations

import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from sea_pyg.data.mmrec import EDGE_TYPE
from sea_pyg.data.sampler import BPRSampler
from sea_pyg.models.base import Recommender
from sea_pyg.optim import adam
from sea_pyg.train.checkpoint import dataset_metadata
from sea_pyg.train.metrics import METRICS, evaluate_ranking

__all__ = [
    "TrainConfig",
    "Trainer",
    "EarlyStopping",
    "seed_everything",
    "atomic_torch_save",
    "atomic_write_text",
]

CHECKPOINT_VERSION = 1


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file and ``os.replace``: never a half-written file."""
    _atomic(Path(path), lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write a text file atomically."""

    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    _atomic(Path(path), _write)


@dataclass
class TrainConfig:
    """Settings of one training run. Defaults are the MMRec protocol's.

    Attributes:
        epochs: Epoch cap (MMRec: 1000).
        batch_size: Training rows per mini-batch (MMRec: 2048).
        lr: Adam learning rate (MMRec default 1e-3; SEA 1e-4).
        weight_decay: Adam weight decay (MMRec: 0).
        patience: MMRec's ``stopping_step``: training stops after ``patience + 1``
            consecutive evaluations without strict improvement of the rounded valid metric.
        valid_metric: Early-stopping metric, e.g. ``"recall@20"``.
        topk: Cut-offs to report.
        metrics: Metric names to report.
        eval_chunk_size: Users scored at once during evaluation (memory bound).
        seed: Seeds everything (sampling order, negatives, model RNG use during training).
        output_dir: Where checkpoints and ``results.json`` go (``None``: nothing is written).
        resume: Continue from ``output_dir/last.pt`` if it exists.
        progress: Show a progress bar over the mini-batches of each epoch.
        verbose: Print one log line per epoch.
        device: ``"cpu"``, ``"cuda"``, ...
    """

    epochs: int = 1000
    batch_size: int = 2048
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 20
    valid_metric: str = "recall@20"
    topk: tuple[int, ...] = (10, 20)
    metrics: tuple[str, ...] = METRICS
    eval_chunk_size: int = 4096
    seed: int = 999
    output_dir: str | None = None
    resume: bool = False
    progress: bool = True
    verbose: bool = True
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.topk = tuple(int(k) for k in self.topk)
        self.metrics = tuple(self.metrics)
        if self.epochs < 1:
            raise ValueError(f"TrainConfig.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"TrainConfig.batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.patience < 0:
            raise ValueError(f"TrainConfig.patience must be >= 0, got {self.patience}")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"TrainConfig.metrics: unknown {unknown}; choose from {list(METRICS)}")
        name, _, k = self.valid_metric.partition("@")
        if name not in METRICS or not k.isdigit():
            raise ValueError(
                f"TrainConfig.valid_metric must look like 'recall@20', got {self.valid_metric!r}"
            )
        if int(k) not in self.topk:
            self.topk = tuple(sorted({*self.topk, int(k)}))
        if name not in self.metrics:
            self.metrics = (*self.metrics, name)


class EarlyStopping:
    """MMRec's early-stopping rule.

    The monitored value is rounded to ``decimals``; a step improves only if the rounded value
    is strictly greater than the best so far (initially ``-1``). :attr:`should_stop` becomes
    true after ``patience + 1`` consecutive non-improving steps.
    """

    def __init__(self, patience: int, decimals: int = 4) -> None:
        self.patience = patience
        self.decimals = decimals
        self.best = -1.0
        self.best_step = -1
        self.bad_steps = 0
        self.steps = 0

    def update(self, value: float) -> bool:
        """Record one evaluation; return whether it is a (strict) improvement."""
        rounded = round(float(value), self.decimals)
        improved = rounded > self.best
        if improved:
            self.best, self.best_step, self.bad_steps = rounded, self.steps, 0
        else:
            self.bad_steps += 1
        self.steps += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad_steps > self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_step": self.best_step,
            "bad_steps": self.bad_steps,
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_step = int(state["best_step"])
        self.bad_steps = int(state["bad_steps"])
        self.steps = int(state["steps"])


def _headline(metrics: dict[str, float]) -> dict[str, float]:
    """The Recall/NDCG entries, for the per-epoch log line."""
    return {k: v for k, v in metrics.items() if k.split("@")[0] in ("recall", "ndcg")}


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())


class Trainer:
    """Fit a :class:`~sea_pyg.models.Recommender` under the MMRec protocol.

    Per epoch: ``model.pre_epoch(epoch)``; one pass over shuffled training rows in mini-batches
    (fresh negatives each batch), where each step is ``zero_grad -> loss terms -> backward ->
    model.after_backward() -> Adam step``; then full-sort evaluation on the validation split.
    The test split is evaluated whenever the rounded validation metric strictly improves, so the
    reported test metrics are those of the best-validation epoch (MMRec's
    ``best_test_upon_valid``), without paying for a test pass every epoch.

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
        self.optimizer = adam(
            self.model.optimizer_parameters(),
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
        """Full-sort metrics of the current model on ``"valid"`` or ``"test"`` (not rounded)."""
        if split not in ("valid", "test"):
            raise ValueError(f"`split` must be 'valid' or 'test', got {split!r}")
        edges = self.val_edge_index if split == "valid" else self.test_edge_index
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                user_emb, item_emb = self.model.embeddings()
                item_t = item_emb.t().contiguous()
                return evaluate_ranking(
                    lambda users: user_emb[users] @ item_t,
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

    # -------------------------------------------------------------------------------------------
    def _checkpoint(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "model_info": self.model_info,
            "config": _jsonable(asdict(self.config)),
            "model": self.model.state_dict(),
            "dataset": self.dataset_meta,
            "optimizer": self.optimizer.state_dict(),
            "auxiliary": self.model.auxiliary_state_dict(),
            "epoch": self.epoch,
            "stopping": self.stopping.state_dict(),
            "best_epoch": self.best_epoch,
            "best_valid": self.best_valid,
            "best_test": self.best_test,
            "history": self.history,
            "sampler_rng": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def _try_resume(self) -> bool:
        if not (self.config.resume and self.output_dir):
            return False
        path = self.output_dir / "last.pt"
        if not path.exists():
            self._log(f"resume: no checkpoint at {path}, starting from scratch")
            return False
        ckpt = torch.load(path, map_location=self.device, weights_only=True)
        if ckpt.get("model_info", {}).get("name") != self.model_info.get("name"):
            raise ValueError(
                f"resume: {path} was written for model {ckpt.get('model_info')}, not "
                f"{self.model_info}; use another output folder or resume=False"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.model.load_auxiliary_state_dict(ckpt.get("auxiliary", {}))
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

    # -------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train until early stopping or the epoch cap; return :meth:`results`."""
        cfg = self.config
        resumed = self._try_resume()
        if not resumed:
            torch.manual_seed(cfg.seed)
        metric_name = cfg.valid_metric
        start = time.perf_counter()
        self._log(
            f"training {self.model_info.get('name')} on {self.dataset_name}: "
            f"{self.num_users} users, {self.num_items} items, "
            f"{self.sampler.num_rows} train rows, {len(self.sampler)} batches/epoch"
        )
        stopped = False
        while self.epoch < cfg.epochs and not stopped:
            epoch = self.epoch
            self.model.train()
            t0 = time.perf_counter()
            self.model.pre_epoch(epoch)
            sums: dict[str, float] = {}
            model_terms: set[str] = set()
            nonfinite = False
            bar = tqdm(
                self.sampler,
                total=len(self.sampler),
                desc=f"epoch {epoch}",
                leave=False,
                disable=not cfg.progress,
                file=sys.stderr,
            )
            for batch in bar:
                self.optimizer.zero_grad(set_to_none=True)
                terms = self.model.loss(batch)
                loss = sum(terms.values())
                if not torch.isfinite(loss):
                    nonfinite = True
                    break
                loss.backward()
                aux = self.model.after_backward()
                self.optimizer.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                    model_terms.add(k)
                for k, v in aux.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                if cfg.progress:
                    bar.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)
            bar.close()
            if nonfinite:
                self.stop_reason = f"non-finite loss at epoch {epoch}"
                self._log(f"epoch {epoch}: non-finite loss, stopping (best epoch kept)")
                break
            train_time = time.perf_counter() - t0
            nb = len(self.sampler)
            losses = {k: v / nb for k, v in sums.items()}

            t1 = time.perf_counter()
            valid = self.evaluate("valid")
            eval_time = time.perf_counter() - t1
            record: dict[str, Any] = {
                "epoch": epoch,
                "loss": float(sum(v for k, v in losses.items() if k in model_terms)),
                "losses": losses,
                "train_time": train_time,
                "eval_time": eval_time,
                "valid": valid,
            }
            improved = self.stopping.update(valid[metric_name])
            if improved:
                self.best_epoch = epoch
                self.best_valid = valid
                t2 = time.perf_counter()
                self.best_test = self.evaluate("test")
                record["test"] = self.best_test
                record["test_time"] = time.perf_counter() - t2
            self.history.append(record)
            self.epoch = epoch + 1
            loss_str = " ".join(f"{k}={v:.4f}" for k, v in losses.items())
            line = (
                f"epoch {epoch:4d} | {loss_str} | train {train_time:.2f}s eval {eval_time:.2f}s"
                f" | valid {_fmt(_headline(valid))}"
            )
            if improved:
                line += f" | test {_fmt(_headline(self.best_test))} *"
            self._log(line)
            if self.stopping.should_stop:
                self.stop_reason = (
                    f"early stop: no improvement of rounded {metric_name} for "
                    f"{cfg.patience + 1} epochs"
                )
                stopped = True
            if self.output_dir is not None:
                if improved:
                    atomic_torch_save(
                        {
                            "version": CHECKPOINT_VERSION,
                            "model_info": self.model_info,
                            "model": self.model.state_dict(),
                            "dataset": self.dataset_meta,
                            "epoch": epoch,
                            "valid": valid,
                            "test": self.best_test,
                        },
                        self.output_dir / "best.pt",
                    )
                atomic_torch_save(self._checkpoint(), self.output_dir / "last.pt")
                atomic_write_text(
                    json.dumps(_jsonable(self.results()), indent=2),
                    self.output_dir / "results.json",
                )
        results = self.results()
        results["wall_seconds"] = time.perf_counter() - start
        if self.output_dir is not None:
            atomic_write_text(
                json.dumps(_jsonable(results), indent=2), self.output_dir / "results.json"
            )
        self._log(
            f"done ({self.stop_reason}): best epoch {self.best_epoch}, "
            f"valid {_fmt(self.best_valid)}\n  test @ best valid: {_fmt(self.best_test)}"
        )
        return results


def _jsonable(obj: Any) -> Any:
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
