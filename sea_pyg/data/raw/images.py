"""Image features: McAuley's binary image records, and user image encoders named
``module:function``."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from sea_pyg.data.mmrec import DatasetFormatError
from sea_pyg.data.raw._files import _check_file, _is_gzip, _open_binary

__all__ = ["IMAGE_DIM", "ASIN_BYTES", "read_image_features", "load_callable"]

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
