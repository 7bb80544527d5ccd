"""``sea-pyg runs DIR...``: a table of the training runs under some folders (every folder, at
any depth, that holds a ``results.json``): model, data, seed, status, epochs, best epoch,
validation and test metrics at the best validation epoch, and time."""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from pathlib import Path
from typing import Any

from sea_pyg.cli.errors import UserError, first_line

__all__ = ["cmd_runs", "find_results", "run_rows", "format_table", "COLUMNS"]

#: Columns before the metrics and after them; ``--sort`` takes these or a metric column.
COLUMNS = ("run", "model", "data", "seed", "status", "epochs", "best")
TAIL = ("time",)
DEFAULT_METRICS = ("recall@20", "ndcg@20")


def find_results(folders: list[str]) -> list[Path]:
    """Every ``results.json`` under ``folders`` (or the files themselves), sorted.

    Raises:
        UserError: a folder does not exist.
    """
    files: list[Path] = []
    for folder in folders:
        path = Path(folder)
        if path.is_file() and path.name == "results.json":
            files.append(path)
            continue
        if not path.is_dir():
            raise UserError(f"{folder}: no such folder")
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if "results.json" in names:
                files.append(Path(root) / "results.json")
    return sorted(dict.fromkeys(files))


def _status(res: dict[str, Any]) -> str:
    """``running`` / ``interrupted`` (as ``results.json`` says), ``unfinished`` (no end time),
    else why the run stopped: ``early stop``, ``epoch cap``, ``non-finite loss ...``."""
    status = res.get("status")
    finished = "wall_seconds" in res if status is None else status in ("finished", "done")
    if not finished:
        return str(status or "unfinished")
    return str(res.get("stop_reason") or "finished").split(":")[0]


def _seconds(res: dict[str, Any]) -> float | None:
    if _num(res.get("wall_seconds")) is not None:
        return float(res["wall_seconds"])
    history = res.get("history") if isinstance(res.get("history"), list) else []
    times = [(_num(h.get("train_time")) or 0.0) + (_num(h.get("eval_time")) or 0.0)
             for h in history if isinstance(h, dict)]
    return float(sum(times)) if times else None


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def _num(value: Any) -> int | float | None:
    """A number of ``results.json``, ``None`` for anything else (missing, text, ...)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


def _run_name(folder: Path, bases: list[Path]) -> str:
    """``folder`` relative to the searched folder that holds it (prefixed with that folder when
    several were searched)."""
    for base in bases:
        try:
            rel = folder.resolve().relative_to(base.resolve())
        except ValueError:
            continue
        if len(bases) > 1:
            return str(base / rel)
        return str(base) if rel == Path(".") else str(rel)
    return str(folder)


def run_rows(files: list[Path], base: list[str], metrics: list[str]) -> tuple[list[dict], list]:
    """One row per readable ``results.json`` (values, not text) and ``(file, reason)`` for each
    unreadable one."""
    import json

    rows, skipped = [], []
    bases = [Path(b) for b in base]
    for file in files:
        try:
            res = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            skipped.append((file, f"not valid JSON ({exc})"))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            skipped.append((file, f"cannot read it ({first_line(exc)})"))
            continue
        if not isinstance(res, dict) or "model" not in res:
            skipped.append((file, "not a results.json of sea-pyg train (no 'model')"))
            continue
        model = res.get("model")
        config = res.get("config")
        row: dict[str, Any] = {
            "run": _run_name(file.parent, bases),
            "model": str(model.get("name", "?")) if isinstance(model, dict) else "?",
            "data": str(res.get("dataset", "?")),
            "seed": _num(config.get("seed")) if isinstance(config, dict) else None,
            "status": _status(res),
            "epochs": _num(res.get("epochs_run")),
            "best": _num(res.get("best_epoch")),
        }
        for split, key in (("valid", "best_valid"), ("test", "test")):
            values = res.get(key) if isinstance(res.get(key), dict) else {}
            for m in metrics:
                row[f"{split}:{m}"] = _num(values.get(m))
        row["time"] = _seconds(res)
        rows.append(row)
    return rows, skipped


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column == "time":
        return _fmt_seconds(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_table(rows: list[dict], columns: list[str], fmt: str) -> str:
    """``rows`` as ``plain`` (aligned), ``markdown`` or ``csv`` text."""
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if r[c] is None else r[c] for c in columns])
        return buf.getvalue().rstrip("\n")
    cells = [[_cell(c, r[c]) for c in columns] for r in rows]
    numeric = [c not in ("run", "model", "data", "status") for c in columns]
    if fmt == "markdown":
        lines = ["| " + " | ".join(columns) + " |",
                 "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(x) for x in [c, *(row[i] for row in cells)]) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w)
                         for v, w, n in zip(values, widths, numeric, strict=True)).rstrip()

    return "\n".join([line(list(columns)), *(line(row) for row in cells)])


def _sort(rows: list[dict], column: str, reverse: bool) -> list[dict]:
    """Metrics best first (largest), time fastest first, the rest ascending; missing last."""
    descending = ":" in column  # a metric column: "test:recall@20"
    present = [r for r in rows if r[column] is not None]
    missing = [r for r in rows if r[column] is None]
    key = (lambda r: r[column]) if column not in ("run", "model", "data", "status") else (
        lambda r: str(r[column]))
    present.sort(key=key, reverse=descending != reverse)
    return present + missing


def cmd_runs(args: argparse.Namespace) -> int:
    from sea_pyg.train.metrics import METRICS

    metrics = list(args.metrics or DEFAULT_METRICS)
    for m in metrics:
        name, _, k = m.partition("@")
        if name not in METRICS or not k.isdigit():
            raise UserError(
                f"--metrics: {m!r} is not a metric; use NAME@K with NAME one of "
                f"{', '.join(METRICS)} (e.g. recall@20)"
            )
    columns = [*COLUMNS, *(f"{s}:{m}" for s in ("valid", "test") for m in metrics), *TAIL]
    files = find_results(args.dirs)
    rows, skipped = run_rows(files, args.dirs, metrics)
    for file, reason in skipped:
        print(f"sea-pyg runs: skipped {file}: {reason}", file=sys.stderr)
    if not rows:
        raise UserError(
            f"no run under {', '.join(args.dirs)} (a run is a folder with a results.json, "
            "written by `sea-pyg train --out FOLDER`)"
        )
    if args.sort:
        wanted = args.sort.strip()
        choices = {c: c for c in columns} | {m: f"test:{m}" for m in metrics}
        if wanted not in choices:
            raise UserError(
                f"--sort {wanted!r}: not a column; choose from {', '.join(columns)} (a bare "
                "metric sorts by its test value)"
            )
        rows = _sort(rows, choices[wanted], args.reverse)
    elif args.reverse:
        rows = rows[::-1]
    print(format_table(rows, columns, args.format))
    return 0
