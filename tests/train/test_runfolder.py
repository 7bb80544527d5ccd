"""The run folder: refusals, the lock, resume checks, finished runs, status, one-step commits."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from sea_pyg.data.mmrec import EDGE_TYPE
from sea_pyg.models import build_model
from sea_pyg.train import (
    RunFolderError,
    TrainConfig,
    Trainer,
    UnfinishedRunWarning,
    check_output_dir,
    load_model,
    run_status,
    seed_everything,
)
from sea_pyg.train.runfolder import COMMIT, RunFolder, read_results, resolve

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(out, **kw):
    base = dict(epochs=3, batch_size=64, lr=0.01, patience=3, seed=1, topk=(5, 10),
                valid_metric="recall@10", progress=False, verbose=False, output_dir=str(out))
    base.update(kw)
    return TrainConfig(**base)


def _trainer(data, out, model="mf", run_files=None, **kw):
    seed_everything(0)
    net, info, _ = build_model(model, data, embedding_dim=16)
    return Trainer(net, data, _cfg(out, **kw), model_info=info, run_files=run_files)


def _bytes(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"}


class _Stop(KeyboardInterrupt):
    pass


def _interrupt_at(monkeypatch, epoch, during=None):
    """Makes training raise (like Ctrl-C) when it starts ``epoch``; calls ``during(epoch)``."""
    original = Trainer.train_epoch

    def train_epoch(self, e):
        if e == epoch:
            if during is not None:
                during(self)
            raise _Stop
        return original(self, e)

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)


# ---- 1. a folder that holds a run; two runs at once -------------------------------------------
@pytest.mark.parametrize("present", ["results.json", "best.pt", "last.pt"])
def test_new_run_refuses_a_folder_holding_a_run(tiny_data, tmp_path, present):
    (tmp_path / present).write_bytes(b"x")
    for make in (lambda: _trainer(tiny_data, tmp_path), lambda: check_output_dir(tmp_path)):
        with pytest.raises(RunFolderError) as err:
            make()
        msg = str(err.value)
        assert str(tmp_path) in msg and present in msg
        assert "resume=True (--resume)" in msg and "(output_dir, --out)" in msg
        assert "overwrite=True (--overwrite)" in msg
    assert (tmp_path / present).read_bytes() == b"x"


def test_any_model_run_is_protected_and_overwrite_replaces_it(tiny_data, tmp_path):
    _trainer(tiny_data, tmp_path, model="lightgcn", epochs=1).fit()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"holds a training run \(model lightgcn, 1 epoch"):
        _trainer(tiny_data, tmp_path, model="mf")
    res = _trainer(tiny_data, tmp_path, model="mf", epochs=1, overwrite=True).fit()
    assert res["model"]["name"] == "mf"
    assert torch.load(tmp_path / "best.pt", weights_only=True)["model_info"]["name"] == "mf"
    assert (tmp_path / "notes.txt").read_text() == "mine"  # only the run's files go
    with pytest.raises(ValueError, match="resume=True .* and overwrite=True .* exclude"):
        _cfg(tmp_path, resume=True, overwrite=True)


def test_output_dir_that_is_a_file_or_under_one(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(RunFolderError, match="is a file: choose a folder for output_dir"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(RunFolderError, match=r"cannot be created: .*f is a file"):
        check_output_dir(tmp_path / "f" / "run")


def test_second_run_is_refused_while_the_first_holds_the_folder(tiny_data, tmp_path):
    first = RunFolder(tmp_path)
    first.claim()
    try:
        with pytest.raises(RunFolderError, match=r"in use by another training run \(pid"):
            _trainer(tiny_data, tmp_path, epochs=1).fit()
        assert run_status(tmp_path) is None and not (tmp_path / "results.json").exists()
    finally:
        first.release()
    assert _trainer(tiny_data, tmp_path, epochs=1).fit()["status"] == "finished"


def test_a_killed_holder_leaves_no_stale_lock(tiny_data, tmp_path):
    """A process holding the lock (flock, as RunFolder.claim takes it) is SIGKILLed: the next
    run gets the folder."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"fd = os.open({str(tmp_path / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "os.write(fd, b'pid %d' % os.getpid())\n"
         "print('locked', flush=True)\n"
         "time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=f"pid {holder.pid}"):
            _trainer(tiny_data, tmp_path, epochs=1).fit()
    finally:
        holder.kill()  # SIGKILL
        holder.wait()
    assert _trainer(tiny_data, tmp_path, epochs=1).fit()["status"] == "finished"


def test_run_files_are_written_after_the_claim(tiny_data, tmp_path):
    with pytest.raises(ValueError, match=r"run_files: 'results.json' is not allowed"):
        _trainer(tiny_data, tmp_path, run_files={"results.json": "{}"})
    with pytest.raises(ValueError, match=r"run_files: '../x' is not allowed"):
        _trainer(tiny_data, tmp_path, run_files={"../x": ""})
    first = RunFolder(tmp_path)
    first.claim()
    try:
        with pytest.raises(RunFolderError):
            _trainer(tiny_data, tmp_path, run_files={"config.yaml": "lr: 1\n"}).fit()
    finally:
        first.release()
    assert not (tmp_path / "config.yaml").exists()  # refused: nothing written
    _trainer(tiny_data, tmp_path, epochs=1, run_files={"config.yaml": "lr: 1\n"}).fit()
    assert (tmp_path / "config.yaml").read_text() == "lr: 1\n"


# ---- 2. resume checks what the checkpoint was trained with --------------------------------------
def _changed_data(data, how):
    data = data.clone()
    store = data[EDGE_TYPE]
    if how == "features x5":
        data["item"].x_image = data["item"].x_image * 5
    elif how == "rows permuted":
        perm = torch.arange(data["item"].num_nodes).roll(1)
        data["item"].x_text = data["item"].x_text[perm]
    elif how == "test edges":
        store.test_edge_index = store.test_edge_index[:, 1:]
    return data


@pytest.mark.parametrize(
    "change, listed",
    [
        (dict(lr=0.02), "lr: 0.01 -> 0.02"),
        (dict(seed=2), "seed: 1 -> 2"),
        (dict(batch_size=32), "batch_size: 64 -> 32"),
        (dict(weight_decay=0.1), "weight_decay: 0.0 -> 0.1"),
        (dict(patience=7), "patience: 3 -> 7"),
        (dict(valid_metric="ndcg@10"), "valid_metric: 'recall@10' -> 'ndcg@10'"),
        (dict(topk=(5, 10, 20)), "topk: [5, 10] -> [5, 10, 20]"),
        (dict(model="lightgcn"), "model: 'mf' -> 'lightgcn'"),
        (dict(data="features x5"), "data: item features 'image' (values or row order)"),
        (dict(data="rows permuted"), "data: item features 'text' (values or row order)"),
        (dict(data="test edges"), "data: test edges"),
    ],
)
def test_resume_refuses_each_difference_and_names_it(tiny_data, tmp_path, change, listed):
    _trainer(tiny_data, tmp_path, epochs=1).fit()
    before = _bytes(tmp_path)
    change = dict(change)
    data = _changed_data(tiny_data, change.pop("data", None))
    with pytest.raises(RunFolderError) as err:
        _trainer(data, tmp_path, resume=True, epochs=2, **change).fit()
    msg = str(err.value)
    assert f"cannot resume from {tmp_path / 'last.pt'}" in msg and listed in msg
    key = listed.split(":")[0]
    assert f"allow_changes=('{key}',) (--allow-changes {key})" in msg
    assert _bytes(tmp_path) == before  # nothing written


def test_resume_lists_all_differences_and_accepts_allowed_ones(tiny_data, tmp_path):
    _trainer(tiny_data, tmp_path, epochs=1).fit()
    net, info, _ = build_model("mf", tiny_data, embedding_dim=16, reg_weight=0.5)
    cfg = _cfg(tmp_path, resume=True, epochs=2, lr=0.02, seed=5)
    with pytest.raises(RunFolderError) as err:
        Trainer(net, tiny_data, cfg, model_info=info).fit()
    assert "seed: 1 -> 5" in str(err.value) and "lr: 0.01 -> 0.02" in str(err.value)
    assert "model.reg_weight: 0.0001 -> 0.5" in str(err.value)
    assert "allow_changes=('model.reg_weight', 'seed', 'lr')" in str(err.value)
    cfg = _cfg(tmp_path, resume=True, epochs=2, lr=0.02, seed=5,
               allow_changes=("model", "seed", "lr"))
    res = Trainer(net, tiny_data, cfg, model_info=info).fit()
    assert res["epochs_run"] == 2
    assert res["resumes"] == [{"epoch": 1, "changes": {
        "model.reg_weight": "0.0001 -> 0.5", "seed": "1 -> 5", "lr": "0.01 -> 0.02",
        "epochs": "1 -> 2"}}]
    with pytest.raises(ValueError, match=r"allow_changes \(--allow-changes\): unknown \['lrr'\]"):
        _cfg(tmp_path, allow_changes=("lrr",))


def test_resume_may_not_lower_the_cap_below_the_epochs_run(tiny_data, tmp_path, monkeypatch):
    _interrupt_at(monkeypatch, 2)
    with pytest.raises(_Stop):
        _trainer(tiny_data, tmp_path, epochs=4).fit()
    with pytest.raises(RunFolderError, match=r"epochs=1 \(--epochs\): it has already trained 2"):
        _trainer(tiny_data, tmp_path, epochs=1, resume=True).fit()


# ---- 3. a finished run is left alone -------------------------------------------------------------
@pytest.mark.parametrize("how", ["epoch cap", "early stop"])
def test_resume_of_a_finished_run_changes_nothing(tiny_data, tmp_path, capsys, how):
    kw = dict(epochs=2) if how == "epoch cap" else dict(epochs=50, patience=0, lr=1e-6)
    first = _trainer(tiny_data, tmp_path, **kw).fit()
    assert first["stop_reason"].startswith(how)
    before = _bytes(tmp_path)
    tr = _trainer(tiny_data, tmp_path, resume=True, verbose=True,
                  run_files={"config.yaml": "x"}, **kw)
    res = tr.fit()
    assert tr.resumed == "finished" and res == first
    assert "already finished" in capsys.readouterr().out
    assert _bytes(tmp_path) == before  # no epoch, no new best.pt, no config.yaml
    if how == "early stop":  # a larger cap does not reopen an early-stopped run
        tr = _trainer(tiny_data, tmp_path, resume=True, epochs=80, patience=0, lr=1e-6)
        assert tr.fit() == first and _bytes(tmp_path) == before


def test_a_raised_cap_continues_a_run_finished_at_its_cap(tiny_data, tmp_path):
    full = _trainer(tiny_data, tmp_path / "full", epochs=4).fit()
    _trainer(tiny_data, tmp_path / "two", epochs=2).fit()
    res = _trainer(tiny_data, tmp_path / "two", epochs=4, resume=True).fit()
    strip = lambda h: {k: v for k, v in h.items() if not k.endswith("_time")}  # noqa: E731
    assert [strip(h) for h in res["history"]] == [strip(h) for h in full["history"]]
    assert res["test"] == full["test"] and res["resumes"][0]["changes"] == {"epochs": "2 -> 4"}


# ---- 5. status -----------------------------------------------------------------------------------
def test_status_running_interrupted_finished(tiny_data, tmp_path, monkeypatch):
    seen = {}

    def during(trainer):
        seen["status"] = run_status(tmp_path)
        with pytest.warns(UnfinishedRunWarning, match="still training|running after 2 epoch"):
            seen["model"] = load_model(tmp_path, tiny_data)

    _interrupt_at(monkeypatch, 2, during)
    with pytest.raises(_Stop):
        _trainer(tiny_data, tmp_path, epochs=4).fit()
    assert seen["status"] == {"status": "running", "epochs_run": 2, "best_epoch":
                              seen["status"]["best_epoch"], "stop_reason": None}
    assert seen["model"].checkpoint["status"]["status"] == "running"
    res = read_results(tmp_path)
    assert (res["status"], res["last_epoch"], res["stop_reason"]) == ("interrupted", 1, None)
    with pytest.warns(UnfinishedRunWarning, match=r"interrupted after 2 epoch.*--resume"):
        load_model(tmp_path, tiny_data)
    monkeypatch.undo()
    res = _trainer(tiny_data, tmp_path, epochs=4, resume=True).fit()
    assert (res["status"], res["last_epoch"], res["stop_reason"]) == ("finished", 3, "epoch cap")
    assert run_status(tmp_path)["status"] == "finished"


def test_a_killed_run_reads_as_interrupted(tiny_data, tmp_path):
    _trainer(tiny_data, tmp_path, epochs=1).fit()
    res = read_results(tmp_path)
    res["status"] = "running"  # what a SIGKILLed run leaves; its lock died with it
    (tmp_path / "results.json").write_text(json.dumps(res))
    assert run_status(tmp_path)["status"] == "interrupted"
    folder = RunFolder(tmp_path)
    folder.claim(resume=True)
    try:
        assert run_status(tmp_path)["status"] == "running"  # a live holder
    finally:
        folder.release()


def test_stop_reason_epoch_cap_only_when_reached(tiny_data, tmp_path):
    res = _trainer(tiny_data, tmp_path / "a", epochs=50, patience=0, lr=1e-6).fit()
    assert res["epochs_run"] < 50 and res["stop_reason"].startswith("early stop")
    res = _trainer(tiny_data, tmp_path / "b", epochs=2, patience=10).fit()
    assert res["stop_reason"] == "epoch cap" and res["epochs_run"] == 2


# ---- 4. one consistent state, switched in one step -----------------------------------------------
def test_commit_switches_all_files_or_none(tmp_path):
    folder = RunFolder(tmp_path)
    folder.claim()
    try:
        folder.commit({n: _writes(f"old {n}") for n in ("best.pt", "last.pt", "results.json")})

        def broken(tmp):
            with open(tmp, "w") as f:
                f.write("half")
            raise OSError("disk on fire")

        with pytest.raises(OSError, match="disk on fire"):
            folder.commit({"best.pt": _writes("new"), "last.pt": broken,
                           "results.json": _writes("new")})
        assert {p.name for p in tmp_path.iterdir()} == {".lock", "best.pt", "last.pt",
                                                       "results.json"}
        assert (tmp_path / "best.pt").read_text() == "old best.pt"
    finally:
        folder.release()


def _writes(text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    return write


def test_readers_follow_an_interrupted_commit_and_the_next_claim_finishes_it(tiny_data, tmp_path):
    """A crash after the commit record, before the renames: the .next files are the truth."""
    _trainer(tiny_data, tmp_path / "a", epochs=1).fit()
    _trainer(tiny_data, tmp_path / "b", epochs=3).fit()
    run = tmp_path / "a"
    for name in ("best.pt", "results.json"):  # the state of run b, committed but not renamed
        (run / f".{name}.next").write_bytes((tmp_path / "b" / name).read_bytes())
    (run / COMMIT).write_text(json.dumps({"files": ["best.pt", "results.json"]}))
    assert resolve(run, "best.pt").name == ".best.pt.next"
    assert read_results(run)["epochs_run"] == 3
    model = load_model(run, tiny_data)
    assert model.checkpoint["path"].endswith(".best.pt.next")
    folder = RunFolder(run)
    folder.claim(resume=True)
    folder.release()
    assert not (run / COMMIT).exists() and not list(run.glob(".*.next"))
    assert (run / "best.pt").read_bytes() == (tmp_path / "b" / "best.pt").read_bytes()


def test_a_commit_never_finished_is_discarded_and_temporaries_removed(tmp_path):
    (tmp_path / "best.pt").write_text("old")
    (tmp_path / ".best.pt.next").write_text("new, never committed")
    (tmp_path / ".last.pt.ab12cd34.tmp").write_text("half a checkpoint")
    (tmp_path / ".hidden").write_text("not ours")
    folder = RunFolder(tmp_path)
    folder.claim(resume=True)
    folder.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", ".lock", "best.pt"]
    assert (tmp_path / "best.pt").read_text() == "old"


# ---- 8. checkpoint_every ------------------------------------------------------------------------
def test_checkpoint_every_commits_every_n_epochs_and_at_the_end(tiny_data, tmp_path, monkeypatch):
    full = _trainer(tiny_data, tmp_path / "every1", epochs=7, patience=7).fit()
    commits = []
    original = RunFolder.commit

    def commit(self, files):
        original(self, files)
        last = torch.load(self.path / "last.pt", weights_only=True)
        best = torch.load(self.path / "best.pt", weights_only=True)
        res = read_results(self.path)
        assert last["best_epoch"] == best["epoch"] == res["best_epoch"]  # one state
        assert res["epochs_run"] == last["epoch"]
        commits.append((last["epoch"], "best.pt" in files))

    monkeypatch.setattr(RunFolder, "commit", commit)
    res = _trainer(tiny_data, tmp_path / "every3", epochs=7, patience=7,
                   checkpoint_every=3).fit()
    assert [c[0] for c in commits] == [3, 6, 7]
    strip = lambda h: {k: v for k, v in h.items() if not k.endswith("_time")}  # noqa: E731
    assert [strip(h) for h in res["history"]] == [strip(h) for h in full["history"]]
    a = torch.load(tmp_path / "every1" / "best.pt", weights_only=True)
    b = torch.load(tmp_path / "every3" / "best.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] and all(torch.equal(a["model"][k], b["model"][k])
                                            for k in a["model"])
    with pytest.raises(ValueError, match=r"checkpoint_every \(--checkpoint-every\) must be"):
        _cfg(tmp_path, checkpoint_every=0)


def test_stale_lock_file_alone_is_not_a_run(tiny_data, tmp_path):
    (tmp_path / ".lock").write_text("pid 1 long ago")
    start = time.perf_counter()
    assert _trainer(tiny_data, tmp_path, epochs=1).fit()["status"] == "finished"
    assert time.perf_counter() - start < 30
