"""sea_pyg: SEA (Separate Learning for Multimedia Recommendation) and baselines on PyG.

Sub-packages:

* :mod:`sea_pyg.data`: MMRec-format reader/writer, synthetic data, BPR sampling.
* :mod:`sea_pyg.nn`: reusable layers and losses (LGConv propagation, item kNN graphs, CLUB,
  SoloSim, InfoNCE, negative L2, BPR, embedding regularisation).
* :mod:`sea_pyg.models`: whole recommenders (MF-BPR, LightGCN, ...).
* :mod:`sea_pyg.train`: trainer, full-sort evaluation, model presets.
"""

from sea_pyg import data, models, nn, train

__version__ = "0.1.0"

__all__ = ["data", "nn", "models", "train", "__version__"]
