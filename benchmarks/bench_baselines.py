"""Speed and memory of the collaborative baselines at the real datasets' scales.

For each (model, scale) it runs, in a fresh subprocess (so peak RSS belongs to that run alone):
load the synthetic MMRec folder of that scale through ``read_mmrec`` (generated and cached on
first use), build the model, train ``--epochs`` epochs through the real ``Trainer`` and report

* seconds per training epoch (median over epochs),
* seconds per full validation evaluation (median over epochs; all users x all items),
* peak resident memory of the process (includes the dataset's 4096-d and 384-d features).

With ``--batches N`` a run instead times ``N`` training steps of the main (BPR) phase after one
warm-up step, exactly as :class:`~sea_pyg.train.Trainer` takes them (the trainer's own sampler,
optimizer and auxiliary estimators), and estimates seconds per epoch as the model's
once-per-epoch work (``pre_epoch``, e.g. a graph rebuilt every epoch) plus the median step times
the steps per epoch; the evaluation is one full validation evaluation. For models whose epochs
are too long to run whole at these scales (PAMD at batch 100, MMSSL, MICRO). Pre-training epochs
(PAMD) are not included.

Usage::

    python benchmarks/bench_baselines.py      # mf and lightgcn at baby, sports, clothing
    python benchmarks/bench_baselines.py --models lightgcn --scales baby --epochs 3 --threads 2
    python benchmarks/bench_baselines.py --models pamd mmssl --scales baby --batches 5 --threads 1
    python benchmarks/bench_baselines.py --models vbpr --scales baby --precision fp32 bf16

``--precision fp32 bf16`` runs each (model, scale) once per precision (``TrainConfig.precision``,
see ``sea_pyg.train.precision``), one row each, for a side-by-side step time.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def timed_steps(trainer, batches: int) -> dict:
    """Seconds of ``pre_epoch`` and of ``batches`` main-phase steps (after one warm-up)."""
    model = trainer.model
    epoch = trainer._pretrain_epochs()  # the first epoch of the main (BPR) phase
    model.train()
    t0 = time.perf_counter()
    model.pre_epoch(epoch)
    trainer._set_lr(epoch)
    pre_s = time.perf_counter() - t0
    steps = []
    it = iter(trainer.sampler)
    for k in range(batches + 1):
        batch = next(it, None)
        if batch is None:  # an epoch shorter than the steps asked for: start a new pass
            it = iter(trainer.sampler)
            batch = next(it)
        t0 = time.perf_counter()
        if trainer._train_step(batch) is None:
            raise RuntimeError("non-finite loss in a timed step")
        if k:
            steps.append(time.perf_counter() - t0)
    n = len(trainer.sampler)
    step_s = statistics.median(steps)
    t0 = time.perf_counter()
    trainer.evaluate("valid")
    eval_s = time.perf_counter() - t0
    return {"epochs": 0, "step_s": step_s, "steps": n, "pre_epoch_s": pre_s,
            "train_s": pre_s + step_s * n, "eval_s": eval_s, "valid_recall@20": float("nan")}


def child(model_name: str, scale: str, epochs: int, threads: int, precision: str,
          batches: int = 0) -> None:
    import torch

    torch.set_num_threads(threads)
    from sea_pyg.data import load_synthetic
    from sea_pyg.models import build_model
    from sea_pyg.train import TrainConfig, Trainer, seed_everything

    t0 = time.perf_counter()
    data = load_synthetic(scale, seed=0)
    load_s = time.perf_counter() - t0
    seed_everything(0)
    model, info, train_defaults = build_model(model_name, data)
    cfg = TrainConfig(
        **{
            **train_defaults,
            "epochs": epochs,
            "patience": epochs,
            "progress": False,
            "verbose": False,
            "seed": 0,
            "precision": precision,
        }
    )
    trainer = Trainer(model, data, cfg, model_info=info)
    out = {
        "model": model_name,
        "scale": scale,
        "precision": precision,
        "users": trainer.num_users,
        "items": trainer.num_items,
        "train_rows": int(data["user", "rates", "item"].edge_index.size(1)),
        "load_s": load_s,
    }
    if batches:
        out.update(timed_steps(trainer, batches))
    else:
        hist = trainer.fit()["history"]
        out.update(
            epochs=len(hist),
            train_s=statistics.median(h["train_time"] for h in hist),
            eval_s=statistics.median(h["eval_time"] for h in hist),
            **{"valid_recall@20": hist[-1]["valid"]["recall@20"]},
        )
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mf", "lightgcn"])
    p.add_argument("--scales", nargs="+", default=["baby", "sports", "clothing"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, default=0, metavar="N",
                   help="time N main-phase steps instead of whole epochs (estimated s/epoch)")
    p.add_argument(
        "--precision",
        nargs="+",
        choices=["fp32", "bf16"],
        default=["fp32"],
        help="training precision(s), one run each (default fp32)",
    )
    p.add_argument("--child", nargs=2, metavar=("MODEL", "SCALE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.epochs, args.threads, args.precision[0],
              args.batches)
        return

    import torch

    what = (f"{args.batches} timed steps per run (s/epoch estimated)" if args.batches
            else f"{args.epochs} epochs per run")
    print(f"torch {torch.__version__}, {args.threads} threads, {what}")
    rows = []
    runs = [(s, m, pr) for s in args.scales for m in args.models for pr in args.precision]
    for scale, model, precision in runs:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            model,
            scale,
            "--epochs",
            str(args.epochs),
            "--threads",
            str(args.threads),
            "--precision",
            precision,
            "--batches",
            str(args.batches),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{model}@{scale} ({precision}) failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(lines[-1][len("RESULT ") :]))
        r = rows[-1]
        print(f"  done {model}@{scale} ({precision}): {r['train_s']:.2f} s/epoch", flush=True)

    header = (
        f"| {'model':9s} | {'scale':8s} | {'precision':9s} | {'users':>6s} | {'items':>6s} "
        f"| {'train rows':>10s} "
        f"| {'s/epoch':>8s} | {'s/eval':>7s} | {'peak RSS MB':>11s} |"
    )
    if args.batches:
        header += f" {'s/step':>7s} | {'steps':>5s} |"
    print()
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        print(
            f"| {r['model']:9s} | {r['scale']:8s} | {r['precision']:9s} | {r['users']:6d} "
            f"| {r['items']:6d} "
            f"| {r['train_rows']:10d} | {r['train_s']:8.2f} | {r['eval_s']:7.2f} "
            f"| {r['peak_rss_mb']:11.0f} |"
            + (f" {r['step_s']:7.3f} | {r['steps']:5d} |" if args.batches else "")
        )


if __name__ == "__main__":
    main()
