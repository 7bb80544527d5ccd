"""Accuracy, speed and memory of several models over several seeds, as one table.

Every (model, seed) run is a separate ``sea-pyg train`` process on the same dataset (a synthetic
preset or an MMRec folder), so its peak RSS is its own (read with ``os.wait4``). The table gives
mean and standard deviation over seeds of valid/test Recall@10/20 and NDCG@10/20 (test at the
best validation epoch), seconds per training epoch, the best epoch, and peak RSS.

Usage::

    python benchmarks/compare_models.py --models mf lightgcn --preset small --seeds 1 2 3
    python benchmarks/compare_models.py --models lightgcn --data data/baby --seeds 999
    python benchmarks/compare_models.py --models mf --set mf:reg_weight=0.01 --markdown out.md
    python benchmarks/compare_models.py --models lightgcn --minibatch lightgcn --fanout 10 10 \
        --preset small --seeds 1 2 3

``--minibatch MODEL`` adds a row ``MODEL@minibatch``: the same model trained with
``sea-pyg train --minibatch --fanout ...`` (sampled subgraphs, see docs/scale.md), next to the
full-graph row when MODEL is also in ``--models``.

Results of each run stay in ``--workdir`` (``results.json`` per run). A work folder that
already holds runs is refused unless ``--reuse`` (read finished runs back, resume unfinished
ones and those that stopped at an epoch cap below ``--epochs``) or ``--overwrite`` (train them
again) is given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COLUMNS = ["recall@10", "recall@20", "ndcg@10", "ndcg@20"]


def _run(cmd: list[str], log: Path, env: dict[str, str]) -> tuple[int, float]:
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024  # Linux: KiB -> MiB


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"



def _capped_below(results: Path, epochs: int | None) -> bool:
    """Whether a finished run stopped at an epoch cap lower than ``epochs`` (so ``--reuse`` with a
    higher ``--epochs`` resumes it instead of reading it back)."""
    if not epochs:
        return False
    res = json.loads(results.read_text())
    return res.get("stop_reason") == "epoch cap" and int(res["config"]["epochs"]) < epochs

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="registry names, e.g. mf lightgcn")
    p.add_argument("--preset", default="small", help="synthetic preset (ignored with --data)")
    p.add_argument("--data", help="MMRec dataset folder instead of a synthetic preset")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--epochs", type=int, help="epoch cap (default: the protocol's 1000)")
    p.add_argument("--threads", type=int, help="torch threads per run (OMP_NUM_THREADS)")
    p.add_argument("--set", action="append", default=[], metavar="MODEL:KEY=VALUE")
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="MODEL:ARG",
        help="extra sea-pyg train argument for a model, e.g. 'freedom:--lr=0.001'",
    )
    p.add_argument("--workdir", default="runs/compare")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="skip runs already finished in --workdir (their results.json and compare.json)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the runs already in --workdir (default: refuse to start; with --reuse "
        "an unfinished run is resumed instead)",
    )
    p.add_argument(
        "--table-only",
        action="store_true",
        help="with --reuse: only tabulate finished runs, never start one",
    )
    p.add_argument(
        "--seed-major",
        action="store_true",
        help="run every model for the first seed, then the next seed, ... (a partial study "
        "then covers all models)",
    )
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--minibatch", nargs="+", default=[], metavar="MODEL",
                   help="also train these models with --minibatch (rows MODEL@minibatch)")
    p.add_argument("--fanout", nargs="+", type=int, metavar="F",
                   help="--fanout of the --minibatch rows (default: the model's, 10 per layer)")
    args = p.parse_args()
    if args.fanout and not args.minibatch:
        p.error("--fanout applies to the --minibatch rows: name them with --minibatch MODEL")
    # row label -> (registry name, extra sea-pyg train arguments)
    variants = {m: (m, []) for m in args.models}
    for m in args.minibatch:
        fan = ["--fanout", *map(str, args.fanout)] if args.fanout else []
        variants[f"{m}@minibatch"] = (m, ["--minibatch", *fan])

    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data_args = ["--data", args.data] if args.data else ["--synthetic", args.preset]
    dataset = Path(args.data).name if args.data else args.preset

    pairs = [(m, seed) for m in variants for seed in args.seeds]
    if args.seed_major:
        pairs = [(m, seed) for seed in args.seeds for m in variants]
    held = [
        workdir / f"{m}-{dataset}-seed{seed}" for m, seed in pairs
        if (workdir / f"{m}-{dataset}-seed{seed}" / "results.json").is_file()
    ]
    if held and not (args.reuse or args.overwrite):
        p.error(
            f"{len(held)} run folder(s) in {workdir} already hold a run (e.g. {held[0]}): pass "
            "--reuse to read finished runs back and resume unfinished ones, --overwrite to "
            "train them again, or another --workdir"
        )
    done: dict[str, list[dict]] = {m: [] for m in variants}
    for model, seed in pairs:
        name, variant_args = variants[model]
        sets = [s.split(":", 1)[1] for s in args.set if s.split(":", 1)[0] in (model, name)]
        extras = [s.split(":", 1)[1] for s in args.extra if s.split(":", 1)[0] in (model, name)]
        out = workdir / f"{model}-{dataset}-seed{seed}"
        side = out / "compare.json"  # peak RSS and wall time of a finished run
        if args.reuse and side.is_file() and (out / "results.json").is_file() and not (
            _capped_below(out / "results.json", args.epochs)
        ):
            res = json.loads((out / "results.json").read_text())
            res.update(json.loads(side.read_text()))
            done[model].append(res)
            print(f"  {model} seed {seed}: reused {out}", flush=True)
            continue
        if args.table_only:
            print(f"  {model} seed {seed}: no finished run in {out}; left out", flush=True)
            continue
        cmd = [
            sys.executable,
            "-m",
            "sea_pyg.cli",
            "train",
            "--model",
            name,
            *data_args,
            "--seed",
            str(seed),
            "--out",
            str(out),
            "--quiet",
            "--no-progress",
        ]
        if args.epochs:
            cmd += ["--epochs", str(args.epochs)]
        resumed = False
        if (out / "results.json").is_file():
            resumed = not args.overwrite
            cmd.append("--resume" if resumed else "--overwrite")
        for s in sets:
            cmd += ["--set", s]
        cmd += variant_args + extras
        t0 = time.perf_counter()
        code, rss = _run(cmd, workdir / f"{model}-{dataset}-seed{seed}.log", env)
        wall = time.perf_counter() - t0
        if code != 0:
            print(f"{model} seed {seed} failed (exit {code}); see its .log", file=sys.stderr)
            continue
        res = json.loads((out / "results.json").read_text())
        if resumed:  # a resumed run's RSS and wall time are not the whole run's
            rss = wall = None
        res["peak_rss_mb"], res["wall"] = rss, wall
        side.write_text(json.dumps({"peak_rss_mb": rss, "wall": wall}))
        done[model].append(res)
        print(
            f"  {model} seed {seed}: test recall@20 {res['test']['recall@20']:.4f}, "
            f"best epoch {res['best_epoch']}" + (", resumed" if resumed else f", {wall:.0f} s"),
            flush=True,
        )
    rows = [(m, runs) for m, runs in done.items() if runs]

    head = (
        ["model", "seeds"]
        + [f"valid {c}" for c in COLUMNS]
        + [f"test {c}" for c in COLUMNS]
        + ["s/epoch", "best epoch", "peak RSS MB"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for model, runs in rows:
        cells = [model, str(len(runs))]
        cells += [_mean_std([r["best_valid"][c] for r in runs]) for c in COLUMNS]
        cells += [_mean_std([r["test"][c] for r in runs]) for c in COLUMNS]
        cells.append(f"{statistics.mean(r['train_seconds_per_epoch'] for r in runs):.2f}")
        cells.append(f"{statistics.mean(r['best_epoch'] for r in runs):.0f}")
        rss = [r["peak_rss_mb"] for r in runs if r.get("peak_rss_mb") is not None]
        cells.append(f"{max(rss):.0f}" if rss else "-")
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    header = (
        f"dataset {dataset}, seeds {args.seeds}, "
        f"command: python benchmarks/compare_models.py {' '.join(sys.argv[1:])}"
    )
    print()
    print(header)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(header + "\n\n" + table + "\n")


if __name__ == "__main__":
    main()
