"""The run folder: one training run's files, claimed by one process, switched in one step.

A run folder (``TrainConfig.output_dir``, ``--out`` on the command line) holds::

    results.json   the run's summary: status, epochs, best epoch, metrics, history
    best.pt        the model at the best validation epoch (a saved model, see load_model)
    per_user.csv   each evaluated user's metrics at that epoch (see sea_pyg.train.per_user)
    last.pt        everything needed to resume (weights, optimizer, RNG states, history)
    .lock          held (flock) by the process that trains into the folder
    config.yaml    ... and any other files the caller passed as ``run_files``

**Which file is the truth.** ``results.json``, ``best.pt`` (with ``per_user.csv``) and ``last.pt``
always describe one and the same moment of the run (the end of the epoch in ``last.pt``): they are
switched together by a *commit*. A commit writes each new file next to the old one as
``.<name>.next`` (complete and flushed to the disk), then writes the commit record ``.commit.json``
naming them (one atomic rename: **this is the moment the new state becomes the truth**), then
renames the ``.next`` files over the old ones and deletes the record. A crash before the record
leaves the old state (the ``.next`` files are deleted at the next start); a crash after it leaves a
record whose ``.next`` files are the truth: readers (:func:`resolve`, used by ``load_model``,
``recommend`` and resume) read them instead of the old files, and the next process that claims the
folder finishes the renames. So: *the truth is the committed set; when ``.commit.json`` exists, the
``.next`` files it names replace the plain ones.*

**Status.** ``results.json`` says ``"status"``: ``"running"`` (written by a live process),
``"interrupted"`` (the process stopped by an exception, or was killed: :func:`run_status` reports
``"interrupted"`` for a ``"running"`` file whose lock no process holds) or ``"finished"``.

**One writer.** :meth:`RunFolder.claim` takes ``.lock`` with ``flock``: a second process that
tries to train into the folder is refused; the kernel drops the lock when the holder dies, so a
crashed (even ``SIGKILL``-ed) run never leaves the folder stuck. A folder that holds a run is
refused to a new run unless it resumes (``resume=True``, ``--resume``) or replaces it
(``overwrite=True``, ``--overwrite``).
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sea_pyg.io import (
    atomic_write,
    atomic_write_text,
    fault_point,
    fsync_folder,
    is_locked,
    lock_file,
    lock_note,
    remove_stale_temporaries,
)

__all__ = [
    "RESULTS",
    "BEST",
    "PER_USER",
    "LAST",
    "RUN_FILES",
    "RunFolderError",
    "RunFolder",
    "check_output_dir",
    "resolve",
    "read_results",
    "run_status",
    "jsonable",
]

RESULTS, BEST, LAST = "results.json", "best.pt", "last.pt"
#: Per-user metrics at the best validation epoch (committed with ``best.pt``).
PER_USER = "per_user.csv"
#: The files a commit switches (those that make a folder "hold a run").
RUN_FILES = (RESULTS, BEST, LAST, PER_USER)
LOCK = ".lock"
COMMIT = ".commit.json"


def jsonable(obj: Any) -> Any:
    """``obj`` with every value JSON can hold (tuples become lists, non-finite floats ``None``,
    one-element tensors numbers, anything else its ``str``)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "numel") and obj.numel() == 1:
        return obj.item()
    return str(obj)


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (it holds a run, another process writes to it,
    it is not a writable folder, a resume that does not match, ...)."""


def _staged(folder: Path, name: str) -> Path:
    return folder / f".{name}.next"


def _commit_names(folder: Path) -> list[str] | None:
    """The files named by the commit record, or ``None`` without one."""
    try:
        text = (folder / COMMIT).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        names = json.loads(text)["files"]
    except (ValueError, KeyError, TypeError):
        raise RunFolderError(
            f"{folder / COMMIT} is damaged (not the commit record sea_pyg writes); the run "
            "folder was modified by hand: delete the record and the .next files, or use "
            "another output folder"
        ) from None
    return [str(n) for n in names]


def resolve(folder: str | os.PathLike, name: str) -> Path:
    """The path that holds the committed content of the run file ``name`` (``best.pt``,
    ``last.pt`` or ``results.json``) in ``folder``: its ``.next`` file while a commit record
    names it (a commit interrupted before its renames), else the plain file."""
    folder = Path(folder)
    staged = _staged(folder, name)
    if staged.exists():
        names = _commit_names(folder)
        if names is not None and name in names:
            return staged
    return folder / name


def read_committed(folder: str | os.PathLike, name: str, read: Callable[[Path], Any]) -> Any:
    """``read(path)`` on :func:`resolve`'s path, again if a writer renamed it meanwhile."""
    for attempt in range(5):
        path = resolve(folder, name)
        try:
            return read(path)
        except FileNotFoundError:
            if attempt == 4 or path.name == name:
                raise
            time.sleep(0.01)
    raise AssertionError("unreachable")


def read_results(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The committed ``results.json`` of ``folder`` (``None`` if there is none)."""
    try:
        text = read_committed(folder, RESULTS, lambda p: p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    try:
        results = json.loads(text)
    except ValueError:
        raise RunFolderError(f"{Path(folder) / RESULTS} is not valid JSON") from None
    return results if isinstance(results, dict) else None


def run_status(folder: str | os.PathLike) -> dict[str, Any] | None:
    """Where the run in ``folder`` stands, from its committed ``results.json``.

    Returns:
        ``None`` without ``results.json``; else ``{"status", "epochs_run", "best_epoch",
        "stop_reason"}`` where ``status`` is ``"finished"``, ``"running"`` (a process holds the
        folder's lock) or ``"interrupted"`` (it stopped by an exception, or was killed: its
        file still says ``"running"`` but no process holds the lock). Files of sea_pyg
        versions without ``status`` count as finished when they hold ``wall_seconds``.
    """
    folder = Path(folder)
    results = read_results(folder)
    if results is None:
        return None
    status = results.get("status")
    if status is None:
        status = "finished" if "wall_seconds" in results else "running"
    if status == "running" and not is_locked(folder / LOCK):
        status = "interrupted"
    return {
        "status": status,
        "epochs_run": results.get("epochs_run"),
        "best_epoch": results.get("best_epoch"),
        "stop_reason": results.get("stop_reason"),
    }


def _held_files(folder: Path) -> list[str]:
    present = [n for n in RUN_FILES if (folder / n).exists()]
    names = _commit_names(folder) if (folder / COMMIT).exists() else None
    for n in names or ():
        if n not in present and _staged(folder, n).exists():
            present.append(n)
    return present


def _describe_run(folder: Path) -> str:
    """``"model lightgcn, 12 epochs, finished"`` for the messages (best effort)."""
    try:
        results = read_results(folder) or {}
        status = run_status(folder) or {}
    except (RunFolderError, OSError):
        return ""
    parts = []
    model = results.get("model", {})
    if isinstance(model, dict) and model.get("name"):
        parts.append(f"model {model['name']}")
    if results.get("epochs_run") is not None:
        parts.append(f"{results['epochs_run']} epoch(s)")
    if status.get("status"):
        parts.append(str(status["status"]))
    return f" ({', '.join(parts)})" if parts else ""


def _busy(path: Path) -> RunFolderError:
    holder = lock_note(path / LOCK)
    return RunFolderError(
        f"{path} is in use by another training run{f' ({holder})' if holder else ''}: two "
        "runs must not write to one folder. Wait for it to finish, or choose another output "
        "folder (output_dir, --out)"
    )


def _check_held(path: Path, resume: bool, overwrite: bool) -> list[str]:
    held = _held_files(path) if path.is_dir() else []
    if held and not (resume or overwrite):
        raise RunFolderError(
            f"{path} already holds a training run{_describe_run(path)}: {', '.join(held)}. "
            "To continue it pass resume=True (--resume); to keep it, choose another output "
            "folder (output_dir, --out); to replace it, pass overwrite=True (--overwrite)"
        )
    return held


def check_output_dir(
    path: str | os.PathLike, resume: bool = False, overwrite: bool = False
) -> list[str]:
    """Checks, without changing anything, that a new run (or a resume) may write to ``path``:
    it is (or can become) a writable folder, and it holds no run unless ``resume`` or
    ``overwrite`` is set. Cheap: call it before loading data. :meth:`RunFolder.claim` repeats
    the checks under the folder's lock.

    Returns:
        The run files already in the folder.

    Raises:
        RunFolderError: naming the folder and how to proceed.
    """
    path = Path(path)
    _check_writable(path)
    if path.is_dir() and is_locked(path / LOCK):
        raise _busy(path)
    return _check_held(path, resume, overwrite)


def _check_writable(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise RunFolderError(
            f"output folder {path} is a file: choose a folder for output_dir (--out)"
        )
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise RunFolderError(
            f"output folder {path} cannot be created: {existing} is a file; choose another "
            "output_dir (--out)"
        )
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise RunFolderError(
            f"output folder {path} is not writable ({existing}: permission denied); choose "
            "another output_dir (--out)"
        )


class RunFolder:
    """One run folder, claimed by this process (see the module's documentation).

    Args:
        path: The folder (created by :meth:`claim`).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = None

    # ------------------------------------------------------------------------------- claiming
    def claim(self, resume: bool = False, overwrite: bool = False,
              extra_files: Iterable[str] = ()) -> None:
        """Locks the folder, completes or discards an interrupted commit, deletes the
        temporary files of interrupted writes, and checks that this run may use the folder.
        With ``overwrite``, deletes the previous run's files (and ``extra_files``).

        Raises:
            RunFolderError: another process holds the folder, or it holds a run and neither
                ``resume`` nor ``overwrite`` is set, or it is not a writable folder.
        """
        _check_writable(self.path)  # file / permission errors, before mkdir
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunFolderError(
                f"cannot create output folder {self.path} ({exc.strerror}); choose another "
                "output_dir (--out)"
            ) from None
        note = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%c')}"
        self._lock = lock_file(self.path / LOCK, note)
        if self._lock is None:
            raise _busy(self.path)
        try:
            self.recover()
            _check_held(self.path, resume=resume, overwrite=overwrite)
            if overwrite:
                for name in (*RUN_FILES, *extra_files):
                    (self.path / name).unlink(missing_ok=True)
                fsync_folder(self.path)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Frees the folder's lock."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def claimed(self) -> bool:
        return self._lock is not None

    def recover(self) -> None:
        """Finishes a commit whose record exists, deletes ``.next`` files of one that never
        got its record, and deletes temporary files of interrupted writes."""
        names = _commit_names(self.path)
        if names is not None:
            self._finish(names)
        for name in RUN_FILES:
            _staged(self.path, name).unlink(missing_ok=True)
        remove_stale_temporaries(self.path)

    # -------------------------------------------------------------------------------- writing
    def commit(self, files: dict[str, Callable[[str], None]]) -> None:
        """Replaces the run files ``files`` (``name -> write(tmp_path)``) in one step (see
        the module's documentation). On an exception before the switch nothing changes."""
        if len(files) == 1:
            (name, write), = files.items()
            atomic_write(self.path / name, write)
            return
        try:
            for name, write in files.items():
                atomic_write(_staged(self.path, name), write, sync_folder=False)
            fsync_folder(self.path)  # the staged files are on the disk before the record
            fault_point()
            atomic_write_text(json.dumps({"files": list(files)}), self.path / COMMIT)
        except BaseException as exc:
            if not (self.path / COMMIT).exists():
                for name in files:
                    _staged(self.path, name).unlink(missing_ok=True)
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    try:
                        free = f"{shutil.disk_usage(self.path).free / 2**20:.0f} MiB free"
                    except OSError:
                        free = "free space unknown"
                    raise OSError(
                        exc.errno,
                        f"no space left on the device while saving the run in {self.path} "
                        f"({', '.join(files)}; {free}): its previous files are unchanged. "
                        "Free some space and continue with resume=True (--resume)",
                    ) from exc
            raise
        self._finish(list(files))

    def _finish(self, names: list[str]) -> None:
        for name in names:
            fault_point()
            staged = _staged(self.path, name)
            if staged.exists():
                os.replace(staged, self.path / name)
        fsync_folder(self.path)  # the renames are on the disk before the record goes
        fault_point()
        (self.path / COMMIT).unlink(missing_ok=True)  # if lost in a power cut: redone, harmless

    def write_text(self, name: str, text: str) -> None:
        """Writes one extra file (e.g. ``config.yaml``) atomically."""
        atomic_write_text(text, self.path / name)

    def mark_interrupted(self) -> None:
        """After an exception: completes or discards a half-done commit, and sets a
        ``"running"`` ``results.json`` to ``"interrupted"`` (best effort: a second failure,
        such as a full disk, is ignored)."""
        try:
            self.recover()
            results = read_results(self.path)
            if results is not None and results.get("status") == "running":
                results["status"] = "interrupted"
                atomic_write_text(json.dumps(results, indent=2), self.path / RESULTS)
        except (OSError, RunFolderError):
            pass
