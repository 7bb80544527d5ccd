"""Settings of one training run (the MMRec protocol's defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sea_pyg.train.metrics import METRICS

__all__ = ["TrainConfig"]


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
