"""Reusable layers and losses for GNN recommenders.

Everything here takes explicit tensors and sizes; nothing knows a dataset or a file format.
"""

from sea_pyg.nn.adversarial import WassersteinCritic, gradient_penalty
from sea_pyg.nn.auxiliary import AuxiliaryEstimator, GradientStep
from sea_pyg.nn.conv import LightGCNPropagation, SymLGConv, bipartite_norm_adj, symmetric_spmm
from sea_pyg.nn.encoders import ModalGCNEncoder, ProjectionHead
from sea_pyg.nn.fused import linear_then_consumers
from sea_pyg.nn.graph import (
    degree_sensitive_edge_pruning,
    degree_sensitive_edge_weights,
    unique_edges,
)
from sea_pyg.nn.hypergraph import HypergraphPropagation, gumbel_softmax
from sea_pyg.nn.knn import ItemKNNGraph, cosine_knn, image_weighted_mix, knn_adjacency
from sea_pyg.nn.layer_refined import LayerRefinedPropagation
from sea_pyg.nn.learned_graph import (
    LearnedItemGraph,
    WeightedGraph,
    cosine_topk,
    self_loop_rw_graph,
)
from sea_pyg.nn.losses import (
    CLUB,
    BPRLoss,
    CandidateInfoNCE,
    EmbLoss,
    InfoNCE,
    NegativeL2,
    SoloSimLoss,
    bpr_loss,
    candidate_info_nce_loss,
    club_gradient_step,
    emb_loss,
    info_nce_loss,
    negative_l2_loss,
    solosim_loss,
)
from sea_pyg.nn.mips import ApproxParams, knn_backend
from sea_pyg.nn.neighbour_conv import NeighbourConv, bipartite_adjacency
from sea_pyg.nn.precision import full_precision, sparse_mm
from sea_pyg.nn.sampled import layerwise_propagation, sampled_edge_weight, sampled_propagation
from sea_pyg.nn.separate import SeparateLearning
from sea_pyg.nn.user_graph import UserCooccurrenceGraph, user_cooccurrence_graph
from sea_pyg.nn.weighted_knn import weighted_knn_adjacency

__all__ = [
    "bipartite_norm_adj",
    "symmetric_spmm",
    "SymLGConv",
    "LightGCNPropagation",
    "unique_edges",
    "degree_sensitive_edge_weights",
    "degree_sensitive_edge_pruning",
    "cosine_knn",
    "knn_adjacency",
    "ItemKNNGraph",
    "image_weighted_mix",
    "weighted_knn_adjacency",
    "ApproxParams", "knn_backend",
    "cosine_topk", "WeightedGraph", "LearnedItemGraph", "self_loop_rw_graph",
    "AuxiliaryEstimator",
    "GradientStep",
    "bpr_loss",
    "BPRLoss",
    "emb_loss",
    "EmbLoss",
    "CLUB",
    "club_gradient_step",
    "solosim_loss",
    "SoloSimLoss",
    "info_nce_loss",
    "InfoNCE",
    "negative_l2_loss",
    "NegativeL2",
    "ModalGCNEncoder",
    "ProjectionHead",
    "linear_then_consumers",
    "SeparateLearning",
    "gumbel_softmax",
    "HypergraphPropagation",
    "candidate_info_nce_loss",
    "CandidateInfoNCE",
    "LayerRefinedPropagation",
    "NeighbourConv",
    "bipartite_adjacency",
    "user_cooccurrence_graph",
    "UserCooccurrenceGraph",
    "WassersteinCritic", "gradient_penalty",
    "full_precision", "sparse_mm",
    "sampled_edge_weight", "sampled_propagation", "layerwise_propagation",
]
