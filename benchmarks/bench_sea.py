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

On a shared machine one run varies by 10-30 %: ``--repeat N`` takes every configuration N
times, round-robin (so a slow hour slows all of them alike), and adds a table of each
configuration's step times and their medians. ``--code LABEL=DIR`` (repeatable) runs the
children with ``PYTHONPATH=DIR``, i.e. on another checkout of the library (e.g. a ``git
worktree`` of the commit before a change), for a before/after comparison in one command; the
current code is ``--code this=``. The other checkout must offer the APIs the child uses.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

#: Median seconds per training step of the official SEA code at Baby scale, one thread, measured
#: side by side with this library on the same machine when issue 14 was filed (the official code
#: is not part of this repository, so it is not re-run here).
OFFICIAL_STEP_S = 7.9

#: Scales beyond the built-in presets: twice Clothing's users, items and interactions (SEA's
#: step is linear in items plus a quadratic alignment term, so this shows the trend).
EXTRA_SCALES = {"clothing2x": ("clothing", 2)}


def load_scale(scale: str):
    """The synthetic MMRec data of ``scale`` (a built-in preset or one of :data:`EXTRA_SCALES`),
    generated once and cached like the built-in presets."""
    from sea_pyg.data import load_synthetic

    if scale not in EXTRA_SCALES:
        return load_synthetic(scale, seed=0)
    from dataclasses import replace

    from sea_pyg.data.builtin import cache_home
    from sea_pyg.data.mmrec import read_mmrec
    from sea_pyg.data.synthetic import PRESETS, make_synthetic
    from sea_pyg.io import atomic_folder

    base, k = EXTRA_SCALES[scale]
    p = PRESETS[base]
    preset = replace(p, name=scale, num_users=k * p.num_users, num_items=k * p.num_items,
                     num_interactions=k * p.num_interactions)
    folder = cache_home() / "bench" / f"{scale}-seed0"
    if not (folder / f"{scale}.inter").is_file():
        atomic_folder(folder, lambda tmp: make_synthetic(preset, seed=0).to_mmrec(tmp, name=scale),
                      exist_ok=True)
    return read_mmrec(folder, name=scale)


def _busy(seconds: float) -> subprocess.Popen:
    """A competing CPU-bound process (a pure-Python spin loop, no threads), ended after
    ``seconds`` at the latest."""
    code = (f"import time\nend = time.time() + {seconds!r}\nx = 0\n"
            "while time.time() < end:\n    x += 1\n")
    return subprocess.Popen([sys.executable, "-c", code])


def _matmul_flops(first: int):
    """A FLOP formula (raw tensors) for a matrix-product op whose two factors are the
    positional arguments ``first`` and ``first + 1``: 2 multiply-adds per (row, inner,
    column), batched; a sparse factor counts its stored entries only (torch's own formula
    would count a CSR adjacency as a dense N x N matrix)."""
    import torch

    def flops(*args, out_val=None, **kwargs) -> int:
        a, b = args[first], args[first + 1]
        if a.layout != torch.strided:
            return 2 * int(a._nnz()) * int(b.shape[-1])
        if b.layout != torch.strided:
            return 2 * int(b._nnz()) * int(a.shape[-2])
        batch = math.prod(a.shape[:-2]) if a.dim() > 2 else 1
        return 2 * batch * int(a.shape[-2]) * int(a.shape[-1]) * int(b.shape[-1])

    flops._get_raw = True
    return flops


def flop_counter():
    """torch's FlopCounterMode counting every dense and sparse matrix product (in-place and
    ``out=`` forms included), silent."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping = {aten.mm: _matmul_flops(0), aten.bmm: _matmul_flops(0),
               aten.addmm: _matmul_flops(1), aten.addmm_: _matmul_flops(1),
               aten.baddbmm: _matmul_flops(1), aten.baddbmm_: _matmul_flops(1)}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def roofline_gflops(threads: int, device) -> float:
    """GFLOP/s of a plain fp32 matmul of Baby's image-transform shape (7,050 x 4,096 by
    4,096 x 512), median of 5 after a warm-up, at this process's thread count."""
    import torch

    a = torch.randn(7050, 4096, device=device)
    b = torch.randn(4096, 512, device=device)
    times = []
    for k in range(6):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if k:
            times.append(time.perf_counter() - t0)
    return 2 * 7050 * 4096 * 512 / statistics.median(times) / 1e9


def child(spec: dict) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    from sea_pyg.data import BPRSampler
    from sea_pyg.data.mmrec import EDGE_TYPE
    from sea_pyg.models import build_model
    from sea_pyg.train import AuxiliaryTraining, TrainConfig, Trainer, seed_everything
    from sea_pyg.train.optim import adam
    from sea_pyg.train.precision import MixedPrecision

    variant, scale, fused, batches = spec["variant"], spec["scale"], spec["fused"], spec["batches"]
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    data = load_scale(scale)
    seed_everything(0)
    model, info, train_defaults = build_model(variant, data, fused=fused, **spec["sets"])
    model = model.to(device)
    precision = MixedPrecision(spec["precision"], device)  # what the trainer does per step
    rows = int(data[EDGE_TYPE].edge_index.size(1))
    steps_per_epoch = math.ceil(rows / 2048)
    out = {"variant": variant, "scale": scale, "fused": fused, "steps": steps_per_epoch,
           "items": int(model.num_items), "policy": spec["policy"], "device": device.type,
           "precision": spec["precision"]}
    if spec["full"]:
        cfg = TrainConfig(**{**train_defaults, "epochs": 1, "patience": 1, "progress": False,
                             "verbose": False, "seed": 0, "device": spec["device"],
                             "precision": spec["precision"]})
        res = Trainer(model, data, cfg, model_info=info).fit()
        h = res["history"][0]
        out.update(epoch_s=h["train_time"], eval_s=h["eval_time"], step_s=float("nan"))
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(out), flush=True)
        return
    sampler = BPRSampler(data[EDGE_TYPE].edge_index, model.num_users, model.num_items,
                         batch_size=2048, generator=torch.Generator().manual_seed(0))
    aux = AuxiliaryTraining(model.auxiliary_estimators())
    opt = adam(aux.model_parameters(model), lr=train_defaults.get("lr", 1e-3))
    model.train()
    it = iter(sampler)

    def clock() -> float:
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def timed_steps(n: int, warmup: int, counters: dict | None = None) -> dict[str, list]:
        nonlocal it
        parts = {"fwd": [], "bwd": [], "club": [], "opt": []}
        for k in range(n + warmup):
            try:
                batch = next(it)
            except StopIteration:
                it = iter(sampler)
                batch = next(it)
            batch = batch.to(device)
            if counters is not None:  # count, do not time
                opt.zero_grad(set_to_none=True)
                with counters["fwd"], precision.forward(model):
                    loss = sum(precision.loss_terms(model.loss(batch)).values())
                with counters["bwd"]:
                    loss.backward()
                with counters["club"]:
                    aux.step()
                with counters["opt"]:
                    opt.step()
                continue
            t0 = clock()
            opt.zero_grad(set_to_none=True)
            with precision.forward(model):
                loss = sum(precision.loss_terms(model.loss(batch)).values())
            t1 = clock()
            loss.backward()
            t2 = clock()
            aux.step()
            t3 = clock()
            opt.step()
            t4 = clock()
            if k >= warmup:
                for key, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    parts[key].append(v)
        return parts

    parts = timed_steps(batches, warmup=1)
    steps = [sum(v) for v in zip(*parts.values(), strict=True)]
    med = {k: statistics.median(v) for k, v in parts.items()}
    out.update(step_s=statistics.median(steps), epoch_s=statistics.median(steps) *
               steps_per_epoch, **{f"{k}_s": v for k, v in med.items()})
    if spec["flops"]:
        counters = {k: flop_counter() for k in ("fwd", "bwd", "club", "opt")}
        timed_steps(1, warmup=0, counters=counters)
        for k, c in counters.items():
            out[f"{k}_gflop"] = c.get_total_flops() / 1e9
        out["step_gflop"] = sum(out[f"{k}_gflop"] for k in counters)
        out["roofline_gflops"] = roofline_gflops(spec["threads"], device)
    if spec["contention"]:
        # competitors start, get one warm-up step to settle, then the same number of steps
        budget = 60.0 + 20.0 * (batches + 1) * max(out["step_s"], 0.1)
        procs = [_busy(budget) for _ in range(spec["contention"])]
        try:
            busy = timed_steps(batches, warmup=1)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
        bsteps = [sum(v) for v in zip(*busy.values(), strict=True)]
        out.update(busy_step_s=statistics.median(bsteps),
                   busy_club_s=statistics.median(busy["club"]))
    cfg = TrainConfig(progress=False, verbose=False, device=spec["device"])
    trainer = Trainer(model, data, cfg)
    t0 = clock()
    trainer.evaluate("valid")
    out["eval_s"] = clock() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda:
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print("RESULT " + json.dumps(out), flush=True)


#: Environment of the child per wait policy (``None``: the variable removed). ``library``: the
#: caller's environment as it is (sea_pyg sets nothing); ``gomp``: libgomp's own default (spin
#: a while, then sleep); forced PASSIVE / ACTIVE; ``spin300``: libgomp's spin shortened to 300
#: iterations before a waiting thread sleeps (``GOMP_SPINCOUNT=300``).
POLICIES: dict[str, dict[str, str | None]] = {
    "library": {},
    "gomp": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None},
    "active": {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": None},
    "spin300": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "300"},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["sea", "sea-b"])
    p.add_argument("--scales", nargs="+", default=["baby"],
                   help="synthetic presets (baby sports clothing ...) or clothing2x")
    p.add_argument("--naive", action="store_true", help="also run `sea` with fused=False")
    p.add_argument("--batches", type=int, default=5, help="timed steps per run (after 1 warm-up)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (all tensors on the device)")
    p.add_argument("--full-epoch", action="store_true", help="time one real trainer epoch")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                   help="training precision(s) (TrainConfig.precision), one run each")
    p.add_argument("--flops", action="store_true",
                   help="also count each phase's matrix-product FLOPs (one step) and time a plain "
                   "fp32 matmul of the image transform's shape: achieved GFLOP/s vs that roofline")
    p.add_argument("--contention", type=int, default=0, metavar="N",
                   help="after the quiet steps, start N competing busy processes and time the "
                   "same number of steps again")
    p.add_argument("--wait-policy", nargs="+", default=["library"], choices=list(POLICIES),
                   help="OpenMP wait policy of the child: `library` (the environment as it "
                   "is), `gomp` (libgomp's default: spin, then sleep), forced passive / "
                   "active, or `spin300` (GOMP_SPINCOUNT=300: a short spin, then sleep)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run every configuration N times, round-robin, and print the medians")
    p.add_argument("--code", action="append", default=[], metavar="LABEL=DIR",
                   help="also run on the library checkout in DIR (PYTHONPATH=DIR), labelled "
                   "LABEL; `this=` is the current code (the default when --code is not given)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="model hyper-parameter for every run, e.g. transform_dims=512")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    sets = {}
    for kv in args.set:
        k, _, v = kv.partition("=")
        try:
            sets[k] = json.loads(v)
        except json.JSONDecodeError:
            sets[k] = v

    if args.repeat < 1:
        p.error(f"--repeat must be at least 1, got {args.repeat}")
    codes: list[tuple[str, str]] = []
    for item in args.code or ["this="]:
        label, sep, folder = item.partition("=")
        if not sep or not label:
            p.error(f"--code takes LABEL=DIR (DIR empty for the current code), got {item!r}")
        if folder and not os.path.isdir(os.path.join(folder, "sea_pyg")):
            p.error(f"--code {item}: {folder} has no sea_pyg package (a checkout of this "
                    "repository, e.g. made with `git worktree add`)")
        codes.append((label, folder))

    import torch

    for scale in args.scales:  # generate/cache the datasets outside the timed children
        load_scale(scale)
    runs = [(v, s, True, pol, pr) for pol in args.wait_policy for s in args.scales
            for v in args.variants for pr in args.precision]
    if args.naive:
        runs += [("sea", s, False, pol, "fp32") for pol in args.wait_policy for s in args.scales]
    print(f"torch {torch.__version__}, {args.threads} threads, device {args.device}, "
          f"{args.batches} timed steps/run" + (", one full epoch" if args.full_epoch else "")
          + (f", then {args.contention} competing busy process(es)" if args.contention else ""),
          flush=True)
    results = []
    rounds = [(rep, code, run) for rep in range(args.repeat) for code in codes for run in runs]
    for rep, (label, folder), (variant, scale, fused, policy, prec) in rounds:
        spec = {"variant": variant, "scale": scale, "fused": fused, "batches": args.batches,
                "threads": args.threads, "full": args.full_epoch, "sets": sets,
                "device": args.device, "contention": args.contention, "policy": policy,
                "flops": args.flops, "precision": prec}
        env = dict(os.environ)
        for var, value in POLICIES[policy].items():
            if value is None:
                env.pop(var, None)
            else:
                env[var] = value
        env["OMP_NUM_THREADS"] = str(args.threads)
        if folder:
            env["PYTHONPATH"] = os.pathsep.join(
                [os.path.abspath(folder)] + [x for x in [env.get("PYTHONPATH")] if x])
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                              capture_output=True, text=True, env=env)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(f"  {variant} {scale} fused={fused}: FAILED\n{proc.stderr[-2000:]}", flush=True)
            continue
        r = json.loads(line[0][7:])
        r["code"], r["round"] = label, rep + 1
        results.append(r)
        print(f"  {variant:12s} {scale:10s} {'fused' if fused else 'naive'} {policy:8s} {prec} "
              f"[{label} #{rep + 1}]: "
              f"{r['step_s']:.3f} s/step, {r['peak_rss_mb']:.0f} MB "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if results:
        report(results, args)
        if args.repeat > 1 or len(codes) > 1:
            report_repeats(results, args)


def report_repeats(results: list[dict], args: argparse.Namespace) -> None:
    """Per configuration (and code): every run's step time, their median, and the medians of
    the forward pass and, with ``--contention``, of the busy / quiet ratio."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        key = (r["code"], r["variant"], r["scale"], r["fused"], r["precision"], r["policy"])
        groups.setdefault(key, []).append(r)
    print("\nRepeated runs (round-robin; medians over the runs)\n")
    head = ("| code | variant | scale | transform | precision | wait policy | runs | "
            "s/step (each run) | median s/step | median fwd |")
    if args.contention:
        head += " median busy / quiet |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for (code, variant, scale, fused, prec, policy), rows in groups.items():
        steps = [r["step_s"] for r in rows]
        line = (f"| {code} | {variant} | {scale} | {'fused' if fused else 'naive'} | {prec} | "
                f"{policy} | {len(rows)} | {', '.join(f'{x:.3f}' for x in steps)} | "
                f"{statistics.median(steps):.3f} | "
                f"{statistics.median(r['fwd_s'] for r in rows):.3f} |")
        if args.contention:
            ratios = [r["busy_step_s"] / r["step_s"] for r in rows if "busy_step_s" in r]
            line += f" {statistics.median(ratios):.2f}x |" if ratios else " - |"
        print(line)


def report(results: list[dict], args: argparse.Namespace) -> None:
    def f(r: dict, key: str, fmt: str = ".3f") -> str:
        v = r.get(key)
        return "-" if v is None or v != v else format(v, fmt)

    print()
    head = ("| variant | scale | items | transform | precision | wait policy | s/step | fwd | "
            "bwd | CLUB fit | Adam | steps/epoch | s/epoch | s/eval | peak RSS MB |")
    if args.device != "cpu":
        head += " peak GPU MB |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in results:
        name = r["variant"] + (f" [{r['code']}]" if r.get("code", "this") != "this" else "")
        row = (f"| {name} | {r['scale']} | {r['items']} | "
               f"{'fused' if r['fused'] else 'naive'} | {r['precision']} | {r['policy']} | "
               f"{f(r, 'step_s')} | "
               f"{f(r, 'fwd_s')} | {f(r, 'bwd_s')} | {f(r, 'club_s')} | {f(r, 'opt_s')} | "
               f"{r['steps']} | {f(r, 'epoch_s', '.1f')} | {f(r, 'eval_s', '.2f')} | "
               f"{f(r, 'peak_rss_mb', '.0f')} |")
        if args.device != "cpu":
            row += f" {f(r, 'peak_gpu_mb', '.0f')} |"
        print(row)
    if args.flops:
        print("\nMatrix-product FLOPs of one step (GFLOP) and the rate achieved (GFLOP/s = GFLOP "
              "/ median phase time); roofline = a plain fp32 7050x4096 @ 4096x512 matmul here\n")
        print("| variant | scale | precision | fwd GFLOP | bwd GFLOP | CLUB fit GFLOP | "
              "step GFLOP | fwd GFLOP/s | bwd GFLOP/s | CLUB GFLOP/s | step GFLOP/s | "
              "roofline GFLOP/s | step at roofline s | s/step |")
        print("|" + "---|" * 14)
        for r in results:
            if "step_gflop" not in r:
                continue
            rate = {k: r[f"{k}_gflop"] / r[f"{k}_s"] if r[f"{k}_s"] > 0 else float("nan")
                    for k in ("fwd", "bwd", "club", "step")}
            print(f"| {r['variant']} | {r['scale']} | {r['precision']} | {r['fwd_gflop']:.1f} | "
                  f"{r['bwd_gflop']:.1f} | {r['club_gflop']:.1f} | {r['step_gflop']:.1f} | "
                  f"{rate['fwd']:.0f} | "
                  f"{rate['bwd']:.0f} | {rate['club']:.0f} | {rate['step']:.0f} | "
                  f"{r['roofline_gflops']:.0f} | {r['step_gflop'] / r['roofline_gflops']:.3f} | "
                  f"{r['step_s']:.3f} |")
    if args.contention:
        print(f"\nContention: {args.contention} competing busy process(es), {args.threads} "
              "torch threads\n")
        print("| variant | scale | wait policy | quiet s/step | busy s/step | busy / quiet | "
              "quiet CLUB fit | busy CLUB fit |")
        print("|---|---|---|---|---|---|---|---|")
        for r in results:
            if "busy_step_s" in r:
                print(f"| {r['variant']} | {r['scale']} | {r['policy']} | {f(r, 'step_s')} | "
                      f"{f(r, 'busy_step_s')} | {r['busy_step_s'] / r['step_s']:.2f}x | "
                      f"{f(r, 'club_s')} | {f(r, 'busy_club_s')} |")
    first = args.precision[0]
    by = {(r["variant"], r["scale"], r["fused"], r["policy"]): r for r in results
          if r["precision"] == first}
    print()
    for r in results:
        if r["scale"] == "baby" and r["fused"] and r["step_s"] == r["step_s"]:
            print(f"{r['variant']} ({r['policy']}, {r['precision']}): official SEA code "
                  f"{OFFICIAL_STEP_S} s/step at Baby, one thread (measured when issue 14 was "
                  "filed) / this step = "
                  f"{OFFICIAL_STEP_S / r['step_s']:.1f}x"
                  + ("" if args.threads == 1 else f"  [this run: {args.threads} threads]"))
    for pol in args.wait_policy:
        for scale in args.scales:
            a, b = by.get(("sea", scale, True, pol)), by.get(("sea-b", scale, True, pol))
            if a and b:
                print(f"{scale}: CLUB (sea) / NegativeL2 (sea-b) epoch time = "
                      f"{a['epoch_s'] / b['epoch_s']:.2f}x")
            n = by.get(("sea", scale, False, pol))
            if a and n:
                print(f"{scale}: naive / fused epoch time = {n['epoch_s'] / a['epoch_s']:.2f}x")
    if len(args.precision) > 1:
        for r in results:
            if r["precision"] != first:
                base = [b for b in results if b["precision"] == first and
                        (b["variant"], b["scale"], b["fused"], b["policy"]) ==
                        (r["variant"], r["scale"], r["fused"], r["policy"])]
                if base:
                    print(f"{r['variant']} {r['scale']}: {r['precision']} step = "
                          f"{r['step_s'] / base[0]['step_s']:.2f}x the {first} step")
    if len(args.scales) > 1:
        print("\nScaling with the number of items (s/step relative to the first scale):")
        for v in args.variants:
            rows = [r for r in results if r["variant"] == v and r["fused"]
                    and r["policy"] == args.wait_policy[0] and r["precision"] == first]
            if len(rows) > 1 and rows[0]["step_s"] == rows[0]["step_s"]:
                base = rows[0]
                print(f"  {v}: " + ", ".join(
                    f"{r['scale']} ({r['items']} items, {r['items'] / base['items']:.2f}x) "
                    f"{r['step_s'] / base['step_s']:.2f}x" for r in rows))


if __name__ == "__main__":
    main()
