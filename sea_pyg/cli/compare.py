"""``sea-pyg compare A B`` / ``sea-pyg compare A1 A2 ... --vs B1 B2 ...``: a paired test between
two runs, or two groups of runs (e.g. seeds), over the users (see
:mod:`sea_pyg.train.significance`)."""

from __future__ import annotations

import argparse
import json
import math
import textwrap
from pathlib import Path

from sea_pyg.cli.errors import UserError

__all__ = ["cmd_compare", "format_tests"]


def _run_folders(items: list[str], flag: str) -> list[str]:
    out = []
    for item in items:
        path = Path(item)
        if path.is_file() and path.name in ("results.json", "per_user.csv"):
            path = path.parent
        if not path.exists():
            raise UserError(f"{flag}: {item} does not exist")
        if not (path / "results.json").is_file():
            raise UserError(
                f"{flag}: {item} is not a run folder (no results.json); give run folders, e.g. "
                "runs/sea-small-seed1 (a shell pattern such as runs/sea-small-seed* gives several)"
            )
        out.append(str(path))
    return out


def _p(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return f"{value:.3g}" if value >= 1e-3 else f"{value:.1e}"


def _signed(value: float, digits: int = 4) -> str:
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"{value:+.{digits}f}"


def _side(runs: tuple[str, ...], models: list[str | None]) -> str:
    names = sorted({m or "?" for m in models})
    what = "/".join(names)
    if len(runs) == 1:
        return f"{what} ({runs[0]})"
    return f"{what}, {len(runs)} runs ({', '.join(runs)}): per-user mean over the runs"


def format_tests(tests, models_a: list[str | None], models_b: list[str | None]) -> str:
    """The text table of a list of :class:`~sea_pyg.train.PairedTest` (one per metric)."""
    first = tests[0]
    lines = [
        f"paired test over {first.n} users, {first.split} metrics at each run's best "
        "validation epoch",
        f"  A: {_side(first.runs_a, models_a)}",
        f"  B: {_side(first.runs_b, models_b)}",
        "",
    ]
    head = ("metric", "A", "B", "A - B", "t-test p", "d_z", "Wilcoxon p", "r_rb", "ties")
    rows = [
        (t.metric, f"{t.mean_a:.4f}", f"{t.mean_b:.4f}", _signed(t.mean_diff), _p(t.t_pvalue),
         _signed(t.cohen_dz, 3), _p(t.wilcoxon_pvalue), _signed(t.rank_biserial, 3),
         str(t.n_ties))
        for t in tests
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    alt = {
        "two-sided": "two-sided (A differs from B)",
        "greater": "one-sided (A better than B)",
        "less": "one-sided (A worse than B)",
    }[first.alternative]
    note = (
        f"{alt} tests; d_z: Cohen's mean difference / sd of the differences; r_rb: "
        "rank-biserial correlation of the signed-rank test; ties: users with equal values (left "
        "out of the signed-rank test)."
    )
    if len(tests) > 1:
        note += (
            f" {len(tests)} metrics are {len(tests)} tests: the p-values are not corrected for "
            "multiple comparisons."
        )
    return "\n".join([*lines, "", textwrap.fill(note, width=100)])


def cmd_compare(args: argparse.Namespace) -> int:
    from sea_pyg.train import SignificanceError, compare_runs, load_per_user

    if args.vs is None:
        if len(args.runs) != 2:
            raise UserError(
                f"give two runs (sea-pyg compare A B), or groups with --vs (sea-pyg compare A1 "
                f"A2 --vs B1 B2); got {len(args.runs)} run(s) and no --vs"
            )
        group_a, group_b = [args.runs[0]], [args.runs[1]]
    else:
        group_a, group_b = list(args.runs), list(args.vs)
    group_a = _run_folders(group_a, "RUN")
    group_b = _run_folders(group_b, "RUN" if args.vs is None else "--vs")
    try:
        loaded_a = [load_per_user(r, args.split) for r in group_a]
        loaded_b = [load_per_user(r, args.split) for r in group_b]
        tests = compare_runs(
            loaded_a, loaded_b, metrics=args.metrics, split=args.split,
            alternative=args.alternative, allow_unfinished=args.include_unfinished,
        )
    except (SignificanceError, ValueError, FileNotFoundError, ImportError) as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps([t.as_dict() for t in tests], indent=2))
        return 0
    print(format_tests(tests, [r.model for r in loaded_a], [r.model for r in loaded_b]))
    return 0
