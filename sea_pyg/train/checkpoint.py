"""Saving and loading trained models, and top-K recommendation.

A saved model is a plain dict that loads with ``torch.load(path, weights_only=True)`` (only
tensors, dicts, lists, strings and numbers inside), built by :func:`model_payload`::

    {
        "version": 3,                                          # FORMAT_VERSION
        "model_info": {"name": "lightgcn", "hparams": {...}},   # from the registry
        "model": state_dict,            # less the frozen tensors listed in "rebuilt"
        "rebuilt": {key: sha1},         # frozen tensors the constructor rebuilds from the data
        "dataset": {"name", "num_users", "num_items", "modalities", "feature_dims",
                    "num_train_edges", "train_sha1", "valid_sha1", "test_sha1",
                    "features_sha1", "user_ids", "item_ids"},
        ...  # the trainer's best.pt also stores epoch, valid and test metrics
    }

The :class:`~sea_pyg.train.Trainer` writes exactly this as ``<run>/best.pt`` (and the same keys
in ``last.pt``), so every training run is a saved model. :func:`save_model` writes one by hand.
:func:`load_checkpoint` reads format versions 1 to 3 (version 1 named some hyper-parameters as
MMRec does: FREEDOM's ``n_ui_layers`` / ``n_mm_layers``, BM3's ``n_layers``).

**What ``last.pt`` does not save.** Frozen tensors of the model's ``state_dict`` (buffers, and
parameters with ``requires_grad=False``) that the trainer finds unchanged since the model was
built (the item-item k-NN graph of SEA / FREEDOM, frozen feature tables, ...) are left out of
``last.pt`` (written often, only to resume): the model's constructor rebuilds them from the
data. ``"rebuilt"`` records their SHA-1, and a resume checks the rebuilt tensors against it (a
mismatch means other data, or a library that builds them differently: the resume is refused,
naming the tensors). Everything trainable, and every buffer that training changed (batch-norm
statistics), is saved. ``best.pt`` and :func:`save_model` files hold the whole ``state_dict``
(``"rebuilt"`` is empty), so ``model.load_state_dict(ckpt["model"])`` works on them;
:func:`load_weights` loads either kind.

**Fingerprints.** ``"dataset"`` records the sizes, SHA-1 fingerprints of the training,
validation and test edges (order-independent) and of each modality's item feature matrix (its
float32 bytes: a changed value or a permuted row changes it), and the id maps. :func:`load_model`
refuses data whose sizes, training edges, features or id maps differ; resuming a run also checks
the validation and test edges.

Graph models (LightGCN, SEA, ...) are built from their training graph, so a checkpoint alone
cannot rebuild them: :func:`load_model` takes the checkpoint **and** the dataset it was trained
on, rebuilds the model through the registry (name + hyper-parameters), checks that the dataset
matches the one recorded and loads the weights::

    data = read_mmrec("data/baby")                 # or MMRecDataset(root, "baby")[0]
    model = load_model("runs/lightgcn-baby-seed999", data)
    recs = recommend(model, data, users=["A1B2C3..."], k=10)   # sea_pyg.train.recommend

A damaged checkpoint (empty, truncated, not a sea_pyg file) raises :class:`CheckpointError`
naming the file.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from sea_pyg.data.mmrec import EDGE_TYPE, item_features
from sea_pyg.io import atomic_torch_save
from sea_pyg.models.base import Recommender
from sea_pyg.nn.mips import knn_scope
from sea_pyg.train.runfolder import BEST, LAST, RunFolderError, read_committed, run_status

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "UnfinishedRunWarning",
    "dataset_metadata",
    "frozen_tensors",
    "tensor_sha1",
    "model_payload",
    "save_model",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "raw_ids",
]

#: Version of the checkpoint format (``best.pt``, ``last.pt``, :func:`save_model` files).
FORMAT_VERSION = 3

#: Hyper-parameters renamed in format version 2: registry name -> {old: new}.
_V1_RENAMES = {
    "freedom": {"n_ui_layers": "num_layers", "n_mm_layers": "item_graph_layers"},
    "freedom+sea": {"n_ui_layers": "num_layers", "n_mm_layers": "item_graph_layers"},
    "bm3": {"n_layers": "num_layers"},
}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (empty, truncated, corrupt, not a sea_pyg file)
    or that does not fit the model and data it is loaded with. The message names the file."""


class UnfinishedRunWarning(UserWarning):
    """:func:`load_model` was given a run that is still training or was interrupted: its
    ``best.pt`` is the best model *so far*."""


# ---------------------------------------------------------------------------- fingerprints
def tensor_sha1(t: Tensor) -> str:
    """SHA-1 of a dense tensor's dtype, shape and bytes (``""`` for a sparse tensor)."""
    if t.layout != torch.strided:
        return ""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha1(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
    """What a checkpoint records about its training data (all ``weights_only``-safe types):
    sizes, fingerprints of the three splits' edges and of the item features, and the id maps."""
    store = data[EDGE_TYPE]
    feats = item_features(data)
    return {
        "name": str(getattr(data, "name", "unknown")),
        "num_users": int(data["user"].num_nodes),
        "num_items": int(data["item"].num_nodes),
        "modalities": [str(m) for m in (getattr(data, "modalities", None) or [])],
        "feature_dims": {m: int(x.shape[1]) for m, x in feats.items()},
        "num_train_edges": int(store.edge_index.size(1)),
        "train_sha1": _edges_sha1(store.edge_index),
        "valid_sha1": _edges_sha1(store.val_edge_index),
        "test_sha1": _edges_sha1(store.test_edge_index),
        "features_sha1": {m: tensor_sha1(x.to(torch.float32)) for m, x in feats.items()},
        "user_ids": raw_ids(data, "user"),
        "item_ids": raw_ids(data, "item"),
    }


#: What differs when a dataset fingerprint differs (the keys of :func:`dataset_metadata`).
_DATA_WHAT = {
    "num_users": "number of users",
    "num_items": "number of items",
    "num_train_edges": "number of training edges",
    "train_sha1": "training edges",
    "valid_sha1": "validation edges",
    "test_sha1": "test edges",
    "feature_dims": "feature dimensions",
    "modalities": "modalities",
    "user_ids": "user id map (u_id_mapping.csv)",
    "item_ids": "item id map (i_id_mapping.csv)",
}


def data_differences(
    saved: Mapping[str, Any], now: Mapping[str, Any], splits: bool = True
) -> list[str]:
    """What differs between two :func:`dataset_metadata` records (only keys both have: older
    checkpoints lack some fingerprints). ``splits=False`` skips the validation/test edges."""
    out = []
    for key, what in _DATA_WHAT.items():
        if not splits and key in ("valid_sha1", "test_sha1"):
            continue
        if saved.get(key) is None or now.get(key) is None or saved[key] == now[key]:
            continue
        if key.endswith("sha1") or key.endswith("_ids"):
            out.append(what)
        else:
            out.append(f"{what} ({saved[key]} vs {now[key]})")
    old, new = saved.get("features_sha1") or {}, now.get("features_sha1") or {}
    for m in sorted(set(old) & set(new)):
        if old[m] != new[m]:
            out.append(f"item features {m!r} (values or row order)")
    return out


def frozen_tensors(model: torch.nn.Module) -> dict[str, str]:
    """``{state_dict key: SHA-1}`` of the model's frozen tensors: buffers and parameters with
    ``requires_grad=False`` (dense ones)."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    out = {}
    for key, t in model.state_dict(keep_vars=True).items():
        if key not in trainable and isinstance(t, Tensor):
            sha = tensor_sha1(t)
            if sha:
                out[key] = sha
    return out


# ----------------------------------------------------------------------------------- saving
def model_payload(
    model: Recommender,
    model_info: dict[str, Any],
    dataset: dict[str, Any],
    rebuilt: Mapping[str, str] | None = None,
    copy: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """The checkpoint dict of ``model``: format version, registry description, weights and
    the dataset's metadata (:func:`dataset_metadata`), plus ``extra`` entries (the trainer's
    epoch and metrics in ``best.pt``, its whole state in ``last.pt``).

    Args:
        rebuilt: ``{key: SHA-1}`` of frozen tensors as the constructor built them
            (:func:`frozen_tensors` of the fresh model); those still equal to it are left out
            of ``"model"`` and listed in ``"rebuilt"``.
        copy: Copy the weights to the CPU (a snapshot that later training does not change).
    """
    state = model.state_dict()
    kept: dict[str, str] = {}
    if rebuilt:
        now = frozen_tensors(model)
        kept = {k: sha for k, sha in rebuilt.items() if now.get(k) == sha}
        state = {k: v for k, v in state.items() if k not in kept}
    if copy:
        state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
    return {
        "version": FORMAT_VERSION,
        "model_info": model_info,
        "model": state,
        "rebuilt": kept,
        "dataset": dataset,
        **extra,
    }


def save_model(
    path: str | os.PathLike, model: Recommender, data: HeteroData, model_info: dict[str, Any]
) -> None:
    """Save ``model`` with its registry description and its dataset's metadata (atomically;
    the whole ``state_dict``).

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


# ---------------------------------------------------------------------------------- loading
def knn_backend_of(ckpt: Mapping[str, Any]) -> str:
    """The ``TrainConfig.knn_backend`` a checkpoint was trained with (``best.pt`` records it,
    ``last.pt`` in its ``config``); ``"auto"`` when it records none (older files,
    :func:`save_model` files)."""
    return str(ckpt.get("knn_backend") or (ckpt.get("config") or {}).get("knn_backend") or "auto")


def _upgrade(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """A checkpoint of an older format version in the current layout."""
    version = ckpt.get("version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this sea_pyg reads versions "
            f"1 to {FORMAT_VERSION}: upgrade sea_pyg"
        )
    if version == 1:
        info = dict(ckpt["model_info"])
        renames = _V1_RENAMES.get(str(info.get("name")), {})
        info["hparams"] = {renames.get(k, k): v for k, v in info.get("hparams", {}).items()}
        ckpt["model_info"] = info
    ckpt["version"] = FORMAT_VERSION
    ckpt.setdefault("rebuilt", {})
    return ckpt


def _torch_load(path: Path, map_location: Any) -> Any:
    """``torch.load(weights_only=True)`` whose failures are :class:`CheckpointError` s naming
    the file (never torch's advice to load unsafely)."""
    import pickle
    import zipfile

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    if size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes): it was not written completely (a crash or "
            "a full disk while copying it?); use another checkpoint or train again"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} is not a sea_pyg checkpoint: it holds Python objects other than tensors, "
            "dicts, lists, strings and numbers (sea_pyg checkpoints never do, and loading such "
            "objects can run code), so it is refused"
        ) from None
    except FileNotFoundError:
        raise
    except (PermissionError, IsADirectoryError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, IndexError,
            TypeError, AttributeError):
        raise CheckpointError(
            f"checkpoint {path} ({size} bytes) is truncated or corrupt: it is not a complete "
            "checkpoint file (a crash, a full disk or an interrupted copy?); use another "
            "checkpoint or train again"
        ) from None


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a saved model with ``weights_only=True``.

    Args:
        path: A checkpoint file, or a run folder (its committed ``best.pt`` is used, see
            :mod:`sea_pyg.train.runfolder`).
        map_location: Passed to :func:`torch.load`.

    Raises:
        FileNotFoundError: no checkpoint there.
        CheckpointError: the file is empty, truncated, corrupt or not a sea_pyg checkpoint.
    """
    path = Path(path)
    folder, name = (path, BEST) if path.is_dir() else (path.parent, path.name)
    if name not in (BEST, LAST):
        if not path.is_file():
            raise FileNotFoundError(
                f"no checkpoint at {path}: pass a run folder holding best.pt (written by "
                "`sea-pyg train --out ...`) or a checkpoint file"
            )
        ckpt = _torch_load(path, map_location)
    else:
        try:
            ckpt, path = read_committed(folder, name, lambda p: (_torch_load(p, map_location), p))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no checkpoint at {folder / name}: pass a run folder holding best.pt (written "
                "by `sea-pyg train --out ...`) or a checkpoint file"
            ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_info" not in ckpt:
        raise CheckpointError(
            f"{path} is not a sea_pyg model checkpoint (no 'model'/'model_info')"
        )
    ckpt = _upgrade(ckpt, path)
    ckpt["path"] = str(path)
    return ckpt


def load_weights(
    model: torch.nn.Module, ckpt: Mapping[str, Any], check: bool = True
) -> list[str]:
    """Loads ``ckpt["model"]`` into ``model``, taking the tensors listed in ``ckpt["rebuilt"]``
    from ``model`` itself (its constructor rebuilt them from the data).

    Args:
        check: Compare the rebuilt tensors with the fingerprints the checkpoint recorded.

    Returns:
        The keys of rebuilt tensors that differ from the recorded fingerprints (with
        ``check=False``; with ``check`` a difference raises).

    Raises:
        CheckpointError: with ``check``, a rebuilt tensor differs; or the weights do not fit
            the model (another architecture), naming the file.
    """
    path = ckpt.get("path", "the checkpoint")
    state = dict(ckpt["model"])
    current = model.state_dict()
    differ = []
    for key, sha in (ckpt.get("rebuilt") or {}).items():
        if key not in current:
            raise CheckpointError(
                f"{path}: the model built now has no tensor {key!r} that the checkpoint expects "
                "to be rebuilt; load it with the model (and sea_pyg version) it was trained with"
            )
        if tensor_sha1(current[key]) != sha:
            differ.append(key)
        state[key] = current[key]
    if differ and check:
        raise CheckpointError(
            f"{path}: tensors rebuilt from the data differ from those the model was trained "
            f"with ({', '.join(differ)}): this is not the training data (or this sea_pyg builds "
            "them differently); load it with the dataset it was trained on"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:4]
        raise CheckpointError(
            f"{path}: the saved weights do not fit the model built now (another architecture, "
            f"hyper-parameters or data size): {' '.join(lines)}"
        ) from None
    return differ


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
            (sizes, training edges, item features and id maps, and the tensors rebuilt from
            them). ``False`` loads anyway (the frozen graphs are then those of ``data``).

    The model is built inside the :math:`k`-NN backend it was trained with
    (``TrainConfig.knn_backend``, recorded in ``best.pt`` and ``last.pt``; ``"auto"`` for
    files that do not record it), unless a :func:`~sea_pyg.nn.knn_backend` block is in force
    (it wins); :func:`~sea_pyg.train.recommend` rebuilds LATTICE's and MICRO's graphs with it
    too.

    Returns:
        The model in eval mode; ``model.checkpoint`` holds the checkpoint's ``model_info``,
        ``dataset`` metadata, path, the run's ``status`` (:func:`run_status`, ``None``
        outside a run folder) and ``knn_backend``.

    Warns:
        UnfinishedRunWarning: the run folder's run is still training or was interrupted (its
            ``best.pt`` is the best model so far, not the final one).

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        CheckpointError: the file is damaged, or ``data`` is not the training data (the
            message lists what differs), or the weights do not fit.
        ValueError: the model name is unknown.
        ImportError: the model was trained with ``knn_backend="mips"`` / ``"approx"`` and
            faiss is missing (the message names the install command).
    """
    from sea_pyg.models import build_model

    ckpt = load_checkpoint(path, map_location=device)
    info = ckpt["model_info"]
    saved = ckpt.get("dataset") or {}
    if check_data and saved:
        differ = data_differences(saved, dataset_metadata(data), splits=False)
        if differ:
            raise CheckpointError(
                f"{ckpt['path']} was trained on dataset {saved.get('name')!r} with a different "
                f"{'; '.join(differ)} than the data passed: load it with the dataset (and "
                "split, features, id maps) it was trained on, or pass check_data=False to "
                "load it anyway"
            )
    backend = knn_backend_of(ckpt)
    try:
        with knn_scope(backend, inherit=True):  # the k-NN graphs the model was trained with
            model, _, _ = build_model(info["name"], data, **dict(info.get("hparams", {})))
    except ImportError as exc:
        raise ImportError(
            f"{ckpt['path']} was trained with knn_backend={backend!r}: {exc}; or load it inside "
            "sea_pyg.nn.knn_backend('exact')"
        ) from None
    load_weights(model, ckpt, check=check_data)
    model = model.to(device).eval()
    folder = Path(ckpt["path"]).parent
    try:
        status = run_status(folder)
    except (RunFolderError, OSError):  # a damaged results.json does not hide the model
        status = None
    if status is not None and status["status"] != "finished":
        warnings.warn(
            UnfinishedRunWarning(
                f"{folder} is an unfinished run ({status['status']} after "
                f"{status['epochs_run']} epoch(s)): best.pt is its best model so far (epoch "
                f"{status['best_epoch']}), not the final one"
                + (
                    "; continue it with resume=True (--resume)"
                    if status["status"] == "interrupted"
                    else ""
                )
            ),
            stacklevel=2,
        )
    model.checkpoint = {
        "path": ckpt["path"], "model_info": info, "dataset": saved, "status": status,
        "knn_backend": backend,
    }
    return model

