"""Where LightGCN's memory goes, phase by phase, on a synthetic graph of ``s`` x Amazon Baby.

For one size and one path (full graph or mini-batch) it runs the phases of
``bench_scale.py``'s worker (generate the data, build the model, build the trainer, a few
training steps, the evaluation's scoring state, a ranking pass) and prints, for each phase, the
peak RSS reached during it and the RSS left after it. The peak is reset between phases by
writing ``5`` to ``/proc/self/clear_refs`` (Linux), so each phase's peak is its own.

Usage::

    python benchmarks/scale_memory_phases.py --scale 64 --path minibatch
    python benchmarks/scale_memory_phases.py --scale 16 --path full --threads 2
"""

from __future__ import annotations

import argparse
import sys


def _rss() -> tuple[float, float]:
    """``(peak since the last reset, current)`` resident set size in MB (Linux)."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0]) / 1024  # kB
    return values["VmHWM"], values["VmRSS"]


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scale", type=float, default=16, help="size in Baby units (default 16)")
    p.add_argument("--path", choices=["full", "minibatch"], default="minibatch")
    p.add_argument("--fanout", nargs="+", type=int, default=[10, 10],
                   help="mini-batch fan-out per layer; its length is LightGCN's num_layers")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--steps", type=int, default=3, help="training steps")
    p.add_argument("--eval-users", type=int, default=2000,
                   help="rank the validation users with id < N")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    try:
        _reset_peak()
    except OSError as err:
        sys.exit(f"scale_memory_phases.py needs Linux's /proc/self/clear_refs ({err})")

    import torch

    from sea_pyg.data.scalable import scaled_baby
    from sea_pyg.models import build_model
    from sea_pyg.train import TrainConfig, Trainer, seed_everything
    from sea_pyg.train.metrics import evaluate_ranking

    torch.set_num_threads(args.threads)
    rows = []

    def phase(name: str) -> None:
        peak, now = _rss()
        rows.append((name, peak, now))
        print(f"  {name:<36} peak {peak:8.0f} MB   after {now:8.0f} MB", flush=True)
        _reset_peak()

    phase("imports")
    data = scaled_baby(args.scale, seed=0)
    phase("generate the data")
    U, I = int(data["user"].num_nodes), int(data["item"].num_nodes)
    seed_everything(0)
    model, info, _ = build_model("lightgcn", data, embedding_dim=args.dim,
                                 num_layers=len(args.fanout))
    phase("build the model")
    minibatch = args.path == "minibatch"
    chunk = max(1, (1 << 26) // I)  # 256 MB of scores per user chunk, as bench_scale.py
    cfg = TrainConfig(progress=False, verbose=False, seed=1, minibatch=minibatch,
                      fanout=tuple(args.fanout) if minibatch else None, eval_chunk_size=chunk)
    trainer = Trainer(model, data, cfg, model_info=info)
    phase("build the trainer")
    for i, batch in enumerate(trainer.sampler):
        if i == args.steps:
            break
        trainer._train_step(batch)
    phase(f"{args.steps} training steps")
    model.eval()
    with torch.no_grad():
        state = model.scoring_state()
        phase("evaluation: scoring state")
        val = trainer.val_edge_index
        sub = val[:, val[0] < args.eval_users]
        evaluate_ranking(lambda users: model.score(users, state), sub, trainer.train_edge_index,
                         U, I, ks=(10, 20), chunk_size=chunk)
    phase(f"evaluation: ranking (users < {args.eval_users})")
    n, E = U + I, int(trainer.train_edge_index.size(1))
    buffer_mb = 4 * n * args.dim / 2**20
    print(f"\n{args.scale:g}x Baby, {args.path}: n = {n:,} nodes ({buffer_mb:.0f} MB per (n, d) "
          f"float32 buffer), E = {E:,} train interactions "
          f"({E / 2**20:.1f} MB per byte per interaction); {args.threads} thread(s)")


if __name__ == "__main__":
    main()
