"""Reading and writing MMRec-format dataset folders.

An MMRec dataset folder ``<root>/`` holds

* ``<name>.inter``: a tab-separated file with a header and at least the columns
  ``userID``, ``itemID`` and ``x_label`` (0 = train, 1 = validation, 2 = test).
  Other columns (``rating``, ``timestamp``) are ignored.
* one ``<modality>_feat.npy`` file per item modality (MMRec ships ``image_feat.npy``,
  4096-d, and ``text_feat.npy``, 384-d).  Row ``i`` describes the item with ``itemID == i``.

:func:`read_mmrec` turns such a folder into a validated :class:`~torch_geometric.data.HeteroData`
following the MMRec protocol exactly (see ``docs/protocol.md``):

* ``num_users = max(userID) + 1`` and ``num_items = max(itemID) + 1`` over *all* splits, so items
  that only occur in validation/test still get a node, a feature row and a score; ids must
  therefore be ``0 .. n-1`` without gaps (what the interaction file must hold, and what only
  warns, is listed in :mod:`sea_pyg.data.inter`);
* validation/test rows whose user never occurs in training are dropped
  (MMRec's ``filter_out_cod_start_users``);
* training edges are stored as ``('user', 'rates', 'item')`` plus the reverse
  ``('item', 'rated_by', 'user')``; validation and test edges are kept apart as the attributes
  ``val_edge_index`` and ``test_edge_index`` of the ``('user', 'rates', 'item')`` store, so no
  message passing layer ever sees them;
* item features are float32 tensors ``data['item'][f'x_{modality}']``; the modality names, in
  sorted order, are in ``data.modalities``;
* if the folder holds MMRec's id maps ``u_id_mapping.csv`` (``user_id``, ``userID``) and
  ``i_id_mapping.csv`` (``asin``, ``itemID``), the original ids are attached as lists of
  strings ``data['user'].raw_id`` / ``data['item'].raw_id`` (entry ``i`` = id of node ``i``).
  An unreadable or inconsistent map only warns: the maps are never needed for training.

Every file is checked before it is read (:mod:`sea_pyg.data.files`): what a path is when it is
not a regular file, a size limit, and ``.npy`` headers (no pickle; "truncated" when the file is
shorter than its header says).
"""

from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import HeteroData

from sea_pyg.data.files import DatasetFormatError, DatasetWarning, check_data_file, read_npy
from sea_pyg.data.files import max_file_bytes as _size_limit
from sea_pyg.data.inter import REQUIRED_COLUMNS, SPLIT_NAMES, inter_warnings, read_inter
from sea_pyg.io import atomic_npy_save, atomic_write, atomic_write_bytes, atomic_write_text

__all__ = [
    "REQUIRED_COLUMNS",
    "EDGE_TYPE",
    "REV_EDGE_TYPE",
    "DatasetFormatError",
    "DatasetWarning",
    "read_mmrec",
    "write_mmrec",
    "find_inter_file",
    "read_id_map",
    "item_features",
    "describe",
]

EDGE_TYPE = ("user", "rates", "item")
REV_EDGE_TYPE = ("item", "rated_by", "user")
FEATURE_SUFFIX = "_feat.npy"
#: MMRec's id map files: file name -> (node type, column of the 0-based id).
ID_MAP_FILES = {"u_id_mapping.csv": ("user", "userID"), "i_id_mapping.csv": ("item", "itemID")}
#: Column of the original id in MMRec's id map of each node type.
RAW_ID_COLUMNS = {"user": "user_id", "item": "asin"}


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


def _id_map_frames(
    interactions: pd.DataFrame, raw_ids: Mapping[str, Sequence[str]]
) -> dict[str, pd.DataFrame]:
    """``{file name: id map frame}`` of the node types in ``raw_ids`` (checked against the ids)."""
    frames = {}
    for file, (node_type, column) in ID_MAP_FILES.items():
        if node_type not in raw_ids:
            continue
        ids = list(raw_ids[node_type])
        needed = int(interactions[column].max()) + 1 if len(interactions) else 0
        if len(ids) != needed:
            raise ValueError(
                f"write_mmrec: raw_ids[{node_type!r}] has {len(ids)} entries but the "
                f"interactions need {needed} (max {column} + 1)"
            )
        frames[file] = pd.DataFrame(
            {RAW_ID_COLUMNS[node_type]: ids, column: np.arange(len(ids), dtype=np.int64)}
        )
    return frames


def write_mmrec(
    folder: str | os.PathLike,
    name: str,
    interactions: pd.DataFrame,
    features: Mapping[str, np.ndarray],
    *,
    raw_ids: Mapping[str, Sequence[str]] | None = None,
    extra_files: Mapping[str, str | bytes] | None = None,
) -> Path:
    """Write an MMRec-format dataset folder.

    Args:
        folder: Destination folder (created if missing).
        name: Dataset name; the interaction file is ``<folder>/<name>.inter``.
        interactions: Frame with (at least) the columns ``userID``, ``itemID``, ``x_label``.
            Extra columns are written too.
        features: Modality name -> ``(num_items, dim)`` array, written as
            ``<folder>/<modality>_feat.npy`` (float32).
        raw_ids: Optional ``{"user": ids, "item": ids}`` (either key may be left out): the
            original ids, entry ``i`` being the id of node ``i`` (what :func:`read_mmrec`
            attaches as ``raw_id``), written as MMRec's id maps ``u_id_mapping.csv``
            (``user_id``, ``userID``) and ``i_id_mapping.csv`` (``asin``, ``itemID``),
            tab-separated. Each list must have ``max(id) + 1`` entries.
        extra_files: Optional file name -> content of other files to put in the folder: a
            ``str`` is written as UTF-8 text, ``bytes`` as they are.

    Every file is written atomically (for a whole folder that appears at once, call this
    inside :func:`sea_pyg.io.atomic_folder`). Returns the folder path.
    """
    folder = Path(folder)
    missing = [c for c in REQUIRED_COLUMNS if c not in interactions.columns]
    if missing:
        raise ValueError(
            f"write_mmrec: `interactions` lacks column(s) {missing}; "
            f"it needs {list(REQUIRED_COLUMNS)}"
        )
    if not name or "/" in name or os.sep in name:
        raise ValueError(f"write_mmrec: `name` must be a plain file stem, got {name!r}")
    for modality, arr in features.items():
        if "/" in modality or not modality:
            raise ValueError(f"write_mmrec: bad modality name {modality!r}")
        arr = np.asarray(arr)
        if arr.ndim != 2:
            raise ValueError(
                f"write_mmrec: features[{modality!r}] must be 2-D (num_items, dim), "
                f"got shape {arr.shape}"
            )
    unknown = sorted(set(raw_ids or {}) - set(RAW_ID_COLUMNS))
    if unknown:
        raise ValueError(f"write_mmrec: raw_ids keys must be 'user' and/or 'item', got {unknown}")
    id_maps = _id_map_frames(interactions, raw_ids or {})
    for file in extra_files or {}:
        if not file or "/" in file or os.sep in file:
            raise ValueError(f"write_mmrec: bad extra file name {file!r}")

    inter_path = folder / f"{name}.inter"
    atomic_write(inter_path, lambda tmp: interactions.to_csv(tmp, sep="\t", index=False))
    for file, frame in id_maps.items():
        atomic_write(folder / file, lambda tmp, df=frame: df.to_csv(tmp, sep="\t", index=False))
    for modality, arr in features.items():
        arr32 = np.ascontiguousarray(np.asarray(arr, dtype=np.float32))
        atomic_npy_save(arr32, folder / f"{modality}{FEATURE_SUFFIX}")
    for file, content in (extra_files or {}).items():
        if isinstance(content, bytes):
            atomic_write_bytes(content, folder / file)
        else:
            atomic_write_text(content, folder / file)
    return folder


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


def find_inter_file(folder: Path, name: str | None) -> Path:
    """Locate ``<name>.inter`` in ``folder`` (or the only ``*.inter`` file if ``name`` is None)."""
    try:
        os.stat(folder)
    except FileNotFoundError:
        link = (
            f" (a symbolic link to the missing {os.readlink(folder)!r})"
            if os.path.islink(folder)
            else ""
        )
        raise DatasetFormatError(
            f"dataset folder {folder} does not exist{link}; pass the folder that holds "
            f"<name>.inter and the <modality>_feat.npy files"
        ) from None
    except OSError as exc:
        kind = "is a symbolic link loop" if exc.errno == errno.ELOOP else "cannot be accessed"
        raise DatasetFormatError(
            f"dataset folder {folder} {kind} ({exc.strerror or exc}); pass the folder that "
            f"holds <name>.inter and the <modality>_feat.npy files"
        ) from None
    if not folder.is_dir():
        raise DatasetFormatError(f"{folder} is not a folder; pass the dataset folder")
    if name is not None:
        return folder / f"{name}.inter"
    candidates = sorted(folder.glob("*.inter"))
    if not candidates:
        raise DatasetFormatError(
            f"missing file: no *.inter file in {folder}; an MMRec dataset folder needs "
            f"<name>.inter (tab-separated, columns userID, itemID, x_label)"
        )
    if len(candidates) > 1:
        raise DatasetFormatError(
            f"{folder} holds several .inter files ({', '.join(p.name for p in candidates)}); "
            f"pass name=... to choose one"
        )
    return candidates[0]


def _discover_modalities(folder: Path) -> list[str]:
    return sorted(p.name[: -len(FEATURE_SUFFIX)] for p in folder.glob(f"*{FEATURE_SUFFIX}"))


class FeatureProblem(NamedTuple):
    """What :func:`feature_array_problem` found wrong with an item feature matrix.

    ``kind`` is ``"dtype"`` (not a numeric numpy array), ``"ndim"`` (not 2-D), ``"rows"`` (not
    one row per item), ``"columns"`` (no column) or ``"nonfinite"`` (NaN or inf, first in row
    ``row``).
    """

    kind: str
    row: int = -1


def feature_array_problem(arr: Any, num_items: int) -> FeatureProblem | None:
    """The first problem of ``arr`` as the ``(num_items, dim)`` feature matrix, or ``None``.

    The one check of item feature arrays in the data layer: the MMRec reader and the raw
    Amazon pipeline each turn a problem into their own error message.
    """
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iuf":
        return FeatureProblem("dtype")
    if arr.ndim != 2:
        return FeatureProblem("ndim")
    if arr.shape[0] != num_items:
        return FeatureProblem("rows")
    if arr.shape[1] == 0:
        return FeatureProblem("columns")
    finite = np.isfinite(arr)
    if not finite.all():
        return FeatureProblem("nonfinite", int(np.flatnonzero(~finite.all(axis=1))[0]))
    return None


_FEATURE_FILE_ERRORS = {
    "dtype": "{path}: features must be a numeric (int or float) array, got dtype {dtype}",
    "ndim": "{path}: features must be a 2-D array (num_items, dim), got shape {shape}",
    "rows": "{path}: has {shape[0]} rows but the interaction file {inter} implies {num_items} "
    "items (max itemID + 1); row i must describe item i, one row per item",
    "columns": "{path}: features have 0 columns",
    "nonfinite": "{path}: contains NaN or inf values (first in row {row}, i.e. itemID {row}); "
    "replace them, e.g. by the mean feature vector",
}


def _read_features(path: Path, num_items: int, inter_path: Path, limit: int) -> torch.Tensor:
    missing = (
        f"missing file {path}: put the item feature matrix there as a 2-D .npy array "
        f"(row i = item i), or drop the modality"
    )
    check_data_file(path, "feature file", limit=limit, missing=missing)

    def describe_problem(kind: str, shape: Any, dtype: Any, row: int = -1) -> str:
        return _FEATURE_FILE_ERRORS[kind].format(
            path=path,
            dtype=dtype,
            shape=shape,
            num_items=num_items,
            row=row,
            inter=inter_path.name,
        )

    def check_header(shape: tuple[int, ...], dtype: np.dtype) -> None:
        # the checks of feature_array_problem that the header answers, before reading data
        if dtype.kind not in "iuf":
            kind = "dtype"
        elif len(shape) != 2:
            kind = "ndim"
        elif shape[0] != num_items:
            kind = "rows"
        elif shape[1] == 0:
            kind = "columns"
        else:
            return
        raise DatasetFormatError(describe_problem(kind, shape, dtype))

    arr = read_npy(path, "feature file", limit=limit, check=check_header)
    problem = feature_array_problem(arr, num_items)
    if problem is not None:
        raise DatasetFormatError(describe_problem(problem.kind, arr.shape, arr.dtype, problem.row))
    with np.errstate(over="ignore"):
        x = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(x).all():  # finite float64 beyond float32's range
        row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise DatasetFormatError(
            f"{path}: holds values beyond the float32 range (+-3.4e38; first in row {row}, "
            f"i.e. itemID {row}); the features are used as float32: rescale them"
        )
    return torch.from_numpy(x)


def read_id_map(path: Path, id_column: str, num_nodes: int) -> list[str]:
    """Read one MMRec id map (tab- or comma-separated, with a header).

    Returns the original ids as strings, entry ``i`` being the id mapped to ``i``.

    Raises:
        DatasetFormatError: if the file is not a readable UTF-8 table, lacks ``id_column`` or
            a second column, or its ids are not exactly ``0 .. num_nodes - 1``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
        sep = "\t" if "\t" in first else ","
        with warnings.catch_warnings():  # a line longer than the header: an error, no index
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, index_col=False)
    except (ValueError, OSError, pd.errors.ParserWarning) as exc:  # not UTF-8, not a table, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetFormatError(f"{path}: not a readable id map ({reason})") from None
    others = [c for c in df.columns if c != id_column]
    if id_column not in df.columns or len(others) != 1:
        raise DatasetFormatError(
            f"{path}: expected two columns, the original id and {id_column}, found "
            f"{list(df.columns)}"
        )
    ids = pd.to_numeric(df[id_column], errors="coerce").to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(ids) & (ids >= 0) & (ids < num_nodes) & (ids == np.floor(ids))
    if len(ids) != num_nodes or not ok.all() or np.unique(ids).size != num_nodes:
        raise DatasetFormatError(
            f"{path}: {id_column} must list every id 0 .. {num_nodes - 1} exactly once "
            f"({len(ids)} rows found)"
        )
    out = [""] * num_nodes
    for i, raw in zip(ids.astype(np.int64), df[others[0]], strict=True):
        out[i] = raw
    return out


def _attach_id_maps(data: HeteroData, folder: Path, limit: int, notes: list[str]) -> None:
    """``raw_id`` from the id maps that exist; a problem only adds a note (a warning)."""
    sizes = {"user": data["user"].num_nodes, "item": data["item"].num_nodes}
    for file, (node_type, column) in ID_MAP_FILES.items():
        path = folder / file
        if not os.path.lexists(path):
            continue
        try:
            check_data_file(path, "id map", limit=limit)
            data[node_type].raw_id = read_id_map(path, column, sizes[node_type])
        except DatasetFormatError as exc:
            notes.append(f"ignoring id map: {exc}")


def read_mmrec(
    folder: str | os.PathLike,
    name: str | None = None,
    modalities: Sequence[str] | None = None,
    filter_cold_start_users: bool = True,
    id_maps: bool = True,
    max_file_bytes: int | None = None,
) -> HeteroData:
    """Read an MMRec-format dataset folder into a validated :class:`HeteroData`.

    Args:
        folder: The dataset folder.
        name: Dataset name (``<name>.inter``). If ``None``, the folder's only ``*.inter`` file.
        modalities: Which ``<modality>_feat.npy`` files to load. ``None`` loads every
            ``*_feat.npy`` in the folder (sorted by name); ``[]`` loads none.
        filter_cold_start_users: Drop validation/test rows of users without training rows
            (the MMRec protocol does).
        id_maps: Attach the original ids from ``u_id_mapping.csv`` / ``i_id_mapping.csv`` as
            ``data['user'].raw_id`` / ``data['item'].raw_id`` when the files exist.
        max_file_bytes: Largest file read (default 16 GiB or ``$SEA_PYG_MAX_FILE_BYTES``; see
            :mod:`sea_pyg.data.files`); checked before a file is read.

    Returns:
        A :class:`HeteroData` with node types ``user`` and ``item`` (``num_nodes`` set),
        training edges ``('user', 'rates', 'item')`` and ``('item', 'rated_by', 'user')``,
        ``val_edge_index`` / ``test_edge_index`` on the ``('user', 'rates', 'item')`` store,
        item features ``data['item'][f'x_{m}']`` (float32) for each modality ``m`` in
        ``data.modalities``, ``data.name``, ``raw_id`` lists when id maps are found, and
        ``data.format_warnings`` (the messages of the warnings below) when there were any.

    Raises:
        DatasetFormatError: naming the file and the problem, for a missing folder or file, a
            path that is a directory, a symbolic link loop or not a regular file, a file over
            the size limit, a missing column, non-integer or negative ids, ids with gaps (they
            must be ``0 .. n-1``, see :mod:`sea_pyg.data.inter`), ``x_label`` outside
            {0, 1, 2}, feature files that are truncated, not 2-D numeric arrays, need pickle,
            have the wrong number of rows or hold NaN/inf, and for an empty split.

    Warns:
        DatasetWarning: for repeated rows and for a (user, item) pair in several splits (both
            kept, as in MMRec), and for an unreadable or inconsistent id map (ignored).
    """
    folder = Path(folder)
    limit = _size_limit(max_file_bytes)
    inter_path = find_inter_file(folder, name)
    check_data_file(
        inter_path,
        "interaction file",
        limit=limit,
        missing=f"missing file {inter_path}: an MMRec dataset folder needs the interaction "
        f"file <name>.inter (tab-separated, columns userID, itemID, x_label)",
    )
    name = inter_path.name[: -len(".inter")]
    df = read_inter(inter_path)
    notes = inter_warnings(df, inter_path)

    num_users = int(df["userID"].max()) + 1
    num_items = int(df["itemID"].max()) + 1

    labels = df["x_label"].to_numpy()
    users = df["userID"].to_numpy()
    items = df["itemID"].to_numpy()
    train = labels == 0
    if not train.any():
        raise DatasetFormatError(
            f"{inter_path}: the training split is empty (no row with x_label == 0)"
        )
    if filter_cold_start_users:
        has_train = np.zeros(num_users, dtype=bool)
        has_train[users[train]] = True
        keep = train | has_train[users]
        users, items, labels = users[keep], items[keep], labels[keep]

    edges = {}
    for label, split in SPLIT_NAMES.items():
        mask = labels == label
        if not mask.any():
            extra = (
                " after dropping cold-start users (users with no training row)"
                if filter_cold_start_users and label != 0
                else ""
            )
            raise DatasetFormatError(
                f"{inter_path}: the {split} split is empty (no row with x_label == {label}"
                f"{extra}); every split needs at least one interaction"
            )
        edges[label] = torch.from_numpy(np.stack([users[mask], items[mask]]).astype(np.int64))

    if modalities is None:
        modalities = _discover_modalities(folder)
    modalities = list(modalities)
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"read_mmrec: duplicate names in modalities={modalities}")

    data = HeteroData()
    data.name = name
    data.modalities = modalities
    data["user"].num_nodes = num_users
    data["item"].num_nodes = num_items
    data[EDGE_TYPE].edge_index = edges[0]
    data[REV_EDGE_TYPE].edge_index = edges[0].flip(0)
    data[EDGE_TYPE].val_edge_index = edges[1]
    data[EDGE_TYPE].test_edge_index = edges[2]
    for modality in modalities:
        path = folder / f"{modality}{FEATURE_SUFFIX}"
        data["item"][f"x_{modality}"] = _read_features(path, num_items, inter_path, limit)
    if id_maps:
        _attach_id_maps(data, folder, limit, notes)
    for note in notes:
        warnings.warn(note, DatasetWarning, stacklevel=2)
    if notes:
        data.format_warnings = notes
    return data


def item_features(data: HeteroData) -> dict[str, torch.Tensor]:
    """Return ``{modality: data['item'][f'x_{modality}']}`` in ``data.modalities`` order."""
    modalities = getattr(data, "modalities", None) or []
    return {m: data["item"][f"x_{m}"] for m in modalities}


def describe(data: HeteroData) -> str:
    """A one-paragraph summary in the spirit of MMRec's log header."""
    store = data[EDGE_TYPE]
    num_users, num_items = data["user"].num_nodes, data["item"].num_nodes
    n_train = store.edge_index.size(1)
    n_val, n_test = store.val_edge_index.size(1), store.test_edge_index.size(1)
    total = n_train + n_val + n_test
    density = total / max(1, num_users * num_items)
    lines = [
        f"dataset {getattr(data, 'name', '?')}: {num_users} users, {num_items} items, "
        f"{total} interactions (density {density:.6f})",
        f"  train {n_train} ({store.edge_index[1].unique().numel()} items), "
        f"valid {n_val} ({store.val_edge_index[1].unique().numel()} items), "
        f"test {n_test} ({store.test_edge_index[1].unique().numel()} items)",
    ]
    feats = item_features(data)
    if feats:
        lines.append(
            "  item features: "
            + ", ".join(f"{m} {tuple(x.shape[1:])[0]}-d" for m, x in feats.items())
        )
    return "\n".join(lines)
