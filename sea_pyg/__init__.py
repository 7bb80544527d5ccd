"""sea_pyg: SEA (Separate Learning for Multimedia Recommendation) and baselines on PyG.

Sub-packages:

* :mod:`sea_pyg.data`: MMRec-format reader/writer, :class:`~sea_pyg.data.MMRecDataset`, raw
  Amazon preprocessing (:func:`~sea_pyg.data.prepare_amazon`), synthetic data, BPR sampling.
* :mod:`sea_pyg.nn`: reusable layers and losses (LGConv propagation, item kNN graphs, CLUB,
  SoloSim, InfoNCE, negative L2, BPR, embedding regularisation).
* :mod:`sea_pyg.models`: whole recommenders (MF-BPR, LightGCN, ..., SEA) and their registry.
* :mod:`sea_pyg.train`: trainer, full-sort evaluation, checkpoints, recommendation.

Saved models: :func:`save_model`, :func:`load_model` (checkpoint + training data -> model) and
:func:`recommend` (top-K items per user, seen items masked).
"""

from sea_pyg import data, models, nn, train
from sea_pyg.train import load_model, recommend, save_model

__version__ = "0.1.0"

__all__ = ["data", "nn", "models", "train", "load_model", "save_model", "recommend", "__version__"]
