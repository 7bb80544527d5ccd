"""Interactions: reading McAuley's ratings CSV or reviews file, the cleaning and iterative
k-core filter, and the contiguous id maps."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sea_pyg.data.mmrec import DatasetFormatError
from sea_pyg.data.raw._files import _check_file, _is_gzip, _lines, _open_binary, _parse_dict

__all__ = ["read_interactions", "filter_k_core", "KCoreStats", "make_id_maps"]

_INTER_COLUMNS = ["user", "item", "rating", "timestamp"]
_REVIEW_FIELDS = {
    "reviewerID": "user",
    "asin": "item",
    "overall": "rating",
    "unixReviewTime": "timestamp",
}


def _sniff_reviews(path: Path) -> bool:
    """Whether the file holds one dict per line (reviews) rather than CSV (ratings)."""
    with _open_binary(path) as f:
        try:
            head = f.read(4096)
        except (OSError, EOFError) as exc:
            raise DatasetFormatError(f"{path}: cannot be read ({exc})") from None
    return head.lstrip()[:1] == b"{"


def _to_numbers(df: pd.DataFrame) -> tuple[str, int] | None:
    """Turn the ``rating`` and ``timestamp`` columns into numbers, in place (empty stays NaN).

    Returns ``(column, row)`` of the first value that is not a number (that column is left
    as it was), or ``None``.
    """
    for col in ("rating", "timestamp"):
        numeric = pd.to_numeric(df[col], errors="coerce")
        bad = numeric.isna() & df[col].notna()
        if bad.any():
            return col, int(np.flatnonzero(bad.to_numpy())[0])
        df[col] = numeric
    return None


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
    bad = _to_numbers(df)
    if bad is not None:
        col, row = bad
        raise DatasetFormatError(
            f"{path}: line {row + 1}: {col} must be a number, found {df[col].iloc[row]!r} "
            f"(expected user,item,rating,timestamp with no header)"
        )
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
    bad = _to_numbers(df)
    if bad is not None:
        col, row = bad
        field_name = [k for k, v in _REVIEW_FIELDS.items() if v == col][0]
        raise DatasetFormatError(
            f"{path}: review {row + 1}: {field_name} must be a number, found {df[col].iloc[row]!r}"
        )
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
