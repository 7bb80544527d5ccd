"""Checks of the command line that run before any data is loaded: numbers, devices, output
folders, model names. Each failure is a :class:`~sea_pyg.cli.errors.UserError` (or, for a flag's
value, argparse's own error) that names the flag and says how to fix it."""

from __future__ import annotations

import argparse
import difflib
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from sea_pyg.cli.errors import UserError, first_line

__all__ = [
    "integer",
    "number",
    "close_names",
    "check_model_name",
    "check_device",
    "check_knn_backend",
    "check_output_folder",
]


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[minimum, maximum]`` (bounds optional)."""

    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in "invalid integer value"
    return parse


def number(minimum: float = 0.0, inclusive: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite float ``> minimum`` (``>=`` with ``inclusive``)."""

    def parse(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if value < minimum or (value == minimum and not inclusive):
            sign = ">=" if inclusive else ">"
            raise argparse.ArgumentTypeError(f"must be {sign} {minimum:g}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def close_names(name: str, names: Iterable[str]) -> str:
    """`` (did you mean 'a' or 'b'?)`` for the names close to ``name``, else ``""``."""
    names = list(names)
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
    # a prefix or part counts too: "lgcn" -> none, "light" -> lightgcn
    close += [n for n in lowered if name.lower() in n and n not in close][: 3 - len(close)]
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(lowered[c]) for c in close) + "?)"


def check_model_name(name: str, flag: str = "--model") -> str:
    """The registry name of ``name`` (case-insensitive).

    Raises:
        UserError: ``name`` is not registered; the message suggests close names.
    """
    from sea_pyg.models import MODELS

    key = name.lower()
    if key in MODELS:
        return key
    where = f"{flag}: " if flag else ""
    raise UserError(
        f"{where}unknown model {name!r}{close_names(name, MODELS)}; `sea-pyg models` lists "
        "them all (a model of your own: register it in a module and pass --import MODULE)"
    )


def check_device(device: str, flag: str = "--device") -> str:
    """``device`` if this torch build and machine can allocate on it.

    Raises:
        UserError: malformed (``gpu``), a backend this torch build lacks (CUDA in a CPU-only
            build, MPS off macOS), no such device on this machine, or an index past the last
            device; the message says which and what to pass instead.
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(
            f"{flag} {device!r}: not a torch device; use cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cpu":
        return device
    if dev.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise UserError(
                f"{flag} {device}: this torch build has no CUDA support (torch "
                f"{torch.__version__}); use --device cpu, or install a CUDA build of torch"
            )
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(
                f"{flag} {device}: no CUDA device is visible on this machine (driver missing, "
                "or CUDA_VISIBLE_DEVICES hides them); use --device cpu"
            )
        if dev.index is not None and dev.index >= count:
            raise UserError(
                f"{flag} {device}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
        return device
    if dev.type == "mps":
        if not torch.backends.mps.is_built():
            raise UserError(
                f"{flag} {device}: this torch build has no MPS support (MPS is Apple "
                "silicon's GPU, macOS only); use --device cpu"
            )
        if not torch.backends.mps.is_available():
            raise UserError(
                f"{flag} {device}: MPS is not available on this machine (macOS 12.3+ on "
                "Apple silicon needed); use --device cpu"
            )
        return device
    try:  # other backends: try an allocation
        torch.empty(0, device=dev)
    except Exception as exc:
        raise UserError(
            f"{flag} {device}: cannot allocate on it ({first_line(exc)}); use --device cpu"
        ) from None
    return device


def check_output_folder(path: str | os.PathLike, what: str | None = None) -> Path:
    """``path`` as a folder this process can create (or write into).

    The nearest existing folder on the way gets a probe file that is removed at once, so a
    read-only disk, missing permissions or a quota show up now rather than after the first
    epoch. Nothing is created at ``path`` itself.

    Args:
        path: The folder.
        what: How the message names it (default ``--out PATH``).

    Raises:
        UserError: ``path`` or a folder above it is a file, or it cannot be written.
    """
    path = Path(path)
    what = what or f"--out {path}"
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} is a file, not a folder; pass a folder to write into")
    existing = path
    while not existing.exists():
        if existing.is_symlink():
            raise UserError(f"{what}: {existing} is a broken symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(
            f"{what}: {existing} is a file, so no folder can be created under it"
        )
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".sea-pyg-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or first_line(exc)
        raise UserError(
            f"{what}: cannot write there: creating a file in {existing} failed ({reason}); "
            "choose another folder"
        ) from None
    return path


def check_knn_backend(backend: str | None) -> None:
    """``--knn-backend mips`` / ``approx`` needs faiss: refused without it, naming the install
    command (``auto`` and ``exact`` need nothing).

    Raises:
        UserError: faiss cannot be imported.
    """
    if backend not in ("mips", "approx"):
        return
    from sea_pyg.nn.mips import INSTALL, faiss_available

    if not faiss_available():
        raise UserError(
            f"--knn-backend {backend}: searches through PyG's faiss indexes and needs the "
            f"'faiss' package: {INSTALL}; or use --knn-backend exact (the dense search, the "
            "default below 500,000 items)"
        )
