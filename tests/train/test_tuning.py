"""Studies on Optuna (:mod:`sea_pyg.train.tuning`): settings check, selection rule, the
bookkeeping of work / dead workers / retries on hand-built trials, the Trainer's epoch hook,
pruning, and a small grid study whose choice is checked against Optuna's API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from sea_pyg.models import build_model
from sea_pyg.train import TrainConfig, Trainer, seed_everything
from sea_pyg.train.search_space import SearchSpace
from sea_pyg.train.tuning import (
    SETTINGS_KEY,
    TrialRunner,
    TuningError,
    chosen_trial,
    grid_point_owner,
    has_work,
    load_study,
    open_study,
    process_alive,
    reclaim_dead_trials,
    retry_failed_trials,
    run_worker,
    settings_differences,
    trial_rows,
    worker_identity,
)

optuna = pytest.importorskip("optuna")
pytestmark = pytest.mark.usefixtures("one_thread")
S = optuna.trial.TrialState

SPACE = {"reg_weight": [1e-4, 1e-2], "embedding_dim": [8, 16]}
TRAIN = {
    "epochs": 3,
    "batch_size": 128,
    "lr": 0.01,
    "patience": 5,
    "seed": 1,
    "topk": (10, 20),
    "valid_metric": "recall@20",
}


def _settings(**over):
    out = {
        "model": "mf",
        "space": SearchSpace.parse(SPACE).to_json(),
        "sampler": "grid",
        "sampler_seed": 0,
        "pruner": "none",
        "prune_warmup": None,
        "prune_startup": None,
        "train": dict(TRAIN),
    }
    out.update(over)
    return out


def _runner(data, study_dir, space=SPACE, **train):
    def build(hparams):
        model, info, _ = build_model("mf", data, **hparams)
        return model, info

    return TrialRunner(data, SearchSpace.parse(space), build, {**TRAIN, **train}, study_dir)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ----------------------------------------------------------------------------- settings
def test_settings_differences_lists_each_changed_key():
    a = {"sampler": "grid", "train": {"epochs": 3, "lr": 0.01}, "space": {"x": {"choices": [1]}}}
    b = {"sampler": "tpe", "train": {"epochs": 4, "lr": 0.01}, "space": {"x": {"choices": [1]}}}
    assert settings_differences(a, b) == ['sampler: "grid" -> "tpe"', "train.epochs: 3 -> 4"]
    assert settings_differences(a, a) == []


def test_a_study_file_refuses_other_settings(tmp_path):
    study = open_study(tmp_path, _settings())
    assert study.user_attrs[SETTINGS_KEY]["sampler"] == "grid"
    open_study(tmp_path, _settings())  # the same settings: resumes
    other = _settings(sampler="random", train={**TRAIN, "epochs": 7})
    with pytest.raises(TuningError) as err:
        open_study(tmp_path, other)
    msg = str(err.value)
    assert "2 difference(s)" in msg and 'sampler: "grid" -> "random"' in msg
    assert "train.epochs: 3 -> 7" in msg and "another --study folder" in msg


def test_a_file_that_is_not_a_sea_pyg_study_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    optuna.create_study(
        study_name="someone-else", storage=f"sqlite:///{tmp_path / 'a' / 'study.db'}"
    )
    with pytest.raises(TuningError, match="holds other studies \\(someone-else\\)"):
        open_study(tmp_path / "a", _settings())
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "study.db").write_bytes(b"not a database" * 100)
    with pytest.raises(TuningError, match="cannot be opened as an Optuna study"):
        open_study(tmp_path / "b", _settings())
    with pytest.raises(TuningError, match="no study.db here"):
        load_study(tmp_path / "c")


# -------------------------------------------------------------------------------- selection
def _complete(study, number_value_test):
    dist = {"reg_weight": optuna.distributions.CategoricalDistribution((1e-4, 1e-2))}
    for value, test in number_value_test:
        study.add_trial(
            optuna.create_trial(
                state=S.COMPLETE,
                value=value,
                params={"reg_weight": 1e-4},
                distributions=dist,
                user_attrs={"test": {"recall@20": test}, "valid": {"recall@20": value}},
            )
        )


def test_selection_is_on_validation_and_mmrec_test_selection_only_by_name(tmp_path):
    study = open_study(tmp_path, _settings())
    with pytest.raises(TuningError, match="no complete trial"):
        chosen_trial(study)
    # valid-best is trial 1, test-best is trial 2
    _complete(study, [(0.10, 0.30), (0.20, 0.10), (0.15, 0.40)])
    best = chosen_trial(study, "valid")
    assert best.number == 1 == study.best_trial.number
    assert chosen_trial(study, "test").number == 2
    with pytest.raises(ValueError, match="'valid' or 'test'"):
        chosen_trial(study, "best")


# ------------------------------------------------------------------- work, deaths, retries
def _running(study, params, worker, grid_id=None):
    dist = {k: optuna.distributions.CategoricalDistribution(tuple(SPACE[k])) for k in params}
    system = {"grid_id": grid_id, "search_space": {}} if grid_id is not None else {}
    study.add_trial(
        optuna.create_trial(state=S.WAITING, params=params, distributions=dist, system_attrs=system)
    )
    trial = study.ask()  # pops it: RUNNING
    if worker is not None:
        trial.set_user_attr("worker", {**worker, "trial": trial.number})
    return trial


def test_process_alive():
    me = worker_identity()
    assert process_alive(me) is True
    assert process_alive({**me, "pid": _dead_pid()}) is False
    assert process_alive({**me, "start": "1"}) is False  # the pid reused by another process
    assert process_alive({**me, "host": socket.gethostname() + "-other"}) is None


def test_dead_workers_trials_are_failed_and_queued_again(tmp_path):
    study = open_study(tmp_path, _settings())
    me = worker_identity()
    dead = {**me, "pid": _dead_pid()}
    alive = _running(study, {"reg_weight": 1e-4, "embedding_dim": 8}, me, grid_id=0)
    lost = _running(study, {"reg_weight": 1e-2, "embedding_dim": 8}, dead, grid_id=1)
    # a retry that still carries a dead worker's record of another trial: not touched
    copied = _running(study, {"reg_weight": 1e-2, "embedding_dim": 16}, None, grid_id=2)
    copied.set_user_attr("worker", {**dead, "trial": lost.number})
    assert reclaim_dead_trials(study) == [lost.number]
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials[:3]] == [S.RUNNING, S.FAIL, S.RUNNING]
    retry = trials[-1]
    assert retry.state == S.WAITING and retry.params == trials[1].params
    assert retry.system_attrs["failed_trial"] == lost.number
    assert retry.system_attrs["grid_id"] == 1  # the grid sampler keeps its grid point
    assert "ended" in trials[1].user_attrs["failed"]
    assert reclaim_dead_trials(study) == []  # once
    assert alive.number == 0


def test_failed_trials_are_queued_again_once_unless_their_point_is_done(tmp_path):
    study = open_study(tmp_path, _settings())
    a = _running(study, {"reg_weight": 1e-4, "embedding_dim": 8}, None, grid_id=0)
    study.tell(a, state=S.FAIL)
    b = _running(study, {"reg_weight": 1e-2, "embedding_dim": 8}, None, grid_id=1)
    study.tell(b, state=S.FAIL)
    c = _running(study, {"reg_weight": 1e-2, "embedding_dim": 8}, None, grid_id=1)
    study.tell(c, 0.5)  # b's point was done again
    assert retry_failed_trials(study) == [a.number]
    assert retry_failed_trials(study) == []  # a is queued: not again


def test_has_work(tmp_path):
    study = open_study(tmp_path / "g", _settings())
    assert has_work(study)  # nothing started
    trials = [
        _running(study, {"reg_weight": r, "embedding_dim": d}, None, grid_id=i)
        for i, (r, d) in enumerate([(1e-4, 8), (1e-2, 8), (1e-4, 16)])
    ]
    assert has_work(study)  # grid point 3 not started
    last = _running(study, {"reg_weight": 1e-2, "embedding_dim": 16}, None, grid_id=3)
    assert not has_work(study)  # every point started (running counts)
    study.tell(last, state=S.FAIL)
    assert not has_work(study)  # a failed point waits for its retry (grid sampler's view)
    retry_failed_trials(study)
    assert has_work(study)  # the retry is queued
    assert not has_work(study, n_trials=3)  # three started already
    del trials
    random = open_study(tmp_path / "r", _settings(sampler="random"))
    _complete(random, [(0.1, 0.1), (0.2, 0.2)])
    assert has_work(random, n_trials=3) and not has_work(random, n_trials=2)


# ------------------------------------------------------------------------- trainer hook
def test_epoch_callback_sees_every_epoch_but_the_last_and_can_stop_training(tiny_data, tmp_path):
    def fit(out, callback, epochs=4, resume=False):
        seed_everything(0)
        model, info, _ = build_model("mf", tiny_data, embedding_dim=8)
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=128,
            lr=0.01,
            patience=10,
            seed=1,
            output_dir=str(out),
            resume=resume,
            progress=False,
            verbose=False,
        )
        return Trainer(model, tiny_data, cfg, model_info=info, epoch_callback=callback).fit()

    seen = []
    full = fit(tmp_path / "a", lambda tr, rec: seen.append((rec["epoch"], len(tr.history))))
    assert seen == [(0, 1), (1, 2), (2, 3)]  # not the last epoch (3)

    class Stop(Exception):
        pass

    def stop(tr, rec):
        if rec["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        fit(tmp_path / "b", stop)
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    assert saved["status"] == "interrupted" and saved["epochs_run"] == 2
    again = fit(tmp_path / "b", None, resume=True)  # resumes from epoch 2, exactly
    assert again["best_valid"] == full["best_valid"]


# ------------------------------------------------------------------------ studies, for real
def test_grid_study_chooses_optunas_best_trial_by_validation(tiny_data, tmp_path):
    study = open_study(tmp_path, _settings())
    ran = run_worker(study, _runner(tiny_data, tmp_path))
    assert ran == 4 and not has_work(study)
    trials = study.get_trials(deepcopy=False)
    assert sorted(json.dumps(t.params, sort_keys=True) for t in trials) == sorted(
        json.dumps(p, sort_keys=True) for p in SearchSpace.parse(SPACE).grid_points()
    )
    # every objective value is the trial's run folder's best validation value
    for t in trials:
        results = json.loads((tmp_path / t.user_attrs["run_dir"] / "results.json").read_text())
        assert t.value == results["best_valid"]["recall@20"]
        assert t.user_attrs["test"] == results["test"]
        assert t.intermediate_values == {
            h["epoch"]: h["valid"]["recall@20"] for h in results["history"]
        }
    # the chosen trial is Optuna's best trial in the SQLite file, the max of the values
    reloaded = load_study(tmp_path)
    best = chosen_trial(reloaded)
    assert best.number == reloaded.best_trial.number
    assert best.value == max(t.value for t in trials)
    rows = trial_rows(reloaded)
    assert [r["number"] for r in rows] == [0, 1, 2, 3]
    assert rows[best.number]["valid:recall@20"] == best.value
    # a second worker finds nothing to do and redoes nothing
    assert run_worker(open_study(tmp_path, _settings()), _runner(tiny_data, tmp_path)) == 0


def test_a_grid_point_two_workers_drew_is_trained_once(tiny_data, tmp_path):
    # Optuna's grid sampler can give a taken point to a second worker that asks at the same
    # moment; a trial asked after every point is taken is the same situation
    study = open_study(tmp_path, _settings())
    runner = _runner(tiny_data, tmp_path)
    run_worker(study, runner)
    before = {t.number: t.value for t in study.get_trials(deepcopy=False)}
    best = chosen_trial(study).number
    study.optimize(runner, n_trials=1, catch=())  # Optuna logs "re-evaluating a configuration"
    dup = study.get_trials(deepcopy=False)[-1]
    owner = dup.user_attrs["duplicate_of"]
    assert dup.number == 4 and dup.state == S.PRUNED
    assert study.get_trials(deepcopy=False)[owner].params == dup.params
    assert grid_point_owner(study, dup) == owner
    assert not (tmp_path / "trials" / "trial-0004").exists()  # nothing was trained
    assert {t.number: t.value for t in study.get_trials(deepcopy=False)[:4]} == before
    assert chosen_trial(load_study(tmp_path)).number == best
    assert trial_rows(study)[4]["duplicate_of"] == owner
    assert all(r["duplicate_of"] is None for r in trial_rows(study)[:4])


def test_median_pruner_stops_a_hopeless_trial(tiny_data, tmp_path):
    settings = _settings(
        space=SearchSpace.parse({"lr": [0.05, 1e-9]}).to_json(),
        sampler="random",
        pruner="median",
        prune_warmup=1,
        prune_startup=1,
        train={**TRAIN, "epochs": 6},
    )
    study = open_study(tmp_path, settings)
    study.enqueue_trial({"lr": 0.05})  # the good one first: the bad one has a median to beat
    study.enqueue_trial({"lr": 1e-9})
    run_worker(study, _runner(tiny_data, tmp_path, {"lr": [0.05, 1e-9]}, epochs=6), n_trials=2)
    good, bad = study.get_trials(deepcopy=False)
    assert good.state == S.COMPLETE and len(good.intermediate_values) == 6
    assert bad.state == S.PRUNED
    pruned_at = bad.user_attrs["pruned_at"]
    assert 1 <= pruned_at < 5 and max(bad.intermediate_values) == pruned_at
    assert bad.intermediate_values[pruned_at] < good.intermediate_values[pruned_at]
    results = json.loads((tmp_path / bad.user_attrs["run_dir"] / "results.json").read_text())
    assert results["status"] == "interrupted" and results["epochs_run"] == pruned_at + 1
    assert chosen_trial(study).number == good.number


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills a process")
def test_a_worker_killed_mid_trial_resumes_to_the_uninterrupted_study(tmp_path):
    """A worker process (the real CLI worker) kills itself with SIGKILL in the middle of the
    second trial (sea_pyg.io's crash hook, at its 520th of ~920 fault points); the same study
    resumed in this process ends with the same trials, values and choice as an uninterrupted
    study; finished trials are not redone and the killed trial's training resumes from its
    last epoch in its first attempt's run folder."""
    from sea_pyg.cli import main
    from sea_pyg.data import SyntheticPreset, make_synthetic

    preset = SyntheticPreset(
        name="unit",
        num_users=400,
        num_items=150,
        num_interactions=6000,
        feature_dims={"image": 32, "text": 16},
    )
    make_synthetic(preset, seed=0).to_mmrec(tmp_path / "unit", name="unit")
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps({"lr": [0.01, 0.03, 0.1]}))
    argv = [
        "tune",
        "--model",
        "mf",
        "--data",
        str(tmp_path / "unit"),
        "--space",
        str(space_file),
        "--epochs",
        "2",
        "--batch-size",
        "512",
        "--patience",
        "5",
        "--seed",
        "1",
        "--quiet",
        "--no-progress",
    ]
    # the uninterrupted study, in this process
    assert main([*argv, "--study", str(tmp_path / "a")]) == 0
    # the interrupted one: one worker process, killed by SIGKILL mid-study
    env = {
        **os.environ,
        "SEA_PYG_FAULT_AT": "520",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sea_pyg.cli",
            *argv,
            "--study",
            str(tmp_path / "b"),
            "--worker-index",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    before = load_study(tmp_path / "b").get_trials(deepcopy=False)
    killed = before[-1]
    done_before = {t.number for t in before if t.state == S.COMPLETE}
    assert killed.state == S.RUNNING and len(done_before) >= 1
    assert len(killed.intermediate_values) >= 1  # it was training
    mtimes = {
        n: os.stat(tmp_path / "b" / f"trials/trial-{n:04d}/results.json").st_mtime_ns
        for n in done_before
    }
    # resume: the same command
    assert main([*argv, "--study", str(tmp_path / "b")]) == 0
    a, b = load_study(tmp_path / "a"), load_study(tmp_path / "b")
    after = b.get_trials(deepcopy=False)
    assert after[killed.number].state == S.FAIL
    retry = [t for t in after if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1 and retry[0].user_attrs["run_dir"] == killed.user_attrs["run_dir"]
    resumed = json.loads(
        (tmp_path / "b" / retry[0].user_attrs["run_dir"] / "results.json").read_text()
    )
    # resumed after its last commit: the epochs it had reported (or one more, when the kill
    # fell between a commit and its report)
    n = len(killed.intermediate_values)
    assert len(resumed["resumes"]) == 1 and resumed["resumes"][0]["epoch"] in (n, n + 1)
    for n in done_before:  # finished trials untouched
        path = tmp_path / "b" / f"trials/trial-{n:04d}/results.json"
        assert os.stat(path).st_mtime_ns == mtimes[n]

    def by_params(study):
        return {
            json.dumps(t.params, sort_keys=True): t.value
            for t in study.get_trials(deepcopy=False)
            if t.state == S.COMPLETE
        }

    assert by_params(a) == by_params(b) and len(by_params(b)) == 3
    assert sum(t.state == S.COMPLETE for t in after) == 3
    assert chosen_trial(a).params == chosen_trial(b).params
    assert chosen_trial(a).value == chosen_trial(b).value
