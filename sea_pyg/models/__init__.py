"""Whole recommenders assembled from :mod:`sea_pyg.nn`."""

from sea_pyg.models.base import Recommender
from sea_pyg.models.bm3 import BM3
from sea_pyg.models.freedom import FREEDOM
from sea_pyg.models.lightgcn import LightGCN
from sea_pyg.models.mf import MFBPR
from sea_pyg.models.plugin import WithSeparateLearning
from sea_pyg.models.registry import (
    MODELS,
    SEA_PLUGINS,
    ModelSpec,
    build_model,
    model_names,
    sea_variant,
)
from sea_pyg.models.sea import SEA
from sea_pyg.models.vbpr import VBPR

__all__ = [
    "Recommender",
    "MFBPR",
    "LightGCN",
    "VBPR",
    "FREEDOM",
    "BM3",
    "SEA",
    "WithSeparateLearning",
    "MODELS",
    "SEA_PLUGINS",
    "ModelSpec",
    "build_model",
    "model_names",
    "sea_variant",
]
