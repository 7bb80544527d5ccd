"""Loading and building data: MMRec folders and datasets, raw Amazon preprocessing, synthetic
data, the protocol split, BPR batches."""

from sea_pyg.data.builtin import load_synthetic, synthetic_folder
from sea_pyg.data.dataset import MMRecDataset
from sea_pyg.data.mmrec import (
    EDGE_TYPE,
    REV_EDGE_TYPE,
    DatasetFormatError,
    DatasetWarning,
    describe,
    item_features,
    read_mmrec,
    write_mmrec,
)
from sea_pyg.data.neighbor import (
    TorchNeighborSampler,
    neighbor_loader,
    neighbor_sampler,
    sampling_graph,
)
from sea_pyg.data.raw import prepare_amazon
from sea_pyg.data.sampler import BPRSampler
from sea_pyg.data.split import split_per_user
from sea_pyg.data.synthetic import PRESETS, SyntheticData, SyntheticPreset, make_synthetic

__all__ = [
    "EDGE_TYPE",
    "REV_EDGE_TYPE",
    "DatasetFormatError",
    "DatasetWarning",
    "read_mmrec",
    "write_mmrec",
    "describe",
    "item_features",
    "BPRSampler",
    "split_per_user",
    "PRESETS",
    "SyntheticPreset",
    "SyntheticData",
    "make_synthetic",
    "load_synthetic",
    "synthetic_folder",
    "MMRecDataset",
    "prepare_amazon",
    "TorchNeighborSampler", "neighbor_sampler", "neighbor_loader", "sampling_graph",
]
