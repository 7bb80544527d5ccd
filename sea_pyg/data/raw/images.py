"""Image features: McAuley's binary image records, and user image encoders named
``module:function``.

An image encoder named ``module:function`` is **user code that is imported and run**: importing
the module runs its top-level code, and the function is then called on the item ASINs and
metadata. :func:`load_image_encoder` refuses what cannot be an image encoder before calling it
(and, for standard-library modules, before importing them): a module of the Python standard
library (``os:system``, ``subprocess:run``, ``builtins:eval``, ...), a class, a built-in
function, and any callable whose signature does not accept the documented two positional
arguments ``fn(asins, metadata)``. This catches mistakes, not malice: only name modules you
trust.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from sea_pyg.data.mmrec import DatasetFormatError
from sea_pyg.data.raw._files import _check_file, _is_gzip, _open_binary

__all__ = ["IMAGE_DIM", "ASIN_BYTES", "read_image_features", "load_callable", "load_image_encoder"]

#: Length of one image vector in McAuley's ``image_features_<Category>.b`` files.
IMAGE_DIM = 4096
#: Length of the ASCII ASIN that starts every image record.
ASIN_BYTES = 10


def read_image_features(
    path: str | os.PathLike,
    asins: Sequence[str],
    dim: int = IMAGE_DIM,
    progress: bool = False,
    chunk_records: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Read the rows of ``asins`` from McAuley's binary image-feature file.

    The file is a sequence of records: a 10-byte ASCII ASIN followed by ``dim`` little-endian
    float32 values (``dim`` = 4096 for the Amazon files). Plain or gzip. It is streamed, never
    loaded whole.

    Args:
        path: ``image_features_<Category>.b``.
        asins: Row ``i`` of the output describes ``asins[i]``.
        dim: Values per record.
        progress: Show a progress bar.
        chunk_records: Records read at once.

    Returns:
        ``(features, found)``: float32 ``(len(asins), dim)`` (zero rows where not found) and a
        bool mask of the rows found in the file (the first record of a repeated ASIN wins).

    Raises:
        DatasetFormatError: if the file size is not a multiple of the record size, a record's
            ASIN is not ASCII (a sign of the wrong ``dim``), or a needed record holds NaN/inf.
    """
    path = _check_file(path, "image feature")
    record = ASIN_BYTES + 4 * dim
    dtype = np.dtype([("asin", f"S{ASIN_BYTES}"), ("x", "<f4", (dim,))])
    row_of = {a.encode("ascii", "replace"): i for i, a in enumerate(asins)}
    feats = np.zeros((len(asins), dim), dtype=np.float32)
    found = np.zeros(len(asins), dtype=bool)
    gz = _is_gzip(path)
    size = path.stat().st_size
    if not gz and size % record:
        raise DatasetFormatError(
            f"{path}: wrong binary record size: {size} bytes is not a multiple of {record} "
            f"(a record is a {ASIN_BYTES}-byte ASIN + {dim} float32 values); wrong file or "
            f"wrong image dimension?"
        )
    total = None if gz else size // record
    bar = tqdm(
        total=total,
        desc=f"reading {path.name}",
        unit=" records",
        disable=not progress,
        file=sys.stderr,
    )
    done = 0
    try:
        with _open_binary(path) as f:
            while True:
                buf = f.read(record * chunk_records)
                if not buf:
                    break
                if len(buf) % record:
                    raise DatasetFormatError(
                        f"{path}: wrong binary record size: the file ends with a partial record "
                        f"({len(buf) % record} of {record} bytes; a record is a {ASIN_BYTES}-byte "
                        f"ASIN + {dim} float32 values); truncated file or wrong image dimension?"
                    )
                arr = np.frombuffer(buf, dtype=dtype)
                for j, raw_asin in enumerate(arr["asin"]):
                    key = raw_asin.strip()
                    if not key.isascii() or not key.decode("ascii").isprintable():
                        raise DatasetFormatError(
                            f"{path}: record {done + j} does not start with a {ASIN_BYTES}-byte "
                            f"ASCII ASIN (got {bytes(raw_asin)!r}); wrong file or wrong image "
                            f"dimension (expected {dim} float32 per record)?"
                        )
                    row = row_of.get(key)
                    if row is None or found[row]:
                        continue
                    vec = arr["x"][j]
                    if not np.isfinite(vec).all():
                        raise DatasetFormatError(
                            f"{path}: record {done + j} (ASIN {key.decode()}) holds NaN or inf"
                        )
                    feats[row] = vec
                    found[row] = True
                done += len(arr)
                bar.update(len(arr))
    except (OSError, EOFError) as exc:
        raise DatasetFormatError(f"{path}: cannot be read ({exc})") from None
    finally:
        bar.close()
    return feats, found


def load_callable(spec: str) -> Callable:
    """Import ``"package.module:function"`` and return the function."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} of {spec!r}: {exc}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r} (from {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{spec!r} is not callable")
    return obj


def _stdlib_module(module: str | None) -> bool:
    return bool(module) and module.partition(".")[0] in sys.stdlib_module_names


def load_image_encoder(encoder: str | Callable) -> Callable:
    """The image encoder ``fn(asins, metadata) -> (num_items, dim) array`` named by
    ``"module:function"`` (imported: this runs the module's code) or given as a callable,
    checked before it is ever called.

    Raises:
        ValueError: naming the encoder, for a module of the Python standard library (refused
            before importing it), a module or attribute that cannot be imported, a class, a
            built-in function, or a callable that cannot be called as ``fn(asins, metadata)``
            (e.g. ``os:system``, whose signature is ``(command)``).
    """
    spec = encoder if isinstance(encoder, str) else getattr(encoder, "__qualname__", encoder)
    what = f"image encoder {spec!r}"
    rule = (
        "an image encoder must be your own function fn(asins, metadata) returning a "
        "(num_items, dim) array"
    )
    if isinstance(encoder, str):
        module = encoder.partition(":")[0]
        if _stdlib_module(module):
            raise ValueError(
                f"{what}: refused: {module!r} is a module of the Python standard library; "
                f"{rule}, in a module of yours"
            )
        fn: Any = load_callable(encoder)
    else:
        fn = encoder
        if not callable(fn):
            raise ValueError(f"{what} is not callable; {rule}")
    inner = fn
    while isinstance(inner, functools.partial):  # judge the function a partial wraps
        inner = inner.func
    if inspect.isclass(inner):
        raise ValueError(f"{what}: refused: it is a class, not a function; {rule}")
    if inspect.isbuiltin(inner) or inspect.ismethoddescriptor(inner):
        raise ValueError(f"{what}: refused: it is a built-in function; {rule}")
    if _stdlib_module(getattr(inner, "__module__", None)):
        raise ValueError(
            f"{what}: refused: it comes from the Python standard library "
            f"({inner.__module__}); {rule}"
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: refused: its signature cannot be inspected; {rule}") from None
    try:
        signature.bind(["ASIN"], [{}])
    except TypeError as exc:
        raise ValueError(
            f"{what}: refused: it cannot be called as fn(asins, metadata), its signature is "
            f"{signature} ({exc}); {rule}"
        ) from None
    return fn
