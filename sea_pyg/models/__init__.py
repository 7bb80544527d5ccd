"""Whole recommenders assembled from :mod:`sea_pyg.nn`."""

from sea_pyg.models.base import Recommender
from sea_pyg.models.lightgcn import LightGCN
from sea_pyg.models.mf import MFBPR
from sea_pyg.models.sea import SEA

__all__ = ["Recommender", "MFBPR", "LightGCN", "SEA"]
