"""Reusable layers and losses for GNN recommenders."""

from sea_pyg.nn.conv import LightGCNPropagation, SymLGConv, bipartite_norm_adj, symmetric_spmm

__all__ = ["bipartite_norm_adj", "symmetric_spmm", "SymLGConv", "LightGCNPropagation"]
