"""Hyper-parameter studies on Optuna: one SQLite file per study, several worker processes,
resume after a crash, pruning from per-epoch validation values, selection on validation.

**A study folder** ``DIR`` holds ``study.db`` (Optuna's RDB storage on SQLite: every trial,
its parameters, per-epoch validation values, state and results) and ``trials/trial-NNNN/``,
the run folder of each trial (:class:`~sea_pyg.train.Trainer`'s ``results.json``,
``best.pt``, ``last.pt``). The settings that define the study (model, space, sampler, pruner,
training settings, data fingerprint) are recorded in the study (:data:`SETTINGS_KEY`); opening
it with other settings is refused with the list of differences (:class:`TuningError`).

**Trials.** Each trial trains one configuration with the MMRec protocol (early stopping on the
validation metric) and its objective value is the best validation value of the run
(``results["best_valid"][valid_metric]``). The test metrics at the best validation epoch are
stored with the trial (user attribute ``test``) but never used to choose, unless the report
asks for MMRec's test-based choice (:func:`chosen_trial` with ``rule="test"``), whose every
output says so.

**Crashes and resume.** A trial's worker records itself (host, pid, process start time) on
the trial. A trial left ``RUNNING`` by a worker process that no longer exists on this host
(``kill -9``, a power cut of the worker) is failed and queued again with the same parameters
(Optuna's :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`, which keeps the grid
point of the grid sampler); Optuna's heartbeat does the same, after its grace period, for
workers whose process cannot be checked. The retried trial trains in the first attempt's run
folder and resumes its training from ``last.pt`` (exactly, see
:class:`~sea_pyg.train.Trainer`). Finished trials are never redone.

**Workers.** :func:`run_worker` runs trials until the study has none left to start: every grid
point started (grid sampler) or ``n_trials`` trials finished or running (random, TPE), and no
trial queued. Several processes may run it on one study at once; the SQLite file coordinates
them.

Optuna is an optional dependency (``pip install "sea-pyg[tune]"``).
"""

from __future__ import annotations

import json
import math
import os
import socket
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch_geometric.data import HeteroData

from sea_pyg.models.base import Recommender
from sea_pyg.train.config import TrainConfig
from sea_pyg.train.search_space import TUNABLE_TRAINING, SearchSpace
from sea_pyg.train.trainer import Trainer, seed_everything

__all__ = [
    "STUDY_FILE",
    "TRIALS_DIR",
    "SETTINGS_KEY",
    "DATA_KEY",
    "SAMPLERS",
    "PRUNERS",
    "TuningError",
    "require_optuna",
    "study_storage",
    "open_study",
    "load_study",
    "settings_differences",
    "check_study_data",
    "study_settings",
    "TrialRunner",
    "run_worker",
    "has_work",
    "grid_point_owner",
    "reclaim_dead_trials",
    "retry_failed_trials",
    "trial_target",
    "chosen_trial",
    "trial_rows",
    "worker_identity",
    "process_alive",
]

STUDY_FILE = "study.db"
TRIALS_DIR = "trials"
#: Name of the (only) study in a ``study.db``.
STUDY_NAME = "sea-pyg"
#: Study user attribute holding the settings that define the study.
SETTINGS_KEY = "sea_pyg_settings"
#: Study user attribute holding the dataset fingerprint.
DATA_KEY = "sea_pyg_data"
SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "hyperband")
#: Optuna heartbeat: seconds between beats of a running trial, and the silence after which a
#: trial counts as stale (for workers this host cannot check; local ones are checked at once).
HEARTBEAT_INTERVAL = 30
GRACE_PERIOD = 300

INSTALL_HINT = 'pip install "sea-pyg[tune]"'


class TuningError(ValueError):
    """A study that cannot be opened or run as asked; the message says why and what to do."""


def require_optuna():
    """The ``optuna`` module, or an ``ImportError`` that says how to install it."""
    try:
        import optuna
    except ImportError as exc:
        raise ImportError(
            f"sea-pyg tune needs Optuna, which is not installed: {INSTALL_HINT}"
        ) from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# ------------------------------------------------------------------------------ processes
def _proc_stat(pid: int) -> tuple[str, str] | None:
    """``(state, start time)`` of process ``pid`` from ``/proc`` (``None``: not readable)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], fields[19]


def worker_identity() -> dict[str, Any]:
    """This process as a trial records it: host name, pid and start time (Linux)."""
    pid = os.getpid()
    stat = _proc_stat(pid)
    return {"host": socket.gethostname(), "pid": pid, "start": stat[1] if stat else None}


def process_alive(identity: Mapping[str, Any]) -> bool | None:
    """Whether the worker ``identity`` (:func:`worker_identity`) still runs: ``None`` when it
    cannot be told (another host). A zombie, or another process that reuses the pid, is dead."""
    if identity.get("host") != socket.gethostname():
        return None
    pid = int(identity["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc: the pid exists
    state, start = stat
    if state == "Z":
        return False
    return identity.get("start") in (None, start)


# --------------------------------------------------------------------------------- studies
def study_storage(study_dir: str | os.PathLike):
    """Optuna's RDB storage on ``study_dir/study.db`` (created if needed), with heartbeats and
    retries of stale trials."""
    optuna = require_optuna()
    path = Path(study_dir).resolve() / STUDY_FILE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback()
            return optuna.storages.RDBStorage(
                f"sqlite:///{path}",
                engine_kwargs={"connect_args": {"timeout": 120}},
                heartbeat_interval=HEARTBEAT_INTERVAL,
                grace_period=GRACE_PERIOD,
                heartbeat_stale_trial_callback=retry,
            )
    except Exception as exc:  # sqlalchemy errors: not a database, locked, ...
        raise TuningError(
            f"--study {Path(study_dir)}: {path.name} cannot be opened as an Optuna study "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]}); choose another --study folder"
        ) from None


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def settings_differences(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"key: saved -> new"`` for every setting that differs (nested keys dotted)."""
    a, b = _flatten(json.loads(json.dumps(saved))), _flatten(json.loads(json.dumps(new)))
    return [
        f"{k}: {json.dumps(a.get(k))} -> {json.dumps(b.get(k))}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def _sampler(settings: Mapping[str, Any], space: SearchSpace, worker: int, trials: int):
    optuna = require_optuna()
    kind, seed = settings["sampler"], int(settings["sampler_seed"])
    if kind == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    # a seed per worker and per start, so that workers and resumed runs do not repeat
    # one another's draws
    seed = (seed * 1_000_003 + worker * 7_919 + trials) % (2**32)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(settings: Mapping[str, Any]):
    optuna = require_optuna()
    kind = settings["pruner"]
    warmup = int(settings.get("prune_warmup") or 0)
    if kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(settings.get("prune_startup") or 0), n_warmup_steps=warmup
        )
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, warmup), max_resource=int(settings["train"]["epochs"])
        )
    return optuna.pruners.NopPruner()


def _check_settings(settings: Mapping[str, Any]) -> None:
    for key, allowed in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
        if settings.get(key) not in allowed:
            raise TuningError(f"{key} must be one of {list(allowed)}, got {settings.get(key)!r}")


def open_study(study_dir: str | os.PathLike, settings: Mapping[str, Any], worker: int = 0):
    """The study in ``study_dir`` (created with ``settings`` if there is none).

    Args:
        study_dir: The study folder (created).
        settings: JSON-able settings that define the study; must hold ``space`` (a
            :meth:`SearchSpace.to_json`), ``sampler``, ``sampler_seed``, ``pruner`` and
            ``train`` (with ``epochs`` and ``valid_metric``).
        worker: This process's worker index (seeds the random and TPE samplers).

    Raises:
        TuningError: the folder's study was made with other settings (the differences are
            listed), or its file is not an Optuna study of sea-pyg.
    """
    optuna = require_optuna()
    _check_settings(settings)
    folder = Path(study_dir)
    if folder.exists() and not folder.is_dir():
        raise TuningError(f"--study {folder} is a file; give a folder")
    folder.mkdir(parents=True, exist_ok=True)
    storage = study_storage(folder)
    names = [s.study_name for s in storage.get_all_studies()]
    if names and STUDY_NAME not in names:
        raise TuningError(
            f"--study {folder}: {STUDY_FILE} holds other studies ({', '.join(names)}), not "
            "one made by sea-pyg tune; choose another --study folder"
        )
    space = SearchSpace.parse(settings["space"])
    existing = (
        len(storage.get_all_trials(storage.get_study_id_from_name(STUDY_NAME))) if names else 0
    )
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        sampler=_sampler(settings, space, worker, existing),
        pruner=_pruner(settings),
    )
    plain = json.loads(json.dumps(settings))
    saved = study.user_attrs.get(SETTINGS_KEY)
    if saved is None:
        study.set_user_attr(SETTINGS_KEY, plain)
        saved = study.user_attrs.get(SETTINGS_KEY)
    diffs = settings_differences(saved, plain)
    if diffs:
        raise TuningError(
            f"--study {folder} holds a study made with other settings ({len(diffs)} "
            f"difference(s): {'; '.join(diffs)}). Use another --study folder for a new study, "
            "or the study's own settings to resume it"
        )
    return study


def check_study_data(study, fingerprint: Mapping[str, Any], where: str) -> None:
    """Records the dataset fingerprint in a new study; refuses other data for an old one.

    Raises:
        TuningError: the study was made on other data (the differences are listed).
    """
    plain = json.loads(json.dumps(fingerprint))
    saved = study.user_attrs.get(DATA_KEY)
    if saved is None:
        study.set_user_attr(DATA_KEY, plain)
        return
    diffs = settings_differences(saved, plain)
    if diffs:
        raise TuningError(
            f"--study {where} holds a study made on other data ({'; '.join(diffs)}); use "
            "another --study folder, or the study's data to resume it"
        )


def load_study(study_dir: str | os.PathLike):
    """An existing study (to read: tables, figures), without checking settings.

    Raises:
        TuningError: no ``study.db`` made by sea-pyg tune in ``study_dir``.
    """
    optuna = require_optuna()
    path = Path(study_dir) / STUDY_FILE
    if not path.is_file():
        raise TuningError(
            f"{study_dir}: no {STUDY_FILE} here; give a folder made by `sea-pyg tune --study DIR`"
        )
    storage = study_storage(study_dir)
    names = [s.study_name for s in storage.get_all_studies()]
    if STUDY_NAME not in names:
        raise TuningError(f"{path} holds no study made by sea-pyg tune")
    return optuna.load_study(study_name=STUDY_NAME, storage=storage)


def study_settings(study) -> dict[str, Any]:
    """The settings the study was made with."""
    return dict(study.user_attrs.get(SETTINGS_KEY) or {})


# ------------------------------------------------------------------------ trial bookkeeping
def _states():
    return require_optuna().trial.TrialState


def trial_target(study) -> int:
    """How many trials the study runs: ``settings["trials"]`` if given, else the grid size."""
    settings = study_settings(study)
    if settings.get("trials"):
        return int(settings["trials"])
    return SearchSpace.parse(settings["space"]).grid_size()


def _grid_ids(trials, states) -> set[int]:
    return {
        t.system_attrs["grid_id"]
        for t in trials
        if t.state in states and "grid_id" in t.system_attrs
    }


def grid_point_owner(study, trial) -> int | None:
    """The number of an earlier trial that already holds ``trial``'s grid point (finished,
    pruned or running), or ``None``.

    Optuna's grid sampler can hand the last free point to two workers that ask at the same
    moment (its documentation says so); the later trial is then a duplicate, which
    :class:`TrialRunner` ends at once instead of training it again. A retry of a failed trial
    keeps its point, but the failed first attempt does not hold it.
    """
    s = _states()
    gid = study._storage.get_trial_system_attrs(trial._trial_id).get("grid_id")
    if gid is None:
        return None
    owners = [
        t.number
        for t in study.get_trials(deepcopy=False, states=(s.COMPLETE, s.PRUNED, s.RUNNING))
        if t.number < trial.number and t.system_attrs.get("grid_id") == gid
        and "duplicate_of" not in t.user_attrs
    ]
    return min(owners) if owners else None


def has_work(study, n_trials: int | None = None) -> bool:
    """Whether a worker has a trial to start: fewer than ``n_trials`` (if given) trials are
    finished or running, and one is queued (``WAITING``: a retry), or (grid sampler) a grid
    point has not been started, or (random, TPE) always."""
    s = _states()
    trials = study.get_trials(deepcopy=False)
    settings = study_settings(study)
    n_trials = n_trials or settings.get("trials")
    started = sum(t.state in (s.COMPLETE, s.PRUNED, s.RUNNING) for t in trials)
    if n_trials is not None and started >= int(n_trials):
        return False
    if any(t.state == s.WAITING for t in trials):
        return True
    if settings["sampler"] == "grid":
        size = SearchSpace.parse(settings["space"]).grid_size()
        touched = _grid_ids(trials, (s.COMPLETE, s.PRUNED, s.RUNNING, s.FAIL))
        return len(touched) < size
    return True


def _retry(study, trial) -> None:
    """Queues ``trial``'s parameters again (Optuna's retry of stale trials: the copy keeps
    the grid point and names the first attempt in ``system_attrs["failed_trial"]``)."""
    optuna = require_optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, trial)


def reclaim_dead_trials(study) -> list[int]:
    """Fails every ``RUNNING`` trial whose worker process is gone (checked on this host) and
    queues its parameters again; returns the failed trials' numbers."""
    optuna = require_optuna()
    s = _states()
    storage = study._storage
    out = []
    for t in study.get_trials(deepcopy=False, states=(s.RUNNING,)):
        who = t.user_attrs.get("worker")
        if not who or who.get("trial") != t.number or process_alive(who) is not False:
            continue
        try:
            storage.set_trial_user_attr(
                t._trial_id, "failed", f"its worker process (pid {who.get('pid')}) ended"
            )
            if not storage.set_trial_state_values(t._trial_id, state=s.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        _retry(study, storage.get_trial(t._trial_id))
        out.append(t.number)
    return out


def retry_failed_trials(study) -> list[int]:
    """Queues again every failed trial whose parameters no other trial holds (finished,
    running or queued): what a resume does for the trials of a crashed run. Returns their
    numbers."""
    s = _states()
    trials = study.get_trials(deepcopy=False)

    def key(t) -> str:
        return json.dumps(t.params, sort_keys=True)

    held = {key(t) for t in trials if t.state in (s.COMPLETE, s.PRUNED, s.RUNNING, s.WAITING)}
    out = []
    for t in trials:
        if t.state == s.FAIL and key(t) not in held and t.params:
            _retry(study, t)
            held.add(key(t))
            out.append(t.number)
    return out


def _root_number(study, number: int) -> int:
    """The number of the first attempt of trial ``number`` (itself unless it is a retry)."""
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            return int(t.system_attrs.get("failed_trial", number))
    return number


# ---------------------------------------------------------------------------------- trials
@dataclass
class TrialRunner:
    """The objective of a study: trains one trial's configuration, returns its best validation
    value.

    Args:
        data: The dataset.
        space: The search space.
        build: ``build(hparams) -> (model, model_info)``: the model for the trial's model
            hyper-parameters (the caller's registry lookup; ``train/`` knows no model list).
            Called after :func:`~sea_pyg.train.seed_everything` with the training seed, inside
            :meth:`TrainConfig.knn_scope <sea_pyg.train.TrainConfig.knn_scope>`.
        train_config: :class:`TrainConfig` arguments shared by all trials (the trial's
            :data:`~sea_pyg.train.search_space.TUNABLE_TRAINING` values override them).
        study_dir: The study folder (trial run folders go to ``study_dir/trials``).
        run_files: ``run_files(model_info, config) -> {name: text}``: extra files for each
            trial's run folder (the CLI writes the trial's ``config.yaml``).
    """

    data: HeteroData
    space: SearchSpace
    build: Callable[[dict[str, Any]], tuple[Recommender, dict[str, Any]]]
    train_config: Mapping[str, Any]
    study_dir: str | os.PathLike
    run_files: Callable[[dict[str, Any], TrainConfig], dict[str, str]] | None = None
    valid_metric: str = field(init=False)

    def __post_init__(self) -> None:
        self.valid_metric = TrainConfig(**self.train_config).valid_metric

    def __call__(self, trial) -> float:
        optuna = require_optuna()
        number = trial.number
        trial.set_user_attr("worker", {**worker_identity(), "trial": number})
        root = _root_number(trial.study, number)
        run_dir = Path(self.study_dir) / TRIALS_DIR / f"trial-{root:04d}"
        trial.set_user_attr("run_dir", str(Path(TRIALS_DIR) / run_dir.name))
        params = self.space.suggest(trial)
        owner = grid_point_owner(trial.study, trial)
        if owner is not None:  # the grid sampler's race: this point is already taken
            trial.set_user_attr("duplicate_of", owner)
            raise optuna.TrialPruned(f"its grid point is already trial {owner}'s; not trained")
        training = {k: v for k, v in params.items() if k in TUNABLE_TRAINING}
        hparams = {k: v for k, v in params.items() if k not in TUNABLE_TRAINING}
        config = TrainConfig(
            **{
                **self.train_config,
                **training,
                "output_dir": str(run_dir),
                "resume": True,
                "overwrite": False,
                "verbose": False,
                "progress": False,
            }
        )
        seed_everything(config.seed)
        with config.knn_scope():  # the model's k-NN graphs with config.knn_backend
            model, info = self.build(hparams)
        files = self.run_files(info, config) if self.run_files else None
        metric = self.valid_metric
        reported: set[int] = set()

        def report(trainer: Trainer) -> None:
            for rec in trainer.history:  # validated epochs (not a pre-training stage's)
                if rec["epoch"] not in reported and "valid" in rec:
                    trial.report(float(rec["valid"][metric]), int(rec["epoch"]))
                    reported.add(rec["epoch"])

        def on_epoch(trainer: Trainer, record: dict[str, Any]) -> None:
            report(trainer)
            if "valid" in record and trial.should_prune():
                trial.set_user_attr("pruned_at", int(record["epoch"]))
                self._record(trial, trainer.results())
                raise optuna.TrialPruned(
                    f"validation {metric} {record['valid'][metric]:.4f} after epoch "
                    f"{record['epoch']}"
                )

        trainer = Trainer(
            model, self.data, config, model_info=info, run_files=files, epoch_callback=on_epoch
        )
        results = trainer.fit()
        report(trainer)
        self._record(trial, results)
        return float(results["best_valid"][metric])

    @staticmethod
    def _record(trial, results: Mapping[str, Any]) -> None:
        history = results.get("history") or []
        seconds = sum(
            h.get("train_time", 0.0) + h.get("eval_time", 0.0) + h.get("test_time", 0.0)
            for h in history
        )
        trial.set_user_attr("valid", dict(results.get("best_valid") or {}))
        trial.set_user_attr("test", dict(results.get("test") or {}))
        trial.set_user_attr("best_epoch", int(results.get("best_epoch", -1)))
        trial.set_user_attr("epochs", int(results.get("epochs_run", len(history))))
        trial.set_user_attr("stop_reason", results.get("stop_reason"))
        trial.set_user_attr("seconds", round(float(seconds), 3))
        trial.set_user_attr("model", dict(results.get("model") or {}))


def run_worker(
    study,
    objective: Callable,
    n_trials: int | None = None,
    on_trial: Callable[[Any], None] | None = None,
) -> int:
    """Runs trials of ``study`` one at a time until :func:`has_work` says none is left to
    start; first (and before each trial) fails and requeues trials whose worker died
    (:func:`reclaim_dead_trials`). Returns the number of trials this worker ran.

    An exception of the objective (other than pruning) fails the trial and ends the worker
    with that exception.
    """
    ran = 0
    callbacks = [lambda st, t: on_trial(t)] if on_trial else []
    while True:
        reclaim_dead_trials(study)
        if not has_work(study, n_trials):
            return ran
        study.optimize(
            objective,
            n_trials=1,
            callbacks=callbacks,
            catch=(),
            gc_after_trial=False,
            show_progress_bar=False,
        )
        ran += 1


# --------------------------------------------------------------------------------- reports
def chosen_trial(study, rule: str = "valid"):
    """The trial a study reports.

    Args:
        rule: ``"valid"``: Optuna's best trial (highest objective, i.e. best validation value,
            among complete trials). ``"test"``: MMRec's ``quick_start`` choice, the complete
            trial with the highest *test* value of the validation metric at its best
            validation epoch (test-set selection: for reproducing published numbers only;
            ties go to the lower trial number).

    Raises:
        TuningError: no trial has completed.
    """
    s = _states()
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == s.COMPLETE]
    if not complete:
        raise TuningError("the study has no complete trial yet; run `sea-pyg tune` on it")
    if rule == "valid":
        return study.best_trial
    if rule != "test":
        raise ValueError(f"rule must be 'valid' or 'test', got {rule!r}")
    metric = study_settings(study)["train"]["valid_metric"]

    def test_value(t) -> float:
        v = (t.user_attrs.get("test") or {}).get(metric)
        return -math.inf if v is None else float(v)

    return max(complete, key=lambda t: (test_value(t), -t.number))


def trial_rows(study, metrics: Sequence[str] = ("recall@20", "ndcg@20")) -> list[dict[str, Any]]:
    """One dict per trial, in trial order: ``number``, ``state``, the parameters (decoded),
    ``valid:<metric>`` and ``test:<metric>`` (at the best validation epoch), ``best_epoch``,
    ``epochs``, ``seconds``, ``run_dir``, ``retry_of``, ``duplicate_of`` (a grid point
    another trial already held: ended untrained, see :func:`grid_point_owner`)."""
    settings = study_settings(study)
    space = SearchSpace.parse(settings["space"])
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        params = space.decode(t.params)
        for name in space.names():
            row[name] = params.get(name)
        for split in ("valid", "test"):
            for m in metrics:
                row[f"{split}:{m}"] = (ua.get(split) or {}).get(m)
        row["best_epoch"] = ua.get("best_epoch")
        row["epochs"] = ua.get("epochs")
        row["pruned_at"] = ua.get("pruned_at")
        row["seconds"] = ua.get("seconds")
        row["run_dir"] = ua.get("run_dir")
        row["retry_of"] = t.system_attrs.get("failed_trial")
        row["duplicate_of"] = ua.get("duplicate_of")
        rows.append(row)
    return rows
