"""Crash test: training killed with SIGKILL at many seeded moments (checkpoint writes included,
and after the final commit) always resumes to exactly the uninterrupted run.

Children are forked from a forkserver that has imported torch once (a fresh interpreter per
child would cost seconds each). Each child trains MF on the ``tiny`` preset at one thread with
``resume=True`` into a run folder; ``sea_pyg.io``'s fault hook (``_FAULTS.at = k``) makes it
``SIGKILL`` itself at the k-th fault point: before/after each file's write, fsync and rename,
at every ``torch.save`` write call, between the renames of a commit, and after the final commit.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or "forkserver" not in mp.get_all_start_methods(),
    reason="needs SIGKILL and the forkserver start method",
)

EPOCHS = 5
#: Timing entries, which differ between runs by nature.
TIMING = {"train_time", "eval_time", "test_time"}


def _child(data_dir: str, out: str, fault_at: int, every: int, report: str) -> None:
    """Train (resuming whatever ``out`` holds); write the number of fault points to ``report``."""
    torch.set_num_threads(1)
    import sea_pyg.io as sio
    from sea_pyg.data import read_mmrec
    from sea_pyg.models import build_model
    from sea_pyg.train import TrainConfig, Trainer, seed_everything

    sio._FAULTS.at, sio._FAULTS.count = fault_at, 0
    data = read_mmrec(data_dir)
    seed_everything(0)
    model, info, _ = build_model("mf", data, embedding_dim=16)
    cfg = TrainConfig(
        epochs=EPOCHS, batch_size=64, lr=0.01, patience=EPOCHS, seed=1, topk=(5, 10),
        valid_metric="recall@10", output_dir=out, resume=True, checkpoint_every=every,
        progress=False, verbose=False,
    )
    Trainer(model, data, cfg, model_info=info).fit()
    Path(report).write_text(str(sio._FAULTS.count))


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """A forkserver whose server imported torch and sea_pyg (started once, at one thread)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(["torch", "sea_pyg.train", "sea_pyg.models", __name__])
    return context


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from sea_pyg.data import make_synthetic

    folder = tmp_path_factory.mktemp("crash_data")
    make_synthetic("tiny", seed=0).to_mmrec(folder, name="tiny")
    return str(folder)


def _run(ctx, data_dir, out, fault_at=0, every=1, kill_after=None) -> int:
    report = str(Path(out).parent / f"{Path(out).name}.count")
    p = ctx.Process(target=_child, args=(data_dir, str(out), fault_at, every, report))
    p.start()
    if kill_after is not None:
        time.sleep(kill_after)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
    p.join(60)
    assert p.exitcode is not None, "child hung"
    return p.exitcode


def _summary(folder: Path) -> dict:
    res = json.loads((folder / "results.json").read_text())
    history = [{k: v for k, v in h.items() if k not in TIMING} for h in res["history"]]
    keep = ("status", "epochs_run", "best_epoch", "stop_reason", "best_valid", "test")
    return {**{k: res[k] for k in keep}, "history": history}


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _check_consistent(folder: Path) -> None:
    """What a killed run leaves, as readers see it (following an interrupted commit), is one
    state: results.json, best.pt and last.pt describe the same epoch."""
    from sea_pyg.train.runfolder import resolve

    if not (folder / "results.json").exists() and not (folder / ".results.json.next").exists():
        assert not (folder / "best.pt").exists() and not (folder / "last.pt").exists()
        return
    res = json.loads(resolve(folder, "results.json").read_text())
    last = torch.load(resolve(folder, "last.pt"), weights_only=True)
    best = torch.load(resolve(folder, "best.pt"), weights_only=True)
    assert res["epochs_run"] == last["epoch"] == len(last["history"])
    assert res["best_epoch"] == last["best_epoch"] == best["epoch"]
    assert res["test"] == best["test"] == last["best_test"]


def _stamps(folder: Path) -> dict[str, int]:
    """Modification times of the run's files (not the lock, whose note each claim rewrites)."""
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name != ".lock"}


def _check_same_as(reference: Path, folder: Path) -> None:
    assert _summary(folder) == _summary(reference)
    res = json.loads((folder / "results.json").read_text())
    assert all(r["changes"] == {} for r in res["resumes"])  # resumes recorded, no changes
    for name in ("best.pt", "last.pt"):
        a = torch.load(reference / name, weights_only=True)
        b = torch.load(folder / name, weights_only=True)
        assert _same_tensors(a["model"], b["model"]), name
        assert a["best_epoch" if name == "last.pt" else "epoch"] == b[
            "best_epoch" if name == "last.pt" else "epoch"]
    a = torch.load(reference / "last.pt", weights_only=True)["optimizer"]["state"]
    b = torch.load(folder / "last.pt", weights_only=True)["optimizer"]["state"]
    assert all(_same_tensors(a[k], b[k]) for k in a)
    leftovers = [p.name for p in folder.iterdir()
                 if p.name.endswith((".tmp", ".next")) or p.name == ".commit.json"]
    assert leftovers == []


def test_sigkill_anywhere_then_resume_matches_the_uninterrupted_run(ctx, data_dir, tmp_path):
    rng = random.Random(16)
    scenarios = 0
    for every in (1, 2):
        ref = tmp_path / f"ref{every}"
        assert _run(ctx, data_dir, ref, fault_at=10**9, every=every) == 0  # counts fault points
        points = int((tmp_path / f"ref{every}.count").read_text())
        assert points > 50  # several per write, commit and epoch
        ks = sorted(rng.sample(range(1, points), 12 if every == 1 else 5)) + [points]
        for i, k in enumerate(ks):
            out = tmp_path / f"run{every}-{i}"
            assert _run(ctx, data_dir, out, fault_at=k, every=every) == -signal.SIGKILL, k
            _check_consistent(out)
            if k == points:  # killed after the final commit: the resume changes nothing
                before = _stamps(out)
                assert _run(ctx, data_dir, out, every=every) == 0
                assert _stamps(out) == before
            elif i % 4 == 1:  # and the resume itself is killed too, at an earlier point
                _run(ctx, data_dir, out, fault_at=rng.randint(1, points // 2), every=every)
                _check_consistent(out)
            assert _run(ctx, data_dir, out, every=every) == 0
            _check_same_as(ref, out)
            scenarios += 1
    for i in range(3):  # kills at random times, wherever the child happens to be
        out = tmp_path / f"timed-{i}"
        _run(ctx, data_dir, out, kill_after=rng.uniform(0.05, 0.6))
        _check_consistent(out)
        assert _run(ctx, data_dir, out) == 0
        _check_same_as(tmp_path / "ref1", out)
        scenarios += 1
    assert scenarios >= 20
