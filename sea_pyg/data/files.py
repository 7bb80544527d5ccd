"""Opening the files of a dataset folder without surprises.

Every file the readers open goes through :func:`check_data_file` first, which says what a path
is when it is not a regular file (a directory, a symbolic link loop, a dangling link, a FIFO or
device that would block or never end) and refuses a file larger than the size limit *before*
it is read whole. Feature matrices are read by :func:`read_npy`: the ``.npy`` header is parsed
and checked (no pickle, a numeric dtype, the declared size against the file size, so a
truncated file says "truncated") before any data is read.

The size limit, :data:`DEFAULT_MAX_FILE_BYTES` (16 GiB per file), can be changed per call
(``max_file_bytes=``) or for a whole process with the environment variable
``SEA_PYG_MAX_FILE_BYTES`` (bytes). The largest MMRec file, Elec's ``image_feat.npy``
(float64, 4096-d), is about 2 GB.

Everything here raises :class:`DatasetFormatError`, whose message names the file, or warns
with :class:`DatasetWarning`.
"""

from __future__ import annotations

import errno
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = [
    "DatasetFormatError",
    "DatasetWarning",
    "DEFAULT_MAX_FILE_BYTES",
    "MAX_FILE_BYTES_ENV",
    "max_file_bytes",
    "check_data_file",
    "read_npy",
]

#: Largest dataset file read whole, unless changed (see the module docstring).
DEFAULT_MAX_FILE_BYTES = 16 * 2**30
#: Environment variable overriding :data:`DEFAULT_MAX_FILE_BYTES` (a number of bytes).
MAX_FILE_BYTES_ENV = "SEA_PYG_MAX_FILE_BYTES"

_NPY_MAGIC = b"\x93NUMPY"


class DatasetFormatError(ValueError):
    """Raised when a dataset folder or file does not follow the MMRec format.

    The message always names the offending file (and column or field) and says how to fix it.
    """


class DatasetWarning(UserWarning):
    """A dataset that loads but holds something suspicious (duplicate rows, a pair in two
    splits, an unreadable id map). The message names the file and says what was done.
    Turn these into errors with ``warnings.simplefilter("error", DatasetWarning)``."""


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def max_file_bytes(limit: int | None = None) -> int:
    """The size limit in bytes: ``limit`` if given, else ``$SEA_PYG_MAX_FILE_BYTES``, else
    :data:`DEFAULT_MAX_FILE_BYTES`."""
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise ValueError(f"`max_file_bytes` must be a positive number of bytes, got {limit!r}")
        return limit
    env = os.environ.get(MAX_FILE_BYTES_ENV)
    if env is None or not env.strip():
        return DEFAULT_MAX_FILE_BYTES
    try:
        value = int(env.strip())
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(
            f"environment variable {MAX_FILE_BYTES_ENV} must be a positive number of bytes, "
            f"got {env!r}"
        )
    return value


_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe), which could block or never end"),
    (stat.S_ISCHR, "a character device, which could never end"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_data_file(
    path: str | os.PathLike,
    what: str,
    *,
    limit: int | None = None,
    missing: str | None = None,
) -> os.stat_result:
    """Check that ``path`` is a regular file of at most ``limit`` bytes; return its stat.

    Args:
        path: The file (symbolic links are followed).
        what: What the file is, for the messages ("interaction file", "feature file").
        limit: Size limit in bytes (default: :func:`max_file_bytes`).
        missing: Message when nothing exists at ``path`` (default: "missing file PATH").

    Raises:
        DatasetFormatError: naming the path and saying what it is instead: missing, a
            dangling symbolic link, a symbolic link loop, a directory, a FIFO / device /
            socket, unreadable, or larger than the limit.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise DatasetFormatError(
                f"{path}: is a symbolic link to {os.readlink(path)!r}, which does not exist; "
                f"point it at the {what} or replace it by the file"
            ) from None
        raise DatasetFormatError(missing or f"missing file {path} (the {what})") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DatasetFormatError(
                f"{path}: is a symbolic link loop (following its links never reaches a file); "
                f"replace it by the {what} itself"
            ) from None
        raise DatasetFormatError(
            f"{path}: cannot be accessed ({exc.strerror or exc}); the {what} must be a "
            f"readable file"
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise DatasetFormatError(
            f"{path}: is a directory, not a file; the {what} must be a regular file of that "
            f"name (move the directory away)"
        )
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
        raise DatasetFormatError(
            f"{path}: is {kind}, not a regular file; the {what} must be a regular file"
        )
    limit = max_file_bytes(limit)
    if st.st_size > limit:
        raise DatasetFormatError(
            f"{path}: the {what} is {_size(st.st_size)}, more than the limit of {_size(limit)} "
            f"per dataset file (checked before reading it whole). If the file is genuine, "
            f"raise the limit: max_file_bytes=... (read_mmrec / MMRecDataset) or the "
            f"environment variable {MAX_FILE_BYTES_ENV}"
        )
    return st


def _npy_header(f, path: Path, size: int) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Parse the header of the open ``.npy`` file ``f`` (never unpickles)."""
    if size == 0:
        raise DatasetFormatError(f"{path}: is empty (0 bytes); expected a .npy array file")
    head = f.read(len(_NPY_MAGIC) + 2)
    if not head.startswith(_NPY_MAGIC[: len(head)]):
        raise DatasetFormatError(
            f"{path}: not a .npy file (it does not start with numpy's magic string "
            f"\\x93NUMPY); save the features with numpy.save"
        )
    if len(head) < len(_NPY_MAGIC) + 2:
        raise DatasetFormatError(
            f"{path}: truncated: {size} bytes, shorter than a .npy header; copy the file again"
        )
    version = (head[-2], head[-1])
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    if version not in readers:
        raise DatasetFormatError(
            f"{path}: unsupported .npy format version {version[0]}.{version[1]} (numeric "
            f"arrays are saved as version 1.0 or 2.0); save the features with numpy.save"
        )
    try:
        shape, fortran, dtype = readers[version](f)
    except Exception as exc:  # noqa: BLE001 - numpy's header parser raises many kinds
        if isinstance(exc, ValueError) and "EOF" in str(exc):
            raise DatasetFormatError(
                f"{path}: truncated: the file ends inside its .npy header; copy the file again"
            ) from None
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DatasetFormatError(f"{path}: corrupt .npy header ({reason})") from None
    if any(d < 0 for d in shape):
        raise DatasetFormatError(f"{path}: corrupt .npy header (negative shape {shape})")
    return shape, fortran, dtype


def read_npy(
    path: str | os.PathLike,
    what: str = "array file",
    *,
    limit: int | None = None,
    check: Callable[[tuple[int, ...], np.dtype], None] | None = None,
) -> np.ndarray:
    """Read a ``.npy`` file without pickle, checking its header before reading the data.

    Args:
        path: The file.
        what: What it is, for the messages.
        limit: Size limit in bytes (default: :func:`max_file_bytes`).
        check: Called as ``check(shape, dtype)`` with the header's values before any data is
            read; raise :class:`DatasetFormatError` to refuse the array.

    Raises:
        DatasetFormatError: for what :func:`check_data_file` refuses, an empty file, a file
            that is not ``.npy``, a corrupt header, an array that needs pickle (object dtype),
            a file shorter than its header declares ("truncated") or longer, or a read error.
    """
    path = Path(path)
    st = check_data_file(path, what, limit=limit)
    try:
        with open(path, "rb") as f:
            shape, fortran, dtype = _npy_header(f, path, st.st_size)
            if dtype.hasobject:
                raise DatasetFormatError(
                    f"{path}: cannot be read without pickle (its dtype {dtype} holds Python "
                    f"objects, which loading would unpickle); save the features as a plain "
                    f"numeric array, e.g. np.save(path, np.asarray(feats, dtype=np.float32))"
                )
            if check is not None:
                check(shape, dtype)
            count = math.prod(shape)
            expected = f.tell() + count * dtype.itemsize
            if st.st_size < expected:
                raise DatasetFormatError(
                    f"{path}: truncated: its header declares a {shape} {dtype} array "
                    f"({_size(expected)} with the header) but the file has only "
                    f"{_size(st.st_size)}; the file was cut short (interrupted copy or "
                    f"download?), copy it again"
                )
            if st.st_size > expected:
                raise DatasetFormatError(
                    f"{path}: has {st.st_size - expected:,} bytes after the {shape} {dtype} "
                    f"array its header declares; not a file written by numpy.save (corrupt?)"
                )
            data = np.fromfile(f, dtype=dtype, count=count)
    except OSError as exc:
        raise DatasetFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if data.size != count:  # the file shrank while being read
        raise DatasetFormatError(f"{path}: truncated while being read; copy the file again")
    if fortran:
        return data.reshape(shape[::-1]).transpose()
    return data.reshape(shape)
