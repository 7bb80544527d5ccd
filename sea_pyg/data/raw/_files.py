"""Opening McAuley's raw files: existence checks, gzip sniffing, numbered text lines, one dict
per line. Shared by the interaction, metadata and image readers."""

from __future__ import annotations

import ast
import gzip
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from sea_pyg.data.files import DatasetFormatError, check_data_file


def _check_file(path: str | os.PathLike, what: str) -> Path:
    """A regular file (a directory, link loop, dangling link or FIFO is named as such); no
    size limit: the raw files are streamed, never read whole."""
    path = Path(path)
    check_data_file(
        path, f"{what} file", limit=sys.maxsize, missing=f"{what} file {path} does not exist"
    )
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
