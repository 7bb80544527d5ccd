"""Training under the MMRec protocol: trainer, full-sort evaluation, model presets,
saving/loading trained models and top-K recommendation."""

from sea_pyg.train.checkpoint import (
    Recommendations,
    load_checkpoint,
    load_model,
    recommend,
    save_model,
)
from sea_pyg.train.metrics import METRICS, evaluate_ranking, ranking_metrics
from sea_pyg.train.trainer import TrainConfig, Trainer, seed_everything

__all__ = [
    "METRICS",
    "evaluate_ranking",
    "ranking_metrics",
    "TrainConfig",
    "Trainer",
    "seed_everything",
    "save_model",
    "load_model",
    "load_checkpoint",
    "recommend",
    "Recommendations",
]
