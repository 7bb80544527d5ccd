"""Data-parallel training (torchrun / DDP, :mod:`sea_pyg.train.distributed`): two gloo
processes on the CPU give the numbers of one process, keep identical parameters after every
step, and rank 0 alone writes.

The two processes are started once for the whole module (``torch.multiprocessing`` spawn, the
environment torchrun would set, a free port, one thread each); each runs every case below and
writes what it saw to a JSON file that the tests compare with one in-process run."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from sea_pyg.data import make_synthetic, read_mmrec
from sea_pyg.models import build_model
from sea_pyg.nn import emb_loss
from sea_pyg.train import TrainConfig, Trainer, seed_everything
from sea_pyg.train.distributed import Distributed, RankZeroError

pytestmark = pytest.mark.usefixtures("one_thread")

#: (case, model, hyper-parameters, training settings): the batch of 97 rows splits the tiny
#: training rows into uneven batches (the last one partial) and uneven slices (49 + 48).
CASES = [
    ("lightgcn", "lightgcn", {}, {"epochs": 3}),
    ("sea", "sea", {}, {"epochs": 3}),  # alignment + CLUB over all items, CLUB between steps
    ("pamd", "pamd", {"pretrain_epochs": 1}, {"epochs": 2}),  # pre-training on item batches
    ("mf", "mf", {}, {"epochs": 30, "patience": 0, "lr": 0.05}),  # early stopping
]
BATCH = 97
SEED = 3


def _config(out: str | None = None, **kw) -> TrainConfig:
    return TrainConfig(batch_size=BATCH, seed=SEED, progress=False, verbose=False,
                       output_dir=out, **kw)


def _run_case(data, model_name, hparams, settings, out=None, check_steps=False, **more):
    seed_everything(SEED)
    model, info, _ = build_model(model_name, data, **hparams)
    trainer = Trainer(model, data, _config(out, **{**settings, **more}), model_info=info)
    checks = []
    if check_steps:  # parameters identical on every rank after every step
        step = trainer.dist.train_step

        def checked(*args):
            result = step(*args)
            checks.append(trainer.dist.parameters_equal(model))
            return result

        trainer.dist.train_step = checked
    results = trainer.fit()
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return results, params.tolist(), checks


class _Branchy(torch.nn.Module):
    """``loss``: ``a.sum()``, plus ``b.sum()`` when the batch says so."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.ones(2))
        self.b = torch.nn.Parameter(torch.ones(2))

    def loss(self, batch):
        terms = {"a": self.a.sum()}
        if bool(batch[0, 0]):
            terms["b"] = 2 * self.b.sum()
        return terms


def _worker(rank: int, world: int, port: int, folder: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from sea_pyg.train.distributed import shutdown

    data = read_mmrec(folder)
    seen: dict = {}
    for case, name, hparams, settings in CASES:
        run_out = str(Path(out) / f"run-{case}") if case == "lightgcn" else None
        results, params, checks = _run_case(data, name, hparams, settings, run_out, True)
        seen[case] = {"results": results, "params": params, "checks": checks}
    # a run of 1 epoch, resumed up to 3: rank 0 reads last.pt and sends its state to rank 1
    resumed = str(Path(out) / "run-resumed")
    _run_case(data, "lightgcn", {}, {"epochs": 1}, resumed)
    results, params, checks = _run_case(data, "lightgcn", {}, {"epochs": 3}, resumed, True,
                                        resume=True)
    seen["resumed"] = {"results": results, "params": params, "checks": checks}
    # rank 0 fails in its evaluation: the other rank is told and raises, nobody waits
    seed_everything(SEED)
    model, info, _ = build_model("mf", data)
    trainer = Trainer(model, data, _config(epochs=2), model_info=info)
    if rank == 0:
        trainer.validate = lambda record: (_ for _ in ()).throw(OSError("disk full"))
    try:
        trainer.fit()
        seen["failure"] = "none"
    except RankZeroError as exc:
        seen["failure"] = f"RankZeroError: {exc}"
    except OSError as exc:
        seen["failure"] = f"OSError: {exc}"
    # parameters a step leaves unused: on no rank -> no gradient (None, as in one process);
    # on some ranks -> the mean with their zero
    branchy = _Branchy()
    dp = Distributed()
    dp.wrap(branchy)
    grads = []
    for use in ([1, 1], [0, 0], [1, 0]):
        branchy.zero_grad(set_to_none=True)
        sum(dp._ddp(torch.tensor([[use[rank]]])).values()).backward()
        grads.append([None if p.grad is None else p.grad.tolist() for p in branchy.parameters()])
    seen["unused"] = grads
    # the emb_loss of the slices, summed over the ranks, is that of the whole batch
    from sea_pyg.nn.data_parallel import data_parallel_step

    x = torch.arange(12.0).view(6, 2).requires_grad_()
    mine = x[:4] if rank == 0 else x[4:]
    with data_parallel_step():
        value = emb_loss(mine, mine * 2, batch_rows=True)
    value.backward()
    seen["emb_loss"] = {"value": float(value), "grad": x.grad.tolist()}
    Path(out, f"rank{rank}.json").write_text(json.dumps(seen))
    shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-ddp")
    make_synthetic("tiny", seed=0).to_mmrec(folder, name="tiny")
    return folder


@pytest.fixture(scope="module")
def two_ranks(tiny_folder, tmp_path_factory):
    """What each of 2 gloo processes saw: ``[rank 0, rank 1]``."""
    out = tmp_path_factory.mktemp("ddp-out")
    # fork: the children inherit the imported modules (a spawned child spends seconds on them)
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_worker, args=(2, _free_port(), str(tiny_folder), str(out)), nprocs=2,
                       start_method=method)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)], out


@pytest.fixture(scope="module")
def one_rank(tiny_folder):
    data = read_mmrec(tiny_folder)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {case: _run_case(data, name, hp, st)[:2] for case, name, hp, st in CASES}
    finally:
        torch.set_num_threads(n)


def _close(a, b, rel=1e-4, abs_=1e-6):
    return torch.allclose(torch.tensor(a, dtype=torch.float64),
                          torch.tensor(b, dtype=torch.float64), rtol=rel, atol=abs_)


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_two_processes_give_the_numbers_of_one(two_ranks, one_rank, case):
    ranks, _ = two_ranks
    single, single_params = one_rank[case]
    for seen in ranks:
        hist, ref = seen[case]["results"]["history"], single["history"]
        assert len(hist) == len(ref) > 0
        for h, r in zip(hist, ref, strict=True):
            assert h.keys() == r.keys() and h.get("stage") == r.get("stage")
            assert h["losses"].keys() == r["losses"].keys()
            for k in r["losses"]:
                assert _close(h["losses"][k], r["losses"][k]), (case, h["epoch"], k)
            if "valid" in r:
                for k, v in r["valid"].items():
                    assert _close(h["valid"][k], v), (case, h["epoch"], k)
        assert seen[case]["results"]["best_epoch"] == single["best_epoch"]
        for k, v in single["test"].items():
            assert _close(seen[case]["results"]["test"][k], v)
        # Adam moves a parameter whose true gradient is 0 (a bias before a batch norm) by up to
        # lr per step in the direction of the rounding noise: a bound of lr x steps
        steps = len(seen[case]["checks"])
        assert _close(seen[case]["params"], single_params, rel=1e-4, abs_=1e-3 * steps)


def test_early_stopping_decided_by_rank_zero_stops_every_rank(two_ranks, one_rank):
    ranks, _ = two_ranks
    single = one_rank["mf"][0]
    assert single["stop_reason"].startswith("early stop") and single["epochs_run"] < 30
    for seen in ranks:
        res = seen["mf"]["results"]
        assert (res["stop_reason"], res["epochs_run"]) == (single["stop_reason"],
                                                           single["epochs_run"])


def test_resume_under_two_processes_continues_exactly(two_ranks, one_rank):
    ranks, out = two_ranks
    single, single_params = one_rank["lightgcn"]
    for seen in ranks:
        res = seen["resumed"]
        assert [r["epoch"] for r in res["results"]["resumes"]] == [1]
        assert [h["epoch"] for h in res["results"]["history"]] == [0, 1, 2]
        for h, r in zip(res["results"]["history"], single["history"], strict=True):
            assert _close(h["losses"]["bpr"], r["losses"]["bpr"])
            assert _close(list(h["valid"].values()), list(r["valid"].values()))
        assert all(res["checks"]) and _close(res["params"], single_params, abs_=1e-5)
    assert ranks[0]["resumed"]["params"] == ranks[1]["resumed"]["params"]
    written = json.loads((out / "run-resumed" / "results.json").read_text())
    assert written["status"] == "finished" and written["epochs_run"] == 3


@pytest.mark.parametrize("case", [*(c[0] for c in CASES), "resumed"])
def test_parameters_identical_on_every_rank_after_every_step(two_ranks, case):
    ranks, _ = two_ranks
    checks = ranks[0][case]["checks"]
    epochs = len(ranks[0][case]["results"]["history"])
    assert len(checks) > epochs and all(checks)  # several steps in some epoch
    assert checks == ranks[1][case]["checks"]
    assert ranks[0][case]["params"] == ranks[1][case]["params"]  # bit for bit


def test_results_record_world_size_and_rank_zero_alone_writes(two_ranks, one_rank):
    ranks, out = two_ranks
    for seen in ranks:
        res = seen["lightgcn"]["results"]
        assert res["world_size"] == 2 and res["per_rank_batch"] == 49
        assert res["backend"] == "gloo"
    assert one_rank["lightgcn"][0]["world_size"] == 1
    assert one_rank["lightgcn"][0]["per_rank_batch"] == BATCH
    written = json.loads((out / "run-lightgcn" / "results.json").read_text())
    assert written["world_size"] == 2 and written["status"] == "finished"
    assert written["history"] == ranks[0]["lightgcn"]["results"]["history"]
    # the other rank wrote nothing: the only files are rank 0's run folder and the reports
    assert sorted(p.name for p in out.iterdir()) == [
        "rank0.json", "rank1.json", "run-lightgcn", "run-resumed"
    ]


def test_rank_zero_failure_reaches_the_other_rank(two_ranks):
    ranks, _ = two_ranks
    assert ranks[0]["failure"] == "OSError: disk full"
    assert ranks[1]["failure"].startswith("RankZeroError: rank 0 failed")
    assert "disk full" in ranks[1]["failure"]


def test_unused_parameters_keep_no_gradient_as_in_one_process(two_ranks):
    ranks, _ = two_ranks
    for seen in ranks:  # [a, b] per step: b used by both, by none, by rank 0 only
        assert seen["unused"] == [[[1, 1], [2, 2]], [[1, 1], None], [[1, 1], [1, 1]]]


def test_sharded_emb_loss_is_the_whole_batch_emb_loss(two_ranks):
    # rows 0-3 on rank 0, rows 4-5 on rank 1: ||X||_F + ||2X||_F over 6 rows, by hand
    x = torch.arange(12.0).view(6, 2)
    norm = float(x.square().sum().sqrt())  # sqrt(506)
    expected = (norm + 2 * norm) / 6
    ranks, _ = two_ranks
    for seen in ranks:
        assert seen["emb_loss"]["value"] == pytest.approx(expected, rel=1e-6)
    # d/dX of 3 ||X||_F / 6 = X / (2 ||X||_F). Each rank back-propagated the value (weight 1
    # per rank, i.e. W w_r summed over the ranks = W = 2) and reached its own rows; the mean
    # over the 2 ranks (what DDP applies) of the per-rank gradients is the whole batch's
    grads = [torch.tensor(seen["emb_loss"]["grad"]) for seen in ranks]
    assert torch.allclose((grads[0] + grads[1]) / 2, x / (2 * norm), rtol=1e-5)
    assert grads[0][4:].abs().sum() == 0 and grads[1][:4].abs().sum() == 0


def test_shard_slices_concatenate_to_the_batch_and_weights_sum_to_one():
    batch = torch.arange(21).view(3, 7)
    d = Distributed()
    assert not d.active and d.shard(batch) == (batch, 1.0)
    parts, weights = [], []
    for rank in range(3):
        d.active, d.world_size, d.rank = True, 3, rank
        local, w = d.shard(batch)
        parts.append(local)
        weights.append(w)
    assert torch.equal(torch.cat(parts, dim=1), batch)
    assert [p.size(1) for p in parts] == [3, 2, 2] and sum(weights) == pytest.approx(1.0)
    d.world_size, d.rank = 9, 8  # fewer rows than ranks: row 0 with weight 0
    local, w = d.shard(batch)
    assert w == 0.0 and torch.equal(local, batch[:, :1])


def test_environment_errors_name_torchrun(monkeypatch):
    from sea_pyg.train.distributed import init_from_env

    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'.*torchrun"):
        init_from_env()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="RANK is not.*torchrun --nproc_per_node"):
        init_from_env()


def test_more_cuda_processes_than_gpus_is_refused_before_nccl(monkeypatch):
    from sea_pyg.train.distributed import init_from_env

    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda *a: pytest.fail("reached set_device"))
    expected = r"LOCAL_RANK=1 needs GPU 1 .* shows 1 .*--nproc_per_node=1 or fewer, .*--device cpu"
    with pytest.raises(ValueError, match=expected):
        init_from_env("cuda")
