"""Reading and checking MMRec's interaction table ``<name>.inter``.

The file is tab-separated, UTF-8, with a header naming at least ``userID``, ``itemID`` and
``x_label`` (0 = train, 1 = validation, 2 = test); other columns are ignored. What is refused
(:class:`~sea_pyg.data.DatasetFormatError`, naming the file, the column and the data row):

* a file that is empty, not UTF-8, not a tab-separated table (a line with more fields than the
  header included), or lacks a required column;
* an empty cell, a value that is not an integer (``0.5``, ``B00X``, ``nan``, ``inf``), a
  negative id, an ``x_label`` outside {0, 1, 2};
* **ids with gaps**: MMRec sizes the model as ``num_users = max(userID) + 1`` and
  ``num_items = max(itemID) + 1`` (over all splits), so its datasets number users and items
  consecutively from 0 and every id below the largest occurs. An id that leaves a gap
  (``100000`` in a file of 60 users would create 99,940 users without interactions, ``2**40``
  a terabyte of embeddings) is an error that reports the largest id exactly as written, how
  many ids are missing and the first of them. The check sorts the ids; it never allocates
  anything of the size of the largest id.

What loads with a :class:`~sea_pyg.data.DatasetWarning` (the rows are kept, as MMRec keeps
them, so the numbers stay comparable with MMRec's):

* repeated rows (same ``userID``, ``itemID`` and ``x_label``): each is a training row for the
  BPR sampler, and a multi-edge for models that count them; the evaluation counts a held-out
  pair once;
* a ``(userID, itemID)`` pair in more than one split: a held-out pair that is also a training
  pair is masked at evaluation (training items are never ranked), so it can never be hit.
"""

from __future__ import annotations

import decimal
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from sea_pyg.data.files import DatasetFormatError

__all__ = ["REQUIRED_COLUMNS", "SPLIT_NAMES", "read_inter", "inter_warnings"]

REQUIRED_COLUMNS = ("userID", "itemID", "x_label")
#: ``x_label`` value -> split name.
SPLIT_NAMES = {0: "training", 1: "validation", 2: "test"}
_NODE = {"userID": "users", "itemID": "items"}


def _read_table(path: Path, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv(path, sep="\\t", **kwargs)`` with every failure as a clear error.

    ``index_col=False`` and the ``ParserWarning`` as an error: by default pandas turns the
    leading fields of lines longer than the header into a row index, shifting every column.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, sep="\t", index_col=False, **kwargs)
    except pd.errors.EmptyDataError:
        raise DatasetFormatError(
            f"{path} is empty; it needs a header line with userID, itemID, x_label"
        ) from None
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(
            f"{path}: not UTF-8 text ({exc.reason}, byte {exc.object[exc.start]:#04x}); the "
            f"interaction file must be a UTF-8, tab-separated table"
        ) from None
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError, OverflowError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetFormatError(
            f"{path}: not a readable tab-separated table ({reason}); every line must hold "
            f"the same tab-separated columns as the header"
        ) from None
    except OSError as exc:
        raise DatasetFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _cell_text(path: Path, column: str, row: int, fallback: object) -> str:
    """The cell as written in the file (pandas may have turned ``100000000000000000000`` into
    ``1e+20``); ``str(fallback)`` if the file cannot be re-read."""
    try:
        col = pd.read_csv(path, sep="\t", usecols=[column], dtype=str, keep_default_na=False)
        return str(col[column].iloc[row]).strip()
    except Exception:  # noqa: BLE001 - only used to word a message
        return str(fallback)


def _numeric_column(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """The column as integral numbers (int64, uint64 or float64 holding integers)."""
    series = df[col]
    if series.isna().any():
        row = int(np.flatnonzero(series.isna().to_numpy())[0])
        raise DatasetFormatError(
            f"{path}: column {col} has an empty/NaN value (first at data row {row + 1}); "
            f"every row needs an integer {col}"
        )
    if series.dtype.kind in "iu":
        return series.to_numpy()
    if series.dtype.kind == "b":  # pandas reads a column of True/False as booleans
        raise DatasetFormatError(
            f"{path}: column {col} must hold integers, found {bool(series.iloc[0])} at data row 1"
        )
    num = pd.to_numeric(series, errors="coerce")
    if num.dtype.kind in "iu":
        return num.to_numpy()
    values = num.to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values != np.floor(values))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        text = _cell_text(path, col, row, series.iloc[row])
        raise DatasetFormatError(
            f"{path}: column {col} must hold integers, found {text!r} at data row {row + 1}"
        )
    return values


def _as_int(text: str, value: object) -> int:
    try:
        return int(decimal.Decimal(text))
    except (decimal.InvalidOperation, ValueError, OverflowError):
        return int(value)


def _check_contiguous(values: np.ndarray, col: str, path: Path) -> np.ndarray:
    """int64 ids if they are exactly ``0 .. max`` with every id present; else a clear error."""
    n = values.size
    row = int(np.argmax(values))
    largest = values[row]
    if largest < n:  # ids fit: convert and count
        ids = values.astype(np.int64)
        distinct = np.unique(ids).size
        if distinct == int(largest) + 1:
            return ids
    else:
        distinct = np.unique(values).size
    text = _cell_text(path, col, row, largest)
    top = _as_int(text, largest)
    span = min(top + 1, n + 1)  # a gap must occur below n + 1: n rows hold at most n ids
    seen = np.zeros(span, dtype=bool)
    small = values[values < span].astype(np.int64)
    seen[small] = True
    first = ", ".join(str(i) for i in np.flatnonzero(~seen)[:5])
    node = _NODE[col]
    refeature = " and reorder the rows of the feature files the same way" if col == "itemID" else ""
    raise DatasetFormatError(
        f"{path}: column {col} must number the {node} 0, 1, 2, ... without gaps (MMRec sizes "
        f"the model as max {col} + 1, so every id below the largest is one of the {node}): the "
        f"largest {col} is {text} (data row {row + 1}) but only {distinct:,} distinct ids "
        f"occur, so {top + 1 - distinct:,} ids in 0 .. {top} have no interaction (first: "
        f"{first}). Renumber the {node} consecutively from 0 (e.g. pandas.factorize){refeature}"
    )


def read_inter(path: Path) -> pd.DataFrame:
    """Read and validate an interaction file (the caller has checked that it is a regular
    file of acceptable size).

    Returns:
        The columns ``userID``, ``itemID`` (contiguous 0-based ids) and ``x_label`` as int64,
        in file order.

    Raises:
        DatasetFormatError: see the module docstring.
    """
    header = _read_table(path, nrows=0)
    missing = [c for c in REQUIRED_COLUMNS if c not in header.columns]
    if missing:
        found = list(header.columns)
        raise DatasetFormatError(
            f"{path}: missing column(s) {missing} (found {found}); the file must be "
            f"tab-separated with a header naming userID, itemID and x_label"
        )
    # all columns, so that a line with more fields than the header is an error (with usecols
    # pandas would silently drop the extra fields)
    df = _read_table(path)
    if len(df) == 0:
        raise DatasetFormatError(f"{path}: has a header but no interaction rows")
    values = {col: _numeric_column(df, col, path) for col in REQUIRED_COLUMNS}
    for col in ("userID", "itemID"):
        neg = values[col] < 0
        if neg.any():
            row = int(np.flatnonzero(neg)[0])
            text = _cell_text(path, col, row, values[col][row])
            raise DatasetFormatError(
                f"{path}: column {col} must hold non-negative 0-based ids, found {text} at "
                f"data row {row + 1}"
            )
    bad_label = ~np.isin(values["x_label"], [0, 1, 2])
    if bad_label.any():
        row = int(np.flatnonzero(bad_label)[0])
        text = _cell_text(path, "x_label", row, values["x_label"][row])
        raise DatasetFormatError(
            f"{path}: x_label must be 0 (train), 1 (validation) or 2 (test), found {text} at "
            f"data row {row + 1}"
        )
    out = pd.DataFrame(
        {
            "userID": _check_contiguous(values["userID"], "userID", path),
            "itemID": _check_contiguous(values["itemID"], "itemID", path),
            "x_label": values["x_label"].astype(np.int64),
        }
    )
    return out


def inter_warnings(df: pd.DataFrame, path: Path) -> list[str]:
    """Messages about repeated rows and pairs in several splits (see the module docstring)."""
    out = []
    dup = df.duplicated(list(REQUIRED_COLUMNS)).to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        u, i, label = (int(v) for v in df.iloc[row][list(REQUIRED_COLUMNS)])
        out.append(
            f"{path}: {int(dup.sum()):,} repeated row(s) with the userID, itemID and x_label of "
            f"an earlier row (first at data row {row + 1}: userID {u}, itemID {i}, "
            f"{SPLIT_NAMES[label]}); kept, as MMRec keeps them: each is a training row for the "
            f"BPR sampler (and a multi-edge where a model counts them), while the evaluation "
            f"counts a held-out pair once. Delete the repeated rows if they are mistakes"
        )
    pairs = df.drop_duplicates(list(REQUIRED_COLUMNS))
    multi = pairs.duplicated(["userID", "itemID"], keep=False).to_numpy()
    if multi.any():
        sub = pairs[multi]
        n_pairs = len(sub.drop_duplicates(["userID", "itemID"]))
        u, i = int(sub["userID"].iloc[0]), int(sub["itemID"].iloc[0])
        labels = sorted(sub[(sub["userID"] == u) & (sub["itemID"] == i)]["x_label"].tolist())
        where = " and ".join(SPLIT_NAMES[label] for label in labels)
        out.append(
            f"{path}: {n_pairs:,} (userID, itemID) pair(s) occur in more than one split "
            f"(first: userID {u}, itemID {i} in {where}); kept, as MMRec keeps them: a "
            f"held-out pair that is also a training pair is masked at evaluation (training "
            f"items are never ranked), so it can never be hit. Keep each pair in one split"
        )
    return out
