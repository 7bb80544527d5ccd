"""Which models give the numbers of one process under data parallelism (docs/distributed.md).

Trains every registered model (or the ones named) for 2 epochs on the synthetic ``tiny`` preset
with batches of 97 rows (uneven slices 49 + 48, a partial last batch), once in this process and
once in 2 gloo processes (forked, one thread each), and prints per model the largest relative
difference of a logged loss term, the largest difference of a validation metric, and whether
both ranks held bitwise-identical parameters after every step.

Usage::

    python benchmarks/ddp_exactness.py                 # every model (~2 minutes on 2 cores)
    python benchmarks/ddp_exactness.py lightgcn sea
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from sea_pyg.data import make_synthetic, read_mmrec  # noqa: E402
from sea_pyg.models import MODELS, build_model  # noqa: E402
from sea_pyg.train import TrainConfig, Trainer, seed_everything  # noqa: E402


def _train(data, name: str, epochs: int = 2) -> dict:
    seed_everything(3)
    model, info, _ = build_model(name, data)
    cfg = TrainConfig(epochs=epochs, batch_size=97, seed=3, progress=False, verbose=False)
    trainer = Trainer(model, data, cfg, model_info=info)
    equal = []
    if trainer.dist.active:
        step = trainer.dist.train_step

        def checked(*args):
            out = step(*args)
            equal.append(trainer.dist.parameters_equal(model))
            return out

        trainer.dist.train_step = checked
    res = trainer.fit()
    return {"history": [(h["losses"], h.get("valid", {})) for h in res["history"]],
            "equal": all(equal) if equal else None}


def _worker(rank: int, port: int, folder: str, out: str, names: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from sea_pyg.train.distributed import shutdown

    data = read_mmrec(folder)
    seen = {n: _train(data, n) for n in names}
    if rank == 0:
        Path(out).write_text(json.dumps(seen))
    shutdown()


def main() -> None:
    torch.set_num_threads(1)
    names = sys.argv[1:] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        sys.exit(f"ddp_exactness: unknown models {unknown}; choose from {list(MODELS)}")
    folder = tempfile.mkdtemp()
    make_synthetic("tiny", seed=0).to_mmrec(folder, name="tiny")
    data = read_mmrec(folder)
    single = {n: _train(data, n) for n in names}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(Path(folder) / "two.json")
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_worker, args=(port, folder, out, names), nprocs=2, start_method=method)
    two = json.loads(Path(out).read_text())
    print(f"{'model':20s} {'loss gap':>9s} {'(term)':14s} {'metric gap':>10s}  ranks equal")
    for n in names:
        loss_gap, metric_gap, worst = 0.0, 0.0, "-"
        for (la, va), (lb, vb) in zip(single[n]["history"], two[n]["history"], strict=True):
            for k, v in la.items():
                gap = abs(v - lb[k]) / max(abs(v), 1e-8)
                if gap > loss_gap:
                    loss_gap, worst = gap, k
            for k, v in va.items():
                metric_gap = max(metric_gap, abs(v - vb[k]))
        print(f"{n:20s} {loss_gap:9.1e} {'(' + worst + ')':14s} {metric_gap:10.1e}  "
              f"{two[n]['equal']}")


if __name__ == "__main__":
    main()
