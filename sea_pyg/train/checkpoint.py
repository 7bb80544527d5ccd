"""Saving and loading trained models, and top-K recommendation.

A saved model is a plain dict that loads with ``torch.load(path, weights_only=True)`` (only
tensors, dicts, lists, strings and numbers inside), built by :func:`model_payload`::

    {
        "version": 2,                                          # FORMAT_VERSION
        "model_info": {"name": "lightgcn", "hparams": {...}},   # from the registry
        "model": state_dict,
        "dataset": {"name", "num_users", "num_items", "modalities", "feature_dims",
                    "num_train_edges", "train_sha1", "user_ids", "item_ids"},
        ...  # the trainer's best.pt also stores epoch, valid and test metrics
    }

The :class:`~sea_pyg.train.Trainer` writes exactly this as ``<run>/best.pt`` (and the same keys
in ``last.pt``), so every training run is a saved model. :func:`save_model` writes one by hand.
:func:`load_checkpoint` reads format versions 1 and 2 (version 1 named some hyper-parameters as
MMRec does: FREEDOM's ``n_ui_layers`` / ``n_mm_layers``, BM3's ``n_layers``).

Graph models (LightGCN, SEA, ...) are built from their training graph, so a checkpoint alone
cannot rebuild them: :func:`load_model` takes the checkpoint **and** the dataset it was trained
on, rebuilds the model through the registry (name + hyper-parameters), checks that the dataset
matches the one recorded (sizes, training edges, id maps) and loads the weights::

    data = read_mmrec("data/baby")                 # or MMRecDataset(root, "baby")[0]
    model = load_model("runs/lightgcn-baby-seed999", data)
    recs = recommend(model, data, users=["A1B2C3..."], k=10)   # sea_pyg.train.recommend
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from sea_pyg.data.mmrec import EDGE_TYPE, item_features
from sea_pyg.io import atomic_torch_save
from sea_pyg.models.base import Recommender

__all__ = [
    "FORMAT_VERSION",
    "dataset_metadata",
    "model_payload",
    "save_model",
    "load_checkpoint",
    "load_model",
    "raw_ids",
]

#: Version of the checkpoint format (``best.pt``, ``last.pt``, :func:`save_model` files).
FORMAT_VERSION = 2

#: Hyper-parameters renamed in format version 2: registry name -> {old: new}.
_V1_RENAMES = {
    "freedom": {"n_ui_layers": "num_layers", "n_mm_layers": "item_graph_layers"},
    "freedom+sea": {"n_ui_layers": "num_layers", "n_mm_layers": "item_graph_layers"},
    "bm3": {"n_layers": "num_layers"},
}


def _edges_sha1(edge_index: Tensor) -> str:
    """Order-independent fingerprint of a set of (user, item) edges."""
    e = edge_index.detach().cpu().to(torch.int64).numpy()
    order = np.lexsort((e[1], e[0]))
    return hashlib.sha1(np.ascontiguousarray(e[:, order]).tobytes()).hexdigest()


def raw_ids(data: HeteroData, node_type: str) -> list[str] | None:
    """The original ids (``raw_id``) of ``node_type``'s nodes, or ``None`` without id maps."""
    ids = getattr(data[node_type], "raw_id", None) if node_type in data.node_types else None
    return [str(i) for i in ids] if ids is not None else None


def dataset_metadata(data: HeteroData) -> dict[str, Any]:
    """What a checkpoint records about its training data (all ``weights_only``-safe types)."""
    train = data[EDGE_TYPE].edge_index
    return {
        "name": str(getattr(data, "name", "unknown")),
        "num_users": int(data["user"].num_nodes),
        "num_items": int(data["item"].num_nodes),
        "modalities": [str(m) for m in (getattr(data, "modalities", None) or [])],
        "feature_dims": {m: int(x.shape[1]) for m, x in item_features(data).items()},
        "num_train_edges": int(train.size(1)),
        "train_sha1": _edges_sha1(train),
        "user_ids": raw_ids(data, "user"),
        "item_ids": raw_ids(data, "item"),
    }


def model_payload(
    model: Recommender,
    model_info: dict[str, Any],
    dataset: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """The checkpoint dict of ``model``: format version, registry description, weights and
    the dataset's metadata (:func:`dataset_metadata`), plus ``extra`` entries (the trainer's
    epoch and metrics in ``best.pt``, its whole state in ``last.pt``)."""
    return {
        "version": FORMAT_VERSION,
        "model_info": model_info,
        "model": model.state_dict(),
        "dataset": dataset,
        **extra,
    }


def save_model(
    path: str | os.PathLike, model: Recommender, data: HeteroData, model_info: dict[str, Any]
) -> None:
    """Save ``model`` with its registry description and its dataset's metadata (atomically).

    Args:
        path: Output file (e.g. ``model.pt``).
        model: The trained model.
        data: The dataset it was trained on.
        model_info: ``{"name", "hparams"}`` as returned by :func:`~sea_pyg.models.build_model`.
    """
    if "name" not in model_info:
        raise ValueError("model_info needs the registry 'name' (and 'hparams')")
    info = {"name": model_info["name"], "hparams": dict(model_info.get("hparams", {}))}
    atomic_torch_save(model_payload(model, info, dataset_metadata(data)), path)


def _upgrade(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """A checkpoint of an older format version in the current layout."""
    version = ckpt.get("version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {version!r}; this sea_pyg reads versions "
            f"1 to {FORMAT_VERSION}: upgrade sea_pyg"
        )
    if version == 1:
        info = dict(ckpt["model_info"])
        renames = _V1_RENAMES.get(str(info.get("name")), {})
        info["hparams"] = {renames.get(k, k): v for k, v in info.get("hparams", {}).items()}
        ckpt["model_info"] = info
        ckpt["version"] = FORMAT_VERSION
    return ckpt


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a saved model with ``weights_only=True``.

    Args:
        path: A checkpoint file, or a run folder (its ``best.pt`` is used).
        map_location: Passed to :func:`torch.load`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}: pass a run folder holding best.pt (written by "
            f"`sea-pyg train --out ...`) or a checkpoint file"
        )
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_info" not in ckpt:
        raise ValueError(f"{path} is not a sea_pyg model checkpoint (no 'model'/'model_info')")
    ckpt = _upgrade(ckpt, path)
    ckpt["path"] = str(path)
    return ckpt


def _check_dataset(saved: dict[str, Any], data: HeteroData, path: str) -> None:
    now = dataset_metadata(data)
    for key in ("num_users", "num_items", "num_train_edges", "train_sha1"):
        if key in saved and saved[key] != now[key]:
            what = "training edges" if key == "train_sha1" else key
            raise ValueError(
                f"{path} was trained on dataset {saved.get('name')!r} with a different {what} "
                f"({saved[key]} vs {now[key]} in the data passed); load it with the dataset "
                f"(and split) it was trained on"
            )
    for key in ("user_ids", "item_ids"):
        if saved.get(key) is not None and now[key] is not None and saved[key] != now[key]:
            raise ValueError(f"{path}: the dataset's id maps ({key}) differ from the saved ones")


def load_model(
    path: str | os.PathLike,
    data: HeteroData,
    device: str | torch.device = "cpu",
    check_data: bool = True,
) -> Recommender:
    """Rebuild a saved model on its training data and load its weights.

    Args:
        path: A checkpoint (``best.pt``, ``last.pt`` or a :func:`save_model` file) or a run
            folder (``best.pt`` inside).
        data: The dataset the model was trained on (graph models are built from it).
        device: Where to put the model.
        check_data: Verify that ``data`` matches the dataset recorded in the checkpoint
            (sizes, training edges and id maps).

    Returns:
        The model in eval mode; ``model.checkpoint`` holds the checkpoint's ``model_info``,
        ``dataset`` metadata and path.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: ``data`` is not the training data, or the model name is unknown.
    """
    from sea_pyg.models import build_model

    ckpt = load_checkpoint(path, map_location=device)
    info = ckpt["model_info"]
    saved = ckpt.get("dataset") or {}
    if check_data and saved:
        _check_dataset(saved, data, ckpt["path"])
    model, _, _ = build_model(info["name"], data, **dict(info.get("hparams", {})))
    model.load_state_dict(ckpt["model"])
    model = model.to(device).eval()
    model.checkpoint = {"path": ckpt["path"], "model_info": info, "dataset": saved}
    return model
