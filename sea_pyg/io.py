"""Atomic writes: the one place that writes files and folders so a crash never leaves half of one.

Every file the library writes that matters (dataset folders, processed caches, checkpoints,
results, figures) goes through these functions. A file is written to a temporary file in the
same folder and moved into place with :func:`os.replace` (atomic on POSIX and Windows); a folder
is written to a temporary sibling folder and renamed into place when complete.

This module imports nothing from the rest of the package, so every layer may use it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_torch_save",
    "atomic_npy_save",
    "atomic_folder",
]


def _process_umask() -> int:
    mask = os.umask(0)  # the only way to read it; set back at once
    os.umask(mask)
    return mask


#: The mode ``open(path, "w")`` gives a new file: ``0o666`` less the umask, read once at import
#: (reading it means setting it, which must not race with file creation in other threads).
_FILE_MODE = 0o666 & ~_process_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Calls ``write(tmp)`` on a temporary path next to ``path``, then renames it to ``path``.

    If ``write`` raises (or the process is interrupted), ``path`` keeps its previous content (or
    stays absent) and the temporary file is removed. Parent folders are created. The file gets
    the permissions a plain ``open()`` would give it (not ``mkstemp``'s owner-only ones).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, _FILE_MODE)
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Writes ``data`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_npy_save(array: Any, path: str | os.PathLike) -> Path:
    """``numpy.save(array, allow_pickle=False)`` to ``path`` atomically (no ``.npy`` suffix is
    appended: ``path`` is the file name)."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    return atomic_write(path, write)


def atomic_folder(
    path: str | os.PathLike,
    write: Callable[[Path], None],
    overwrite: bool = False,
    exist_ok: bool = False,
) -> Path:
    """Calls ``write(tmp_folder)`` on an empty temporary sibling folder of ``path``, then renames
    it to ``path``.

    Args:
        path: The folder to create.
        write: Fills the temporary folder.
        overwrite: Replace an existing ``path`` (the old folder is removed only after the new
            one is in place).
        exist_ok: If ``path`` appears while ``write`` runs (another process finished first),
            keep that one and discard ours instead of failing.

    Raises:
        FileExistsError: ``path`` exists and neither ``overwrite`` nor ``exist_ok`` is set.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not (overwrite or exist_ok):
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite)")
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp"))
    old = None
    try:
        write(tmp)
        if path.exists():
            if exist_ok and not overwrite:
                return path
            if not overwrite:
                raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite)")
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old"))
            os.rmdir(old)
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if exist_ok and path.exists():  # another process finished first
                return path
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return path
