"""One process against several: ``sea-pyg train`` under ``torchrun`` with 1 and N processes
(data parallelism, docs/distributed.md) on the same data and seed, side by side.

For each model and each process count it runs::

    torchrun --standalone --nproc_per_node=N $(which sea-pyg) train --model MODEL \\
        --synthetic PRESET --seed SEED --out WORKDIR/MODEL-npN --threads T ...

and prints, from each run's ``results.json``: the epochs run, the best epoch, the test
Recall/NDCG@10/20 at the best validation epoch, the seconds per training epoch and per
evaluation, and the largest difference of the per-epoch training losses from the 1-process run
(the same seed gives the same numbers within float tolerance for the models whose loss terms
are batch means, batch sums or batch-independent; see docs/distributed.md).

Usage::

    python benchmarks/bench_ddp.py                      # lightgcn and sea on `small`, 1 vs 2
    python benchmarks/bench_ddp.py --quick              # tiny, 3 epochs: a check that it runs
    python benchmarks/bench_ddp.py --models lightgcn freedom --procs 1 2 4 --epochs 50

Threads: each process gets ``--threads`` torch threads (default 1), so 2 processes use 2 cores;
compare at equal cores (``--threads 2`` with ``--procs 1``) to see the cost of communication.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

COLUMNS = ["recall@10", "recall@20", "ndcg@10", "ndcg@20"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sea_pyg() -> str:
    exe = shutil.which("sea-pyg") or str(Path(sys.executable).parent / "sea-pyg")
    if not Path(exe).exists():
        sys.exit("bench_ddp: the sea-pyg command is not installed (pip install -e .)")
    return exe


def _run(model: str, procs: int, args: argparse.Namespace, out: Path) -> tuple[dict, float]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}",
        "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}",
        _sea_pyg(), "train", "--model", model, "--seed", str(args.seed),
        "--out", str(out), "--overwrite", "--threads", str(args.threads), "--no-progress",
    ]
    cmd += ["--data", args.data] if args.data else ["--synthetic", args.preset]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        status = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - t0
    if status != 0:
        sys.exit(f"bench_ddp: {model} with {procs} process(es) failed (status {status}); "
                 f"see {log}")
    return json.loads((out / "results.json").read_text()), wall


def _loss_gap(res: dict, ref: dict) -> float:
    """Largest relative difference of the per-epoch logged losses (common epochs)."""
    gap = 0.0
    for h, r in zip(res["history"], ref["history"], strict=False):
        for k, v in r["losses"].items():
            gap = max(gap, abs(h["losses"].get(k, float("nan")) - v) / max(abs(v), 1e-12))
    return gap


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["lightgcn", "sea"])
    p.add_argument("--procs", nargs="+", type=int, default=[1, 2], help="process counts")
    p.add_argument("--preset", default="small", help="synthetic preset (default small)")
    p.add_argument("--data", help="an MMRec dataset folder instead of --preset")
    p.add_argument("--epochs", type=int, help="epoch cap (default: the protocol's)")
    p.add_argument("--seed", type=int, default=999)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--workdir", default="runs/bench_ddp")
    p.add_argument("--quick", action="store_true", help="tiny preset, 3 epochs")
    p.add_argument("--markdown", help="also write the table to this file")
    args = p.parse_args()
    if args.quick:
        args.preset, args.epochs, args.data = "tiny", args.epochs or 3, None
    data = Path(args.data).name if args.data else args.preset
    rows = []
    for model in args.models:
        ref = None
        for procs in args.procs:
            res, wall = _run(model, procs, args, Path(args.workdir) / f"{model}-{data}-np{procs}")
            ref = ref or res
            rows.append((model, procs, res, wall, _loss_gap(res, ref)))
            print(f"{model} x{procs}: done in {wall:.1f}s", file=sys.stderr, flush=True)
    head = ("| model | procs | per-rank batch | epochs | best | " + " | ".join(COLUMNS)
            + " | s/epoch | s/eval | wall s | max loss gap vs first |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for model, procs, res, wall, gap in rows:
        test = res["test"]
        lines.append(
            f"| {model} | {procs} | {res.get('per_rank_batch', '-')} | {res['epochs_run']} | "
            f"{res['best_epoch']} | "
            + " | ".join(f"{test.get(c, float('nan')):.4f}" for c in COLUMNS)
            + f" | {res['train_seconds_per_epoch']:.3f} | {res['eval_seconds_per_epoch'] or 0:.3f}"
            f" | {wall:.1f} | {gap:.1e} |"
        )
    table = "\n".join(lines)
    print(f"\n{data}, seed {args.seed}, {args.threads} thread(s) per process:\n{table}")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
