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
    if isinstance(res.get("status"), str):
        return res["status"]
    if "wall_seconds" not in res:
        return "unfinished"
    reason = str(res.get("stop_reason", "finished"))
    return reason.split(":")[0]


def _seconds(res: dict[str, Any]) -> float | None:
    if isinstance(res.get("wall_seconds"), (int, float)):
        return float(res["wall_seconds"])
    times = [h.get("train_time", 0.0) + h.get("eval_time", 0.0) for h in res.get("history", [])
             if isinstance(h, dict)]
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


def run_rows(files: list[Path], base: list[str], metrics: list[str]) -> tuple[list[dict], list]:
    """One row per readable ``results.json`` (values, not text) and ``(file, reason)`` for each
    unreadable one."""
    import json

    rows, skipped = [], []
    bases = [Path(b) for b in base]
    for file in files:
        try:
            res = json.loads(file.read_text(encoding="utf-8"))
            if not isinstance(res, dict) or "model" not in res:
                raise ValueError("not a sea_pyg results.json (no 'model')")
        except (OSError, ValueError) as exc:
            skipped.append((file, first_line(exc)))
            continue
        folder = file.parent
        name = str(folder)
        for b in bases:
            if b.is_dir() and folder.resolve().is_relative_to(b.resolve()):
                rel = folder.resolve().relative_to(b.resolve())
                name = str(b / rel) if len(bases) > 1 else (str(rel) if str(rel) != "." else
                                                             str(b))
                break
        model = res.get("model") or {}
        row: dict[str, Any] = {
            "run": name,
            "model": model.get("name", "?") if isinstance(model, dict) else str(model),
            "data": res.get("dataset", "?"),
            "seed": (res.get("config") or {}).get("seed"),
            "status": _status(res),
            "epochs": res.get("epochs_run"),
            "best": res.get("best_epoch"),
        }
        for split, key in (("valid", "best_valid"), ("test", "test")):
            values = res.get(key) or {}
            for m in metrics:
                row[f"{split} {m}"] = values.get(m)
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
    descending = " " in column  # a metric column: "test recall@20"
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
    columns = [*COLUMNS, *(f"{s} {m}" for s in ("valid", "test") for m in metrics), *TAIL]
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
        choices = {c.replace(" ", ":"): c for c in columns} | {c: c for c in columns}
        choices |= {m: f"test {m}" for m in metrics}
        if wanted not in choices:
            raise UserError(
                f"--sort {wanted!r}: not a column; choose from "
                f"{', '.join(c.replace(' ', ':') for c in columns)} (a bare metric sorts by "
                "its test value)"
            )
        rows = _sort(rows, choices[wanted], args.reverse)
    elif args.reverse:
        rows = rows[::-1]
    print(format_table(rows, columns, args.format))
    return 0
