"""Metadata: McAuley's per-product records (one Python dict literal per line)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from sea_pyg.data.mmrec import DatasetFormatError
from sea_pyg.data.raw._files import _check_file, _lines, _parse_dict

__all__ = ["read_metadata"]

_ASIN_RE = re.compile(r"""["']asin["']\s*:\s*["']([^"']*)["']""")


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
