"""Atomic writes: the one place that writes files and folders so a crash never leaves half of one.

Every file the library writes that matters (dataset folders, processed caches, checkpoints,
results, figures) goes through these functions. A file is written to a temporary file in the
same folder (``.<name>.<random>.tmp``), flushed to the disk (``fsync``), moved into place with
:func:`os.replace` (atomic on POSIX and Windows), and the folder's entry is flushed too (``fsync``
of the folder), so that after a power cut the file is either the old or the new one, complete.
A folder is written to a temporary sibling folder and renamed into place when complete.

Files get the permissions a plain ``open()`` would give them (``0o666`` less the umask), not
``mkstemp``'s owner-only ``0o600``.

A crash (``SIGKILL``, power cut) can leave a temporary file behind; it is never mistaken for the
real one, and :func:`remove_stale_temporaries` deletes such leftovers (the trainer calls it when
it claims a run folder).

:func:`lock_file` takes an exclusive lock (``flock``) that the kernel releases when the process
ends, however it ends: a crashed process never leaves it stuck.

A disk that is full while writing raises :class:`OSError` (``ENOSPC``) with a message naming the
file and saying that its previous content is unchanged.

This module imports nothing from the rest of the package, so every layer may use it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "text_writer",
    "torch_writer",
    "atomic_write_bytes",
    "atomic_torch_save",
    "atomic_npy_save",
    "atomic_folder",
    "fsync_folder",
    "remove_stale_temporaries",
    "lock_file",
    "is_locked",
    "lock_note",
    "FileLock",
]


def _process_umask() -> int:
    mask = os.umask(0)  # the only way to read it; set back at once
    os.umask(mask)
    return mask


#: The mode ``open(path, "w")`` gives a new file: ``0o666`` less the umask, read once at import
#: (reading it means setting it, which must not race with file creation in other threads).
_FILE_MODE = 0o666 & ~_process_umask()

#: Errors that mean "the disk (or the user's quota) is full".
_FULL = (errno.ENOSPC, errno.EDQUOT)

#: Name of the temporary files :func:`atomic_write` creates (``mkstemp``: 8 random characters).
_TMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


# ------------------------------------------------------------------------------ fault injection
class _Faults:
    """Crash-test hook: with ``at = k > 0`` the process kills itself (``SIGKILL``) at the k-th
    call of :func:`fault_point`. Set from the environment variable ``SEA_PYG_FAULT_AT`` at
    import (tests may also set ``at`` directly). ``count`` counts the calls. Off by default;
    a disabled hook costs one integer comparison."""

    def __init__(self) -> None:
        try:
            self.at = int(os.environ.get("SEA_PYG_FAULT_AT", "0") or 0)
        except ValueError:
            self.at = 0
        self.count = 0


_FAULTS = _Faults()


def fault_point() -> None:
    """A moment where the crash tests may kill the process (see :class:`_Faults`)."""
    if _FAULTS.at > 0:
        _FAULTS.count += 1
        if _FAULTS.count == _FAULTS.at:
            os.kill(os.getpid(), signal.SIGKILL)


class _FaultyFile:
    """A binary file whose every ``write`` is a :func:`fault_point` (crash tests only: it lets
    them kill the process in the middle of writing a checkpoint)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f

    def write(self, data: Any) -> int:
        fault_point()
        n = self._f.write(data)
        self._f.flush()
        return n

    def flush(self) -> None:
        self._f.flush()


# ---------------------------------------------------------------------------------- writing
def fsync_folder(path: str | os.PathLike) -> None:
    """Flush a folder's entries (new, renamed or removed files) to the disk. A no-op where
    folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _disk_full(path: Path, exc: BaseException) -> OSError:
    """The message of a full disk while writing ``path``."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    old = f"the previous {path.name} is unchanged" if path.exists() else f"{path.name} not written"
    err = exc.errno if isinstance(exc, OSError) and exc.errno else errno.ENOSPC
    return OSError(
        err,
        f"no space left on the device while writing {path} ({free} in {path.parent}); {old}. "
        "Free some space and run again",
    )


def atomic_write(
    path: str | os.PathLike, write: Callable[[str], None], sync_folder: bool = True
) -> Path:
    """Calls ``write(tmp)`` on a temporary path next to ``path``, flushes it to the disk and
    renames it to ``path`` (then flushes the folder, unless ``sync_folder=False``: for a
    caller that writes several files and flushes the folder once, see :func:`fsync_folder`).

    If ``write`` raises (or the process is interrupted), ``path`` keeps its previous content (or
    stays absent) and the temporary file is removed (a killed process leaves it, named
    ``.<name>.<random>.tmp``: see :func:`remove_stale_temporaries`). Parent folders are created.
    The file gets the permissions a plain ``open()`` would give it (not ``mkstemp``'s
    owner-only ones).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: ``ENOSPC`` / ``EDQUOT`` (disk or quota full) with a message naming ``path``;
            other errors of ``write`` unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, _FILE_MODE)
        fault_point()
        write(tmp)
        fault_point()
        _fsync_file(tmp)
        fault_point()
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _FULL:
            raise _disk_full(path, exc) from exc
        raise
    fault_point()
    if sync_folder:
        fsync_folder(path.parent)
    return path


def text_writer(text: str) -> Callable[[str], None]:
    """The ``write`` of :func:`atomic_write` that writes ``text`` (UTF-8)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return write


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, text_writer(text))


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Writes ``data`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write)


def torch_writer(obj: Any) -> Callable[[str], None]:
    """The ``write`` of :func:`atomic_write` that writes ``torch.save(obj)``, through a Python
    file: a full disk then raises ``OSError(ENOSPC)``, not torch's "unexpected pos" or
    "iostream error"."""

    def write(tmp: str) -> None:
        import torch

        with open(tmp, "wb") as f:
            torch.save(obj, _FaultyFile(f) if _FAULTS.at > 0 else f)

    return write


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically.

    Raises:
        OSError: the disk is full (``ENOSPC``), naming ``path``; the previous file is unchanged.
    """
    return atomic_write(path, torch_writer(obj))


def atomic_npy_save(array: Any, path: str | os.PathLike) -> Path:
    """``numpy.save(array, allow_pickle=False)`` to ``path`` atomically (no ``.npy`` suffix is
    appended: ``path`` is the file name)."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    return atomic_write(path, write)


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            _fsync_file(os.path.join(root, name))
        fsync_folder(root)


def atomic_folder(
    path: str | os.PathLike,
    write: Callable[[Path], None],
    overwrite: bool = False,
    exist_ok: bool = False,
) -> Path:
    """Calls ``write(tmp_folder)`` on an empty temporary sibling folder of ``path``, flushes its
    files to the disk, then renames it to ``path``.

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
        _fsync_tree(tmp)
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
        fsync_folder(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Deletes the temporary files that interrupted :func:`atomic_write` calls left in
    ``folder`` (``.<name>.<8 random characters>.tmp``; not recursive). Call it only while no
    other process writes to ``folder`` (e.g. holding its :func:`lock_file`).

    Returns:
        The removed paths.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if _TMP_NAME.match(entry.name) and entry.is_file() and not entry.is_symlink():
            try:
                entry.unlink()
                removed.append(entry)
            except FileNotFoundError:
                pass
    if removed:
        fsync_folder(folder)
    return removed


# ---------------------------------------------------------------------------------- locking
class FileLock:
    """An exclusive lock held on an open file (see :func:`lock_file`); :meth:`release` (or
    leaving the ``with`` block, or the process ending in any way) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                _unlock(fd)
            finally:
                os.close(fd)

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


try:  # POSIX
    import fcntl

    def _try_lock(fd: int, shared: bool = False) -> bool:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _try_lock(fd: int, shared: bool = False) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def lock_file(path: str | os.PathLike, note: str = "", tries: int = 20) -> FileLock | None:
    """Takes an exclusive lock on ``path`` (created if needed; it is never deleted), without
    waiting for another holder.

    The lock is ``flock`` on an open file: the kernel releases it when the process ends, also
    after ``SIGKILL``, so a crash never leaves it stuck. ``note`` (e.g. the process id) is
    written into the file for the messages of those who find it locked (:func:`lock_note`).
    A brief hold by a reader (:func:`is_locked`) is waited out (``tries`` attempts over about
    ``tries * 10`` ms).

    Returns:
        The :class:`FileLock`, or ``None`` if another process holds it.
    """
    import time

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
    for attempt in range(max(1, tries)):
        if _try_lock(fd):
            break
        if attempt + 1 < tries:
            time.sleep(0.01)
    else:
        os.close(fd)
        return None
    if note:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, note.encode("utf-8"))
    return FileLock(path, fd)


def is_locked(path: str | os.PathLike) -> bool:
    """Whether some process holds :func:`lock_file` on ``path`` (``False`` if it does not
    exist). Takes a shared lock for an instant to find out."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        if _try_lock(fd, shared=True):
            _unlock(fd)
            return False
        return True
    finally:
        os.close(fd)


def lock_note(path: str | os.PathLike) -> str:
    """The note the lock's holder wrote into ``path`` (empty if none)."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
