"""MMRec datasets as a PyG :class:`~torch_geometric.data.InMemoryDataset`.

Layout, as for every PyG dataset::

    <root>/raw/        the MMRec files you put there: <name>.inter, image_feat.npy,
                       text_feat.npy (and optionally u_id_mapping.csv, i_id_mapping.csv)
    <root>/processed/  the validated HeteroData, cached as <name>_<key>.pt

Nothing is downloaded: the public MMRec data (Amazon Baby, Sports, Clothing, Elec, MicroLens)
is behind the Google Drive link in the README of https://github.com/enoche/MMRec, which needs a
browser. A missing file raises an error saying which files to put where.

The cache key hashes everything that shapes the processed graph: the dataset name, the size and
modification time (or, with ``content_hash=True``, the SHA-256) of every raw file read, the
chosen modalities, the reader options, the ``pre_transform`` and :data:`PROCESSED_VERSION`. A
changed raw file therefore gives a new key and is re-processed; a stale graph is never reused.
Older caches of the same dataset are removed after a new one is written. Caches are written to
a temporary file and renamed into place.

Why the PyG flow fits: :class:`~torch_geometric.data.InMemoryDataset` re-processes whenever a
file of :attr:`processed_file_names` is missing, so putting the key into that file name is all
the invalidation needed. Two deviations: :meth:`download` raises instead of downloading (the
data is not downloadable without a browser), and :meth:`process` writes the cache itself,
atomically, instead of :meth:`InMemoryDataset.save`, which writes in place. ``pre_filter`` is not
supported (a dataset is one graph).

Nothing in a dataset folder is ever unpickled. PyG's ``Dataset._process`` reads
``processed/pre_transform.pt`` and ``processed/pre_filter.pt`` with
``torch.load(weights_only=False)``, and ``InMemoryDataset.load`` goes through
``torch_geometric.io.fs.torch_load``, which retries with ``weights_only=False`` when the safe
load fails: a file planted in a shared dataset folder would run code on the first load. This
class replaces both: every file of ``processed/`` is loaded with
``torch.load(weights_only=True)`` (tensors, dicts, lists, strings, numbers and PyG's own data
classes only), the cache must be the ``(dict, None, HeteroData)`` triple that :meth:`process`
writes and (without a ``pre_transform``) a graph of the layout :func:`~sea_pyg.data.read_mmrec`
returns, and anything else is refused with a :class:`~sea_pyg.data.DatasetFormatError` naming
the file and how to rebuild it. ``pre_transform.pt`` / ``pre_filter.pt`` are no longer written
(the cache key covers the ``pre_transform``); ones left by PyG or older versions must hold a
string. The raw files are read by :func:`~sea_pyg.data.read_mmrec` (no pickle either).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import HeteroData, InMemoryDataset

from sea_pyg.data.files import DatasetFormatError, DatasetWarning, check_data_file
from sea_pyg.data.mmrec import (
    EDGE_TYPE,
    FEATURE_SUFFIX,
    ID_MAP_FILES,
    REV_EDGE_TYPE,
    read_mmrec,
)
from sea_pyg.io import atomic_torch_save

__all__ = ["MMRecDataset", "KNOWN_DATASETS", "PROCESSED_VERSION", "MMREC_URL"]

#: Files PyG's own ``Dataset._process`` writes next to the cache (never written by this class).
PYG_PROCESSED_FILES = ("pre_transform.pt", "pre_filter.pt")
#: Bump when the processed HeteroData layout changes.
PROCESSED_VERSION = 1
#: Where the public MMRec data is described (its README links the Google Drive folder).
MMREC_URL = "https://github.com/enoche/MMRec"
#: The datasets MMRec distributes, with the feature files each ships.
KNOWN_DATASETS: dict[str, tuple[str, ...]] = {
    "baby": ("image", "text"),
    "sports": ("image", "text"),
    "clothing": ("image", "text"),
    "elec": ("image", "text"),
    "microlens": ("image", "text"),
}


class MMRecDataset(InMemoryDataset):
    r"""An MMRec-format dataset (Amazon Baby/Sports/Clothing/Elec, MicroLens, or your own).

    ``dataset[0]`` is the :class:`~torch_geometric.data.HeteroData` of
    :func:`~sea_pyg.data.read_mmrec`: ``('user', 'rates', 'item')`` training edges (and the
    reverse), ``val_edge_index`` / ``test_edge_index``, item features ``x_<modality>``, and the
    original ids ``raw_id`` when the id maps are in ``raw/``.

    Args:
        root: Dataset root; the MMRec files go in ``<root>/raw``.
        name: Dataset name: the interaction file is ``raw/<name>.inter``. ``baby``, ``sports``,
            ``clothing``, ``elec`` and ``microlens`` expect ``image_feat.npy`` and
            ``text_feat.npy`` by default; any other name loads the ``*_feat.npy`` it finds.
        modalities: Feature files to load (``["text"]`` loads ``text_feat.npy`` only).
            ``None``: the default described for ``name``.
        filter_cold_start_users: Drop validation/test rows of users without a training row
            (MMRec's protocol).
        content_hash: Key the cache by SHA-256 of the raw files instead of size + mtime (slower
            for large feature files, immune to files rewritten with identical size and time).
        transform: Applied to the graph on every access.
        pre_transform: Applied once before caching (part of the cache key via its ``repr``).
        force_reload: Re-process even if a valid cache exists.
        log: Print PyG's "Processing..." messages.
        max_file_bytes: Largest raw or processed file read (see :func:`read_mmrec`).

    Warnings of :func:`read_mmrec` (:class:`~sea_pyg.data.DatasetWarning`) are kept in the
    cache and repeated on every load, not only when the folder is processed.

    Example::

        dataset = MMRecDataset("data/baby", "baby")   # data/baby/raw/baby.inter, ...
        data = dataset[0]
    """

    def __init__(
        self,
        root: str | os.PathLike,
        name: str,
        modalities: Sequence[str] | None = None,
        filter_cold_start_users: bool = True,
        content_hash: bool = False,
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        force_reload: bool = False,
        log: bool = True,
        max_file_bytes: int | None = None,
    ) -> None:
        if not name or "/" in name or os.sep in name:
            raise ValueError(f"MMRecDataset: `name` must be a plain file stem, got {name!r}")
        self.name = name
        if modalities is None and name.lower() in KNOWN_DATASETS:
            modalities = KNOWN_DATASETS[name.lower()]
        self.modalities = None if modalities is None else list(modalities)
        self.filter_cold_start_users = filter_cold_start_users
        self.content_hash = content_hash
        self.max_file_bytes = max_file_bytes
        self._key: str | None = None
        self._processed_now = False
        super().__init__(
            str(root), transform, pre_transform, None, log=log, force_reload=force_reload
        )
        self.load(self.processed_paths[0], data_cls=HeteroData)
        if not self._processed_now:  # processing warned already
            for note in getattr(self._data, "format_warnings", None) or []:
                warnings.warn(str(note), DatasetWarning, stacklevel=2)

    # -------------------------------------------------------------------------------------------
    def _chosen_modalities(self) -> list[str]:
        if self.modalities is not None:
            return list(self.modalities)
        raw = Path(self.raw_dir)
        return sorted(p.name[: -len(FEATURE_SUFFIX)] for p in raw.glob(f"*{FEATURE_SUFFIX}"))

    @property
    def raw_file_names(self) -> list[str]:
        """``<name>.inter`` and one ``<modality>_feat.npy`` per chosen modality."""
        return [f"{self.name}.inter"] + [f"{m}{FEATURE_SUFFIX}" for m in self._chosen_modalities()]

    def _fingerprint(self, path: Path) -> list:
        if self.content_hash:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
            return [path.name, digest.hexdigest()]
        st = path.stat()
        return [path.name, st.st_size, st.st_mtime_ns]

    def cache_key(self) -> str:
        """Hash of everything that shapes the processed graph (see the module docstring)."""
        raw = Path(self.raw_dir)
        files = [raw / f for f in self.raw_file_names] + [raw / f for f in sorted(ID_MAP_FILES)]
        parts = {
            "version": PROCESSED_VERSION,
            "name": self.name,
            "modalities": self._chosen_modalities(),
            "filter_cold_start_users": self.filter_cold_start_users,
            "pre_transform": repr(self.pre_transform),
            "files": [self._fingerprint(p) if p.is_file() else [p.name, None] for p in files],
        }
        blob = json.dumps(parts, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def processed_file_names(self) -> list[str]:
        """``<name>_<key>.pt``: a new key (changed raw file or option) means re-processing."""
        if self._key is None:
            self._key = self.cache_key()
        return [f"{self.name}_{self._key}.pt"]

    def download(self) -> None:
        """Never downloads: raises an error naming the missing files and where to get them."""
        raw = Path(self.raw_dir)
        for file in self.raw_file_names:  # a dangling link or a link loop: say so
            if os.path.lexists(raw / file):
                what = "interaction file" if file.endswith(".inter") else "feature file"
                check_data_file(raw / file, what, limit=self.max_file_bytes)
        missing = [f for f in self.raw_file_names if not (raw / f).is_file()]
        present = sorted(p.name for p in raw.iterdir()) if raw.is_dir() else []
        raise DatasetFormatError(
            f"MMRecDataset {self.name!r}: missing file(s) {', '.join(missing)} in {raw.resolve()}"
            f" (found: {', '.join(present) or 'nothing'}).\n"
            f"Put the MMRec files of the dataset there: {self.name}.inter (tab-separated, columns "
            f"userID, itemID, x_label) and one <modality>_feat.npy per modality (row i = item "
            f"i); u_id_mapping.csv / i_id_mapping.csv are optional.\n"
            f"The public MMRec datasets (baby, sports, clothing, elec, microlens) are linked "
            f"(Google Drive) from the README of {MMREC_URL}; they are NOT downloaded "
            f"automatically. To build a folder from McAuley's raw Amazon files use "
            f"`sea-pyg prepare` (see docs/data.md)."
        )

    def process(self) -> None:
        """Read and validate the raw folder, apply ``pre_transform``, cache atomically."""
        data = read_mmrec(
            self.raw_dir,
            name=self.name,
            modalities=self._chosen_modalities(),
            filter_cold_start_users=self.filter_cold_start_users,
            max_file_bytes=self.max_file_bytes,
        )
        if self.pre_transform is not None:
            data = self.pre_transform(data)
        data, slices = self.collate([data])
        target = Path(self.processed_paths[0])
        atomic_torch_save((data.to_dict(), slices, data.__class__), target)
        for old in target.parent.glob(f"{self.name}_*.pt"):
            if old != target and len(old.stem) == len(target.stem):
                old.unlink(missing_ok=True)

    # -------------------------------------------------------------------------------------------
    # Safe loading: PyG's hooks, without their torch.load(weights_only=False)
    # -------------------------------------------------------------------------------------------
    def _process(self) -> None:
        """PyG's ``Dataset._process`` (process if the cache file is missing or ``force_reload``)
        without its ``torch.load(weights_only=False)`` of ``pre_transform.pt`` /
        ``pre_filter.pt``: those files are checked with :meth:`_safe_load` and must hold a
        string; they are not written any more."""
        for file in PYG_PROCESSED_FILES:
            path = Path(self.processed_dir) / file
            if os.path.lexists(path):
                obj = self._safe_load(path, "PyG file", fix=_FIX_PYG_FILE.format(path=path))
                if not isinstance(obj, str):
                    raise DatasetFormatError(
                        f"{path}: holds a {type(obj).__name__}, where PyG writes a string. "
                        + _FIX_PYG_FILE.format(path=path)
                    )
        if not self.force_reload and all(Path(p).exists() for p in self.processed_paths):
            return
        if self.log and "PYTEST_CURRENT_TEST" not in os.environ:
            print("Processing...", file=sys.stderr)
        try:
            os.makedirs(self.processed_dir, exist_ok=True)
        except OSError as exc:
            raise DatasetFormatError(
                f"{self.processed_dir}: cannot create the cache folder ({exc.strerror or exc})"
            ) from None
        self._processed_now = True
        self.process()
        if self.log and "PYTEST_CURRENT_TEST" not in os.environ:
            print("Done!", file=sys.stderr)

    def _safe_load(self, path: Path, what: str, fix: str) -> Any:
        """``torch.load(path, weights_only=True)``; any failure is a message, never a retry."""
        try:
            check_data_file(path, what, limit=self.max_file_bytes)
        except DatasetFormatError as exc:
            raise DatasetFormatError(f"{exc}. {fix}") from None
        try:
            with warnings.catch_warnings():  # torch's remarks on foreign pickles: noise here
                warnings.simplefilter("ignore")
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - anything but a clean safe load is refused
            raise DatasetFormatError(
                f"{path}: refused: this {what} does not load with torch.load(weights_only=True) "
                f"({_load_failure(exc)}). It is corrupt, was written by another program, or "
                f"holds pickled code, which was NOT run. {fix}"
            ) from None

    def load(self, path: str, data_cls: type = HeteroData) -> None:
        """Load the cache written by :meth:`process` with ``torch.load(weights_only=True)``
        and check it (see the module docstring); replaces PyG's ``InMemoryDataset.load``,
        whose ``fs.torch_load`` falls back to ``weights_only=False``."""
        path = Path(path)
        fix = _FIX_CACHE.format(processed=self.processed_dir, raw=self.raw_dir)
        out = self._safe_load(path, "processed cache", fix=fix)
        graph = _cache_graph(out, check_layout=self.pre_transform is None)
        if isinstance(graph, str):
            raise DatasetFormatError(f"{path}: not a cache written by MMRecDataset: {graph}. {fix}")
        self.data, self.slices = graph, None

    def __repr__(self) -> str:
        return f"MMRecDataset({self.name!r}, root={self.root!r})"


_FIX_CACHE = (
    "Delete the folder {processed} (it is rebuilt from {raw} on the next load), or pass "
    "force_reload=True"
)
_FIX_PYG_FILE = (
    "Delete {path}: sea_pyg does not use it (PyG datasets and older sea_pyg versions wrote it)"
)


def _load_failure(exc: Exception) -> str:
    """The informative line of a failed safe ``torch.load`` (without torch's advice to retry
    with ``weights_only=False``)."""
    text = str(exc)
    found = re.search(r"GLOBAL\s+([\w.]+)", text)
    if found:  # torch's message goes on to suggest allowlisting it: never repeat that
        return f"it refers to the Python object {found.group(1)}, which a safe load refuses"
    noise = ("weights_only", "Weights only", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not any(n in line for n in noise)]
    if not lines and isinstance(exc, EOFError):
        return "EOFError: the file ends too early (empty or truncated)"
    if not lines:
        return f"{type(exc).__name__}: it holds objects that a safe load does not allow"
    return f"{type(exc).__name__}: {lines[0].split('. ')[0][:300]}"


def _cache_graph(out: Any, check_layout: bool) -> HeteroData | str:
    """The graph of a loaded cache, or what is wrong with it."""
    if not (isinstance(out, tuple) and len(out) == 3):
        return f"expected the triple (data dict, None, HeteroData), found a {type(out).__name__}"
    data_dict, slices, cls = out
    if cls is not HeteroData or slices is not None or not isinstance(data_dict, dict):
        return (
            f"expected (data dict, None, HeteroData), found ({type(data_dict).__name__}, "
            f"{type(slices).__name__}, {cls!r})"
        )
    try:
        data = HeteroData.from_dict(data_dict)
    except Exception as exc:  # noqa: BLE001 - a malformed dict of a tampered file
        return f"its graph cannot be rebuilt ({type(exc).__name__}: {exc})"
    if check_layout:
        problem = _graph_problem(data)
        if problem:
            return problem
    return data


def _graph_problem(data: HeteroData) -> str | None:
    """What makes ``data`` differ from the layout :func:`read_mmrec` returns, or ``None``."""
    try:
        num_users, num_items = int(data["user"].num_nodes), int(data["item"].num_nodes)
        store = data[EDGE_TYPE]
        edges = {k: store[k] for k in ("edge_index", "val_edge_index", "test_edge_index")}
        edges["reverse edge_index"] = data[REV_EDGE_TYPE].edge_index.flip(0)
        modalities = list(data.modalities)
        feats = {m: data["item"][f"x_{m}"] for m in modalities}
    except Exception as exc:  # noqa: BLE001 - a missing store or attribute
        return f"it lacks part of the graph layout ({type(exc).__name__}: {exc})"
    for key, e in edges.items():
        ok = isinstance(e, torch.Tensor) and e.dtype == torch.long and e.dim() == 2
        ok = ok and e.size(0) == 2 and e.size(1) > 0
        if not ok or int(e[0].min()) < 0 or int(e[0].max()) >= num_users:
            return f"{key} is not a (2, E) long tensor of user ids in 0 .. {num_users - 1}"
        if int(e[1].min()) < 0 or int(e[1].max()) >= num_items:
            return f"{key} holds item ids outside 0 .. {num_items - 1}"
    if not torch.equal(edges["reverse edge_index"], edges["edge_index"]):
        return "the reverse edges are not the training edges flipped"
    for m, x in feats.items():
        ok = isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.dim() == 2
        if not ok or x.size(0) != num_items or not bool(torch.isfinite(x).all()):
            return f"feature x_{m} is not a finite float32 ({num_items}, dim) tensor"
    return None


def dataset_root_name(root: str | os.PathLike) -> str | None:
    """The dataset name of a root whose ``raw/`` folder holds exactly one ``*.inter``."""
    names = sorted(p.name[: -len(".inter")] for p in (Path(root) / "raw").glob("*.inter"))
    return names[0] if len(names) == 1 else None


def is_dataset_root(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` looks like an :class:`MMRecDataset` root (``raw/`` and no ``*.inter``)."""
    folder = Path(folder)
    return (folder / "raw").is_dir() and not any(folder.glob("*.inter"))
