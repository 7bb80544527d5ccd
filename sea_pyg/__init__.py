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

import os as _os
import sys as _sys

if "torch" not in _sys.modules:
    # OpenMP threads that spin at every barrier (of many small operators) steal a busy
    # machine's cores from the thread they wait for: on 2 cores with one competing process a
    # SEA step took 10-20x its quiet time. Sleeping waiters keep it within a small factor (see
    # docs/performance.md). Read once, when torch loads OpenMP; a user's own value wins.
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from sea_pyg import data, models, nn, train  # noqa: E402
from sea_pyg.train import load_model, recommend, save_model  # noqa: E402

__version__ = "0.1.0"

__all__ = ["data", "nn", "models", "train", "load_model", "save_model", "recommend", "__version__"]
