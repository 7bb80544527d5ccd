"""Speed and memory of SEA's presets, variants and ablations at the real datasets' scales.

Each (variant, scale, fused/naive) runs in a fresh subprocess (so the peak RSS is its own): load
the synthetic MMRec folder of that scale through ``read_mmrec`` (generated and cached on first
use), build the model from the registry, then time ``--batches`` training steps of batch 2048
exactly as the trainer does them (sampler -> ``loss`` -> ``backward`` -> estimator steps
(CLUB steps) -> fused Adam step), after one warm-up step, and one full validation evaluation.

Printed per run: median seconds per step and its parts, steps per epoch
(``ceil(train rows / 2048)``), the estimated seconds per training epoch (median step x steps),
seconds per full evaluation, and peak RSS. ``--full-epoch`` instead trains one real epoch through
:class:`~sea_pyg.train.Trainer` and reports its measured time.

Usage::

    python benchmarks/bench_sea.py                       # sea, sea-b at baby (+ naive sea)
    python benchmarks/bench_sea.py --variants sea sea-reference sea-b sea-c sea-d \\
        sea-noalign sea-nodist sea-noboth --scales baby sports clothing --naive
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time


def child(variant: str, scale: str, fused: bool, batches: int, threads: int, full: bool,
          sets: dict) -> None:
    import torch

    torch.set_num_threads(threads)
    from sea_pyg.data import BPRSampler, load_synthetic
    from sea_pyg.data.mmrec import EDGE_TYPE
    from sea_pyg.models import build_model
    from sea_pyg.train import AuxiliaryTraining, TrainConfig, Trainer, seed_everything
    from sea_pyg.train.optim import adam

    data = load_synthetic(scale, seed=0)
    seed_everything(0)
    model, info, train_defaults = build_model(variant, data, fused=fused, **sets)
    rows = int(data[EDGE_TYPE].edge_index.size(1))
    steps_per_epoch = math.ceil(rows / 2048)
    out = {"variant": variant, "scale": scale, "fused": fused, "steps": steps_per_epoch}
    if full:
        cfg = TrainConfig(**{**train_defaults, "epochs": 1, "patience": 1, "progress": False,
                             "verbose": False, "seed": 0})
        res = Trainer(model, data, cfg, model_info=info).fit()
        h = res["history"][0]
        out.update(epoch_s=h["train_time"], eval_s=h["eval_time"], step_s=float("nan"))
    else:
        sampler = BPRSampler(data[EDGE_TYPE].edge_index, model.num_users, model.num_items,
                             batch_size=2048, generator=torch.Generator().manual_seed(0))
        aux = AuxiliaryTraining(model.auxiliary_estimators())
        opt = adam(aux.model_parameters(model), lr=train_defaults.get("lr", 1e-3))
        model.train()
        parts = {"fwd": [], "bwd": [], "club": [], "opt": []}
        it = iter(sampler)
        for k in range(batches + 1):
            try:
                batch = next(it)
            except StopIteration:
                it = iter(sampler)
                batch = next(it)
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = sum(model.loss(batch).values())
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            aux.step()
            t3 = time.perf_counter()
            opt.step()
            t4 = time.perf_counter()
            if k:  # skip the warm-up step
                for key, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    parts[key].append(v)
        steps = [sum(v) for v in zip(*parts.values(), strict=True)]
        med = {k: statistics.median(v) for k, v in parts.items()}
        cfg = TrainConfig(progress=False, verbose=False)
        trainer = Trainer(model, data, cfg)
        t0 = time.perf_counter()
        trainer.evaluate("valid")
        eval_s = time.perf_counter() - t0
        out.update(step_s=statistics.median(steps), epoch_s=statistics.median(steps) *
                   steps_per_epoch, eval_s=eval_s, **{f"{k}_s": v for k, v in med.items()})
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["sea", "sea-b"])
    p.add_argument("--scales", nargs="+", default=["baby"])
    p.add_argument("--naive", action="store_true", help="also run `sea` with fused=False")
    p.add_argument("--batches", type=int, default=5, help="timed steps per run (after 1 warm-up)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--full-epoch", action="store_true", help="time one real trainer epoch")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="model hyper-parameter for every run, e.g. transform_dims=512")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    sets = {}
    for kv in args.set:
        k, _, v = kv.partition("=")
        try:
            sets[k] = json.loads(v)
        except json.JSONDecodeError:
            sets[k] = v
    if args.child:
        variant, scale, fused = args.child
        child(variant, scale, fused == "1", args.batches, args.threads, args.full_epoch, sets)
        return

    import torch

    from sea_pyg.data import load_synthetic

    for scale in args.scales:  # generate/cache the datasets outside the timed children
        load_synthetic(scale, seed=0)
    runs = [(v, s, True) for s in args.scales for v in args.variants]
    if args.naive:
        runs += [("sea", s, False) for s in args.scales]
    print(f"torch {torch.__version__}, {args.threads} threads, {args.batches} timed steps/run"
          + (", one full epoch" if args.full_epoch else ""), flush=True)
    results = []
    for variant, scale, fused in runs:
        cmd = [sys.executable, __file__, "--child", variant, scale, "1" if fused else "0",
               "--batches", str(args.batches), "--threads", str(args.threads)]
        cmd += [f"--set={kv}" for kv in args.set]
        if args.full_epoch:
            cmd.append("--full-epoch")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(f"  {variant} {scale} fused={fused}: FAILED\n{proc.stderr[-2000:]}", flush=True)
            continue
        r = json.loads(line[0][7:])
        results.append(r)
        print(f"  {variant:12s} {scale:9s} {'fused' if fused else 'naive'}: "
              f"{r['epoch_s']:.1f} s/epoch, {r['peak_rss_mb']:.0f} MB "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    print()
    head = ("| variant | scale | transform | s/step | fwd | bwd | CLUB fit | Adam | steps/epoch | "
            "s/epoch | s/eval | peak RSS MB |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    def f(r: dict, key: str) -> str:
        v = r.get(key)
        return "-" if v is None or v != v else f"{v:.3f}"

    for r in results:
        print(f"| {r['variant']} | {r['scale']} | {'fused' if r['fused'] else 'naive'} | "
              f"{f(r, 'step_s')} | {f(r, 'fwd_s')} | {f(r, 'bwd_s')} | {f(r, 'club_s')} | "
              f"{f(r, 'opt_s')} | "
              f"{r['steps']} | {r['epoch_s']:.1f} | {r['eval_s']:.2f} | {r['peak_rss_mb']:.0f} |")
    by = {(r["variant"], r["scale"], r["fused"]): r for r in results}
    for scale in args.scales:
        a, b = by.get(("sea", scale, True)), by.get(("sea-b", scale, True))
        if a and b:
            print(f"{scale}: CLUB (sea) / NegativeL2 (sea-b) epoch time = "
                  f"{a['epoch_s'] / b['epoch_s']:.2f}x")
        n = by.get(("sea", scale, False))
        if a and n:
            print(f"{scale}: naive / fused epoch time = {n['epoch_s'] / a['epoch_s']:.2f}x")


if __name__ == "__main__":
    main()
