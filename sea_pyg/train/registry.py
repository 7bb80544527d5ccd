"""Model presets: how each named model is built from a dataset, and its protocol settings.

This is the one place that knows both models and data; models themselves take explicit
tensors and sizes, never a dataset or a file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch_geometric.data import HeteroData

from sea_pyg.data.mmrec import EDGE_TYPE
from sea_pyg.models.base import Recommender
from sea_pyg.models.lightgcn import LightGCN
from sea_pyg.models.mf import MFBPR

__all__ = ["ModelSpec", "MODELS", "build_model", "model_names"]


@dataclass(frozen=True)
class ModelSpec:
    """A named model: its builder, default hyper-parameters and protocol overrides.

    Attributes:
        name: CLI name.
        build: ``build(data, **hparams) -> Recommender``.
        defaults: Default hyper-parameters (constructor keyword arguments).
        train_defaults: :class:`~sea_pyg.train.TrainConfig` fields this model changes
            (e.g. SEA's learning rate 1e-4).
        description: One line for ``--help``.
    """

    name: str
    build: Callable[..., Recommender]
    defaults: dict[str, Any] = field(default_factory=dict)
    train_defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def _sizes(data: HeteroData) -> tuple[int, int]:
    return int(data["user"].num_nodes), int(data["item"].num_nodes)


def _build_mf(data: HeteroData, **kw: Any) -> Recommender:
    u, n = _sizes(data)
    return MFBPR(u, n, **kw)


def _build_lightgcn(data: HeteroData, **kw: Any) -> Recommender:
    u, n = _sizes(data)
    return LightGCN(u, n, data[EDGE_TYPE].edge_index, **kw)


MODELS: dict[str, ModelSpec] = {
    "mf": ModelSpec(
        "mf",
        _build_mf,
        {"embedding_dim": 64, "reg_weight": 1e-4},
        description="matrix factorisation with BPR (MMRec BPR)",
    ),
    "lightgcn": ModelSpec(
        "lightgcn",
        _build_lightgcn,
        {"embedding_dim": 64, "num_layers": 2, "reg_weight": 1e-4},
        description="LightGCN on PyG LGConv (MMRec LightGCN)",
    ),
}


def model_names() -> list[str]:
    return sorted(MODELS)


def build_model(
    name: str, data: HeteroData, **overrides: Any
) -> tuple[Recommender, dict[str, Any], dict[str, Any]]:
    """Build model ``name`` for ``data``.

    Returns:
        ``(model, model_info, train_defaults)``: ``model_info`` is ``{"name", "hparams"}``
        (JSON-able, stored in checkpoints); ``train_defaults`` are the model's
        :class:`~sea_pyg.train.TrainConfig` overrides.
    """
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {model_names()}")
    spec = MODELS[key]
    unknown = [k for k in overrides if k not in spec.defaults]
    if unknown:
        raise ValueError(
            f"model {key!r} has no hyper-parameter(s) {unknown}; it takes {sorted(spec.defaults)}"
        )
    hparams = {**spec.defaults, **overrides}
    model = spec.build(data, **hparams)
    return model, {"name": key, "hparams": hparams}, dict(spec.train_defaults)
