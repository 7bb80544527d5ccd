"""Whole recommenders assembled from :mod:`sea_pyg.nn`, and the registry that names them.

Each model is one file that registers itself (:func:`register_model`); importing this package
imports them all. To add a model, see docs/concepts.md, "How to add a model".
"""

# Importing a model file registers its models (one line per model file).
from sea_pyg.models.base import (
    MultimodalRecommender,
    Recommender,
    TrainOutput,
    hyperparameters,
)
from sea_pyg.models.bm3 import BM3
from sea_pyg.models.dragon import DRAGON
from sea_pyg.models.dualgnn import DualGNN
from sea_pyg.models.freedom import FREEDOM
from sea_pyg.models.lattice import LATTICE
from sea_pyg.models.layergcn import LayerGCN
from sea_pyg.models.lgmrec import LGMRec
from sea_pyg.models.lightgcn import LightGCN
from sea_pyg.models.mf import MFBPR
from sea_pyg.models.mgcn import MGCN
from sea_pyg.models.micro import MICRO
from sea_pyg.models.mmgcn import MMGCN
from sea_pyg.models.mmssl import MMSSL
from sea_pyg.models.pamd import PAMD
from sea_pyg.models.plugin import WithSeparateLearning
from sea_pyg.models.registry import (
    MODELS,
    SEA_PLUGINS,
    ModelSpec,
    build_model,
    model_names,
    register_model,
    sea_variant,
)
from sea_pyg.models.sea import SEA
from sea_pyg.models.slmrec import SLMRec
from sea_pyg.models.vbpr import VBPR

__all__ = [
    "Recommender",
    "MultimodalRecommender",
    "TrainOutput",
    "hyperparameters",
    "WithSeparateLearning",
    "MODELS",
    "SEA_PLUGINS",
    "ModelSpec",
    "register_model",
    "build_model",
    "model_names",
    "sea_variant",
    "MFBPR",
    "LightGCN",
    "VBPR",
    "FREEDOM",
    "BM3",
    "MGCN",
    "LATTICE",
    "SEA",
    "LGMRec",
    "LayerGCN",
    "MMGCN",
    "DualGNN",
    "DRAGON",
    "SLMRec",
    "MMSSL",
    "PAMD",
    "MICRO",
]
