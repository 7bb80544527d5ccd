"""The built-in synthetic datasets, materialised as MMRec folders and read back by the reader.

Going through :func:`~sea_pyg.data.read_mmrec` means the built-in data is validated exactly like
a user's own folder. Folders are cached under ``$SEA_PYG_HOME/synthetic`` (default
``~/.cache/sea_pyg/synthetic``), keyed by preset, seed and generator version, and written into a
temporary folder that is renamed into place only when complete.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch_geometric.data import HeteroData

from sea_pyg.data.mmrec import read_mmrec
from sea_pyg.io import atomic_folder

__all__ = ["SYNTHETIC_VERSION", "cache_home", "synthetic_folder", "load_synthetic"]

#: Bump when the generator's output changes, so no stale cached folder is ever reused.
SYNTHETIC_VERSION = 1


def cache_home() -> Path:
    """``$SEA_PYG_HOME`` or ``~/.cache/sea_pyg``."""
    return Path(os.environ.get("SEA_PYG_HOME", Path.home() / ".cache" / "sea_pyg"))


def synthetic_folder(preset: str, seed: int = 0, root: str | os.PathLike | None = None) -> Path:
    """Path of the MMRec folder of a synthetic preset; generated on first use."""
    from sea_pyg.data.synthetic import make_synthetic

    base = Path(root) if root is not None else cache_home() / "synthetic"
    folder = base / f"{preset}-seed{seed}-v{SYNTHETIC_VERSION}"
    if (folder / f"{preset}.inter").is_file():
        return folder

    def write(tmp: Path) -> None:
        make_synthetic(preset, seed=seed).to_mmrec(tmp, name=preset)

    atomic_folder(folder, write, exist_ok=True)  # another process finished first: keep its one
    if not (folder / f"{preset}.inter").is_file():
        raise FileExistsError(f"{folder} exists but holds no {preset}.inter; remove it")
    return folder


def load_synthetic(
    preset: str = "small", seed: int = 0, root: str | os.PathLike | None = None
) -> HeteroData:
    """Generate (or reuse) a synthetic preset's MMRec folder and read it with ``read_mmrec``."""
    return read_mmrec(synthetic_folder(preset, seed, root), name=preset)
