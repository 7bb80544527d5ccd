"""Numbers that a refactor must not change: per-epoch losses and metrics of every model.

Trains every registered model (plus a few non-default configurations that take other code
paths) on the synthetic ``tiny`` preset at one thread, with a fixed seed, and writes the
per-epoch loss terms, validation metrics and test metrics (at improving epochs) to a JSON file.
``--compare A.json B.json`` then lists every value that differs by more than ``--tol``.

Usage::

    python benchmarks/fingerprint.py --out /tmp/before.json          # before a change
    python benchmarks/fingerprint.py --out /tmp/after.json           # after it
    python benchmarks/fingerprint.py --compare /tmp/before.json /tmp/after.json

Timings are left out (they always differ).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

#: (label, registry name, hyper-parameter overrides): configurations beyond the registry's
#: defaults that take other code paths.
EXTRA_CONFIGS = [
    ("freedom[fuse]", "freedom", {"fuse_modalities": True}),
    ("sea[naive]", "sea", {"fused": False}),
    ("sea[learnable-knn]", "sea", {"learnable_knn_weights": True}),
    ("sea[shared-club]", "sea", {"club_shared": True, "trans_dim": 16}),
    ("bm3[2-layers]", "bm3", {"num_layers": 2}),
]


def _registry():
    try:  # the registry's home since the one-file-per-model house
        from sea_pyg.models import build_model, model_names
    except ImportError:  # earlier releases
        from sea_pyg.train import build_model, model_names
    return build_model, model_names


def _run(name: str, hparams: dict, epochs: int, seed: int) -> list[dict]:
    import torch

    from sea_pyg.data import load_synthetic
    from sea_pyg.train import TrainConfig, Trainer, seed_everything

    build_model, _ = _registry()
    data = load_synthetic("tiny", seed=0)
    seed_everything(seed)
    try:
        model, info, train_defaults = build_model(name, data, **hparams)
    except ValueError:  # releases before 0.2 used MMRec's name of BM3's layer count
        old = {("n_layers" if k == "num_layers" else k): v for k, v in hparams.items()}
        seed_everything(seed)
        model, info, train_defaults = build_model(name, data, **old)
    cfg = TrainConfig(
        **{**train_defaults, "epochs": epochs, "seed": seed, "patience": epochs,
           "progress": False, "verbose": False}
    )
    torch.set_num_threads(1)
    results = Trainer(model, data, cfg, model_info=info).fit()
    keep = ("epoch", "loss", "losses", "valid", "test")
    return [{k: h[k] for k in keep if k in h} for h in results["history"]]


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def compare(a_path: str, b_path: str, tol: float) -> int:
    with open(a_path) as f:
        a = json.load(f)["runs"]
    with open(b_path) as f:
        b = json.load(f)["runs"]
    bad = 0
    for label in sorted(set(a) | set(b)):
        if label not in a or label not in b:
            print(f"{label}: only in {'A' if label in a else 'B'}")
            bad += 1
            continue
        fa, fb = dict(_flatten(a[label])), dict(_flatten(b[label]))
        worst = 0.0
        for key in sorted(set(fa) | set(fb)):
            va, vb = fa.get(key), fb.get(key)
            if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
                diff = abs(va - vb)
                worst = max(worst, diff)
                if not (diff <= tol or (math.isnan(va) and math.isnan(vb))):
                    print(f"{label}: {key}: {va!r} vs {vb!r} (diff {diff:.3g})")
                    bad += 1
            elif va != vb:
                print(f"{label}: {key}: {va!r} vs {vb!r}")
                bad += 1
        print(f"{label:22s} {len(fa):5d} values, max |diff| {worst:.3g}")
    print(f"{bad} difference(s) above {tol:g}")
    return 1 if bad else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", help="JSON file to write")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--models", nargs="*", help="labels to run (default: all)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"))
    p.add_argument("--tol", type=float, default=1e-6)
    args = p.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare, args.tol))
    if not args.out:
        p.error("--out is required unless --compare is given")
    _, model_names = _registry()
    configs = [(n, n, {}) for n in model_names()] + EXTRA_CONFIGS
    if args.models:
        configs = [c for c in configs if c[0] in args.models]
    runs = {}
    for label, name, hparams in configs:
        t0 = time.perf_counter()
        runs[label] = _run(name, hparams, args.epochs, args.seed)
        print(f"{label:22s} {time.perf_counter() - t0:6.1f}s", flush=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"epochs": args.epochs, "seed": args.seed, "runs": runs}, f, indent=1)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
