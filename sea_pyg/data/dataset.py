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
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from torch_geometric.data import HeteroData, InMemoryDataset

from sea_pyg.data.mmrec import FEATURE_SUFFIX, ID_MAP_FILES, DatasetFormatError, read_mmrec
from sea_pyg.io import atomic_torch_save

__all__ = ["MMRecDataset", "KNOWN_DATASETS", "PROCESSED_VERSION", "MMREC_URL"]

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
    ) -> None:
        if not name or "/" in name or os.sep in name:
            raise ValueError(f"MMRecDataset: `name` must be a plain file stem, got {name!r}")
        self.name = name
        if modalities is None and name.lower() in KNOWN_DATASETS:
            modalities = KNOWN_DATASETS[name.lower()]
        self.modalities = None if modalities is None else list(modalities)
        self.filter_cold_start_users = filter_cold_start_users
        self.content_hash = content_hash
        self._key: str | None = None
        super().__init__(
            str(root), transform, pre_transform, None, log=log, force_reload=force_reload
        )
        self.load(self.processed_paths[0], data_cls=HeteroData)

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
        )
        if self.pre_transform is not None:
            data = self.pre_transform(data)
        data, slices = self.collate([data])
        target = Path(self.processed_paths[0])
        atomic_torch_save((data.to_dict(), slices, data.__class__), target)
        for old in target.parent.glob(f"{self.name}_*.pt"):
            if old != target and len(old.stem) == len(target.stem):
                old.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"MMRecDataset({self.name!r}, root={self.root!r})"


def dataset_root_name(root: str | os.PathLike) -> str | None:
    """The dataset name of a root whose ``raw/`` folder holds exactly one ``*.inter``."""
    names = sorted(p.name[: -len(".inter")] for p in (Path(root) / "raw").glob("*.inter"))
    return names[0] if len(names) == 1 else None


def is_dataset_root(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` looks like an :class:`MMRecDataset` root (``raw/`` and no ``*.inter``)."""
    folder = Path(folder)
    return (folder / "raw").is_dir() and not any(folder.glob("*.inter"))
