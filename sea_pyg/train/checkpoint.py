"""Saving and loading trained models, and top-K recommendation.

A saved model is a plain dict that loads with ``torch.load(path, weights_only=True)`` (only
tensors, dicts, lists, strings and numbers inside)::

    {
        "version": 1,
        "model_info": {"name": "lightgcn", "hparams": {...}},   # from the registry
        "model": state_dict,
        "dataset": {"name", "num_users", "num_items", "modalities", "feature_dims",
                    "num_train_edges", "train_sha1", "user_ids", "item_ids"},
        ...  # the trainer's best.pt also stores epoch, valid and test metrics
    }

The :class:`~sea_pyg.train.Trainer` writes exactly this as ``<run>/best.pt`` (and the same keys
in ``last.pt``), so every training run is a saved model. :func:`save_model` writes one by hand.

Graph models (LightGCN, SEA, ...) are built from their training graph, so a checkpoint alone
cannot rebuild them: :func:`load_model` takes the checkpoint **and** the dataset it was trained
on, rebuilds the model through the registry (name + hyper-parameters), checks that the dataset
matches the one recorded (sizes, training edges, id maps) and loads the weights::

    data = read_mmrec("data/baby")                 # or MMRecDataset(root, "baby")[0]
    model = load_model("runs/lightgcn-baby-seed999", data)
    recs = recommend(model, data, users=["A1B2C3..."], k=10)

:func:`recommend` ranks all items for some users, masking the items each user rated in training
(the protocol's masking), and maps ids back to the original ``user_id`` / ``asin`` when the
dataset has id maps.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from sea_pyg.data.mmrec import EDGE_TYPE, item_features
from sea_pyg.models.base import Recommender

__all__ = [
    "MODEL_FORMAT_VERSION",
    "dataset_metadata",
    "save_model",
    "load_checkpoint",
    "load_model",
    "resolve_users",
    "Recommendations",
    "recommend",
]

MODEL_FORMAT_VERSION = 1


def _edges_sha1(edge_index: Tensor) -> str:
    """Order-independent fingerprint of a set of (user, item) edges."""
    e = edge_index.detach().cpu().to(torch.int64).numpy()
    order = np.lexsort((e[1], e[0]))
    return hashlib.sha1(np.ascontiguousarray(e[:, order]).tobytes()).hexdigest()


def _raw_ids(data: HeteroData, node_type: str) -> list[str] | None:
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
        "user_ids": _raw_ids(data, "user"),
        "item_ids": _raw_ids(data, "item"),
    }


def save_model(
    path: str | os.PathLike, model: Recommender, data: HeteroData, model_info: dict[str, Any]
) -> None:
    """Save ``model`` with its registry description and its dataset's metadata (atomically).

    Args:
        path: Output file (e.g. ``model.pt``).
        model: The trained model.
        data: The dataset it was trained on.
        model_info: ``{"name", "hparams"}`` as returned by :func:`~sea_pyg.train.build_model`.
    """
    from sea_pyg.train.trainer import atomic_torch_save

    if "name" not in model_info:
        raise ValueError("model_info needs the registry 'name' (and 'hparams')")
    atomic_torch_save(
        {
            "version": MODEL_FORMAT_VERSION,
            "model_info": {
                "name": model_info["name"],
                "hparams": dict(model_info.get("hparams", {})),
            },
            "model": model.state_dict(),
            "dataset": dataset_metadata(data),
        },
        path,
    )


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


# ------------------------------------------------------------------------------------------------
# Recommendation
# ------------------------------------------------------------------------------------------------


def resolve_users(data: HeteroData, users: Sequence[str | int], internal: bool = False) -> Tensor:
    """Map user ids to node indices.

    With id maps (``data['user'].raw_id``) and ``internal=False``, ``users`` are original ids
    (``reviewerID``); otherwise they are 0-based ``userID`` s.

    Raises:
        ValueError: naming the unknown ids.
    """
    num_users = int(data["user"].num_nodes)
    raw = _raw_ids(data, "user")
    if raw is not None and not internal:
        index = {u: i for i, u in enumerate(raw)}
        bad = [u for u in users if str(u) not in index]
        if bad:
            raise ValueError(
                f"unknown user id(s) {bad[:10]}: not in the dataset's u_id_mapping.csv "
                f"(use internal 0-based userIDs with --internal-ids)"
            )
        return torch.tensor([index[str(u)] for u in users], dtype=torch.long)
    out, bad = [], []
    for u in users:
        try:
            i = int(u)
        except (TypeError, ValueError):
            bad.append(u)
            continue
        if 0 <= i < num_users:
            out.append(i)
        else:
            bad.append(u)
    if bad:
        hint = "" if raw is not None else " (this dataset has no u_id_mapping.csv)"
        raise ValueError(
            f"unknown user id(s) {bad[:10]}: userIDs are integers in 0..{num_users - 1}{hint}"
        )
    return torch.tensor(out, dtype=torch.long)


@dataclass
class Recommendations:
    """Top-K items per user.

    Attributes:
        users: ``(B,)`` user node indices.
        items: ``(B, k)`` item node indices, best first; ``-1`` pads users with fewer than ``k``
            candidate items.
        scores: ``(B, k)`` model scores (``-inf`` where padded).
        user_ids: Original user ids (or the indices as strings).
        item_ids: Per user, the original ids of the recommended items (or indices as strings).
    """

    users: Tensor
    items: Tensor
    scores: Tensor
    user_ids: list[str]
    item_ids: list[list[str]]


@torch.no_grad()
def recommend(
    model: Recommender,
    data: HeteroData,
    users: Sequence[str | int] | Tensor,
    k: int = 10,
    exclude: str = "train",
    internal_ids: bool = False,
) -> Recommendations:
    """Top-``k`` items for ``users``, excluding items they already rated.

    Args:
        model: A trained model (e.g. from :func:`load_model`).
        data: Its dataset.
        users: Original user ids (when the dataset has id maps), or 0-based user indices (a
            tensor, or with ``internal_ids=True``).
        k: Items per user.
        exclude: ``"train"``: mask the user's training items (the protocol's masking);
            ``"all"``: mask training, validation and test items; ``"none"``: mask nothing.
        internal_ids: Read ``users`` as 0-based indices even when id maps exist.

    Returns:
        A :class:`Recommendations`.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if exclude not in ("train", "all", "none"):
        raise ValueError(f"exclude must be 'train', 'all' or 'none', got {exclude!r}")
    if isinstance(users, Tensor):
        index = users.to(torch.long).cpu()
        num_users = int(data["user"].num_nodes)
        if index.numel() and (index.min() < 0 or index.max() >= num_users):
            raise ValueError(f"user indices must lie in 0..{num_users - 1}")
    else:
        index = resolve_users(data, users, internal=internal_ids)
    num_items = int(data["item"].num_nodes)
    was_training = model.training
    model.eval()
    try:
        user_emb, item_emb = model.embeddings()
    finally:
        model.train(was_training)
    device = item_emb.device
    index, inverse = torch.unique(index, return_inverse=True)  # score each user once
    scores = (user_emb[index.to(device)] @ item_emb.t()).float().cpu()
    if exclude != "none":
        store = data[EDGE_TYPE]
        edge_sets = [store.edge_index]
        if exclude == "all":
            edge_sets += [store.val_edge_index, store.test_edge_index]
        edges = torch.cat([e.cpu() for e in edge_sets], dim=1)
        row_of = torch.full((int(data["user"].num_nodes),), -1, dtype=torch.long)
        row_of[index] = torch.arange(index.numel())
        rows = row_of[edges[0]]
        keep = rows >= 0
        scores[rows[keep], edges[1][keep]] = float("-inf")
    kk = min(k, num_items)
    top_scores, top_items = torch.topk(scores, kk, dim=1)
    masked = top_scores == float("-inf")
    top_items = torch.where(masked, torch.full_like(top_items, -1), top_items)
    index, top_items, top_scores = index[inverse], top_items[inverse], top_scores[inverse]
    raw_users, raw_items = _raw_ids(data, "user"), _raw_ids(data, "item")
    user_ids = [raw_users[u] if raw_users else str(u) for u in index.tolist()]
    item_ids = [
        [raw_items[i] if raw_items else str(i) for i in row if i >= 0] for row in top_items.tolist()
    ]
    return Recommendations(index, top_items, top_scores, user_ids, item_ids)
