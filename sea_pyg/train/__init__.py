"""Training under the MMRec protocol: trainer, full-sort evaluation, model presets."""

from sea_pyg.train.metrics import METRICS, evaluate_ranking, ranking_metrics
from sea_pyg.train.registry import MODELS, ModelSpec, build_model, model_names
from sea_pyg.train.trainer import TrainConfig, Trainer, seed_everything

__all__ = [
    "METRICS",
    "evaluate_ranking",
    "ranking_metrics",
    "TrainConfig",
    "Trainer",
    "seed_everything",
    "MODELS",
    "ModelSpec",
    "build_model",
    "model_names",
]
