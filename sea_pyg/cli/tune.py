"""``sea-pyg tune``: a hyper-parameter study of one model on one dataset (Optuna, SQLite).

Everything the study needs is checked before any data is loaded (model, space, sampler,
settings of an existing study). With ``--workers W > 1`` the command starts ``W`` worker
processes (the same command with a hidden ``--worker-index``), each single-threaded unless
``--threads`` says otherwise, watches them and the study file, shows a progress bar over
trials, replaces a worker that was killed (its trial is failed and queued again, and resumes
its training from the trial's ``last.pt``), and reports the study at the end. Running the same
command again resumes the study: finished trials are kept, failed and interrupted ones are
queued again, a complete study is only reported.

The report: a table of trials (``STUDY/trials.csv``), the chosen trial (best validation value;
with ``--mmrec-test-selection`` also MMRec's test-based choice, labelled as such everywhere),
``STUDY/best.yaml`` (``sea-pyg train --config STUDY/best.yaml`` trains the chosen
configuration) and ``STUDY/summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sea_pyg.cli.checks import (
    check_device,
    check_knn_backend,
    check_model_name,
    check_output_folder,
)
from sea_pyg.cli.errors import UserError, first_line
from sea_pyg.cli.hparams import check_hparams, parse_sets, plain

__all__ = ["cmd_tune", "BEST_FILE", "TEST_BEST_FILE", "format_trials"]

BEST_FILE = "best.yaml"
TEST_BEST_FILE = "best-mmrec-test-selection.yaml"
SUMMARY_FILE = "summary.json"
TRIALS_CSV = "trials.csv"
#: The environment variable that tells a worker process its parent's pid.
PARENT_ENV = "SEA_PYG_TUNE_PARENT"
POLL_SECONDS = 1.0
TEST_WARNING = (
    "SELECTED ON TEST (--mmrec-test-selection): MMRec's quick_start procedure, which chooses by "
    "the test metric and so leaks the test set (enoche/MMRec issue #64); its numbers are "
    "optimistic and only for reproducing published tables"
)
#: Training flags of ``tune`` -> TrainConfig fields.
TRAIN_FLAGS = (
    "epochs",
    "lr",
    "lr_schedule",
    "batch_size",
    "weight_decay",
    "patience",
    "valid_metric",
    "eval_chunk_size",
    "seed",
    "device",
    "precision",
    "knn_backend",
)
#: TrainConfig fields that define a study (a resume must keep them).
DEFINING = (
    "epochs",
    "lr",
    "lr_schedule",
    "batch_size",
    "weight_decay",
    "patience",
    "valid_metric",
    "topk",
    "metrics",
    "seed",
)


# ------------------------------------------------------------------------------ the setup
def _space(args: argparse.Namespace, spec: Any, fixed: dict[str, Any]):
    from sea_pyg.train.search_space import (
        TUNABLE_TRAINING,
        SearchSpace,
        SearchSpaceError,
        read_space_file,
    )

    known = [*spec.defaults, *TUNABLE_TRAINING]
    try:
        if args.space:
            space = read_space_file(args.space, known)
        elif spec.search_space:
            space = SearchSpace.parse(
                {k: list(v) for k, v in spec.search_space.items()},
                known,
                where=f"the search space of {spec.name}",
            )
        else:
            raise UserError(
                f"--model {spec.name} declares no search space; pass --space FILE (YAML or "
                "JSON: name: [values] or {low: A, high: B, log: true})"
            )
    except SearchSpaceError as exc:
        raise UserError(str(exc)) from None
    both = sorted(
        set(space.names())
        & (set(fixed) | {k for k in TUNABLE_TRAINING if getattr(args, k, None) is not None})
    )
    if both:
        raise UserError(
            f"{', '.join(both)} is both searched (--space) and fixed (--set or its flag); drop one"
        )
    # every choice and range bound must be a value the model takes
    for p in space:
        if p.name in TUNABLE_TRAINING:
            continue
        values = list(p.choices) if p.is_choice else [p.low, p.high]
        for v in values:
            check_hparams(spec.name, {p.name: (v, json.dumps(v))}, {})
    if args.sampler == "grid" or (args.sampler is None and space.is_grid):
        try:
            space.grid()
        except SearchSpaceError as exc:
            raise UserError(str(exc)) from None
    return space


def _train_kwargs(args: argparse.Namespace, spec: Any) -> dict[str, Any]:
    kwargs = dict(spec.train_defaults)
    for name in TRAIN_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            kwargs[name] = tuple(value) if name == "lr_schedule" else value
    return kwargs


def _data_args(args: argparse.Namespace) -> dict[str, Any]:
    from sea_pyg.cli.commands import DEFAULT_SYNTHETIC

    synthetic = args.synthetic or (None if args.data else DEFAULT_SYNTHETIC)
    return {
        "data": str(Path(args.data).resolve()) if args.data else None,
        "name": args.name,
        "synthetic": synthetic,
        "data_seed": args.data_seed if synthetic else None,
    }


def _default_study(model: str, data: dict[str, Any]) -> str:
    label = data["synthetic"] or Path(data["data"]).name
    return str(Path("runs") / f"tune-{model.replace('+', '-')}-{label}")


def _setup(args: argparse.Namespace) -> dict[str, Any]:
    """Everything checked and resolved before the data is loaded."""
    from sea_pyg.models import MODELS, sea_variant
    from sea_pyg.train import TrainConfig
    from sea_pyg.train.tuning import PRUNERS

    name = check_model_name(args.model)
    if args.sea:
        try:
            name = sea_variant(name)
        except ValueError as exc:
            raise UserError(f"--sea: {exc}") from None
    spec = MODELS[name]
    fixed = check_hparams(
        name, parse_sets(args.set), {k: f"--{k.replace('_', '-')}" for k in TRAIN_FLAGS}
    )
    space = _space(args, spec, fixed)
    sampler = args.sampler or ("grid" if space.is_grid else "tpe")
    if sampler != "grid" and args.trials is None:
        raise UserError(f"--sampler {sampler} needs --trials N (how many trials to run)")
    if args.device is not None:
        check_device(args.device)
    check_knn_backend(args.knn_backend)
    kwargs = _train_kwargs(args, spec)
    try:
        config = TrainConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    data = _data_args(args)
    if args.data is not None and not Path(args.data).is_dir():
        raise UserError(f"--data {args.data} is not a folder")
    study_dir = Path(args.study or _default_study(name, data))
    check_output_folder(study_dir, f"--study {study_dir}")
    assert args.pruner in PRUNERS
    settings = {
        "format": 1,
        "model": name,
        "fixed": plain(fixed),
        "space": space.to_json(),
        "sampler": sampler,
        "sampler_seed": args.sampler_seed,
        "pruner": args.pruner,
        "prune_warmup": args.prune_warmup if args.pruner != "none" else None,
        "prune_startup": args.prune_startup if args.pruner == "median" else None,
        "train": plain(
            {k: getattr(config, k) for k in DEFINING}
            # a study's precision is one of its settings; fp32 (the default) is not written,
            # so that studies made before --precision existed resume unchanged
            | ({"precision": config.precision} if config.precision != "fp32" else {})
            | ({"knn_backend": config.knn_backend} if config.knn_backend != "auto" else {})
        ),
        "data": data,
        "imports": list(args.imports or []),
    }
    return {
        "name": name,
        "spec": spec,
        "fixed": fixed,
        "space": space,
        "kwargs": kwargs,
        "config": config,
        "data": data,
        "study_dir": study_dir,
        "settings": settings,
    }


def _open(setup: dict[str, Any], worker: int = 0):
    from sea_pyg.train.tuning import TuningError, open_study

    try:
        return open_study(setup["study_dir"], setup["settings"], worker)
    except TuningError as exc:
        raise UserError(str(exc)) from None
    except ImportError as exc:
        raise UserError(str(exc)) from None


def _runner(args: argparse.Namespace, setup: dict[str, Any], data: Any):
    from sea_pyg.cli.config import resolved_config_yaml
    from sea_pyg.models import build_model
    from sea_pyg.train.tuning import TrialRunner

    name, fixed = setup["name"], setup["fixed"]
    train_parser = args._train_parser
    train_args = train_parser.parse_args(["--model", name])
    train_args.imports = args.imports

    def build(hparams: dict[str, Any]):
        model, info, _ = build_model(name, data, **{**fixed, **hparams})
        return model, info

    def run_files(info: dict[str, Any], config: Any) -> dict[str, str]:
        from sea_pyg.cli.config import CONFIG_FILE

        return {
            CONFIG_FILE: resolved_config_yaml(train_parser, train_args, info, config, setup["data"])
        }

    return TrialRunner(
        data, setup["space"], build, setup["kwargs"], setup["study_dir"], run_files=run_files
    )


def _load(args: argparse.Namespace, setup: dict[str, Any]):
    from sea_pyg.cli.commands import load_data
    from sea_pyg.train.checkpoint import dataset_metadata

    data = load_data(args)
    meta = dataset_metadata(data)
    fingerprint = {
        k: meta[k]
        for k in (
            "name",
            "num_users",
            "num_items",
            "train_sha1",
            "valid_sha1",
            "test_sha1",
            "features_sha1",
        )
    }
    return data, fingerprint


def _check_data(study, fingerprint: dict[str, Any], setup: dict[str, Any]) -> None:
    from sea_pyg.train.tuning import TuningError, check_study_data

    try:
        check_study_data(study, fingerprint, str(setup["study_dir"]))
    except TuningError as exc:
        raise UserError(str(exc)) from None


# ------------------------------------------------------------------------------- workers
def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _die_with_parent() -> None:
    """Linux: this worker gets SIGKILL when the command that started it dies."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - best effort
        return
    if os.getppid() != int(parent):  # the parent died before prctl
        os._exit(1)


def _worker_main(args: argparse.Namespace, setup: dict[str, Any]) -> int:
    from sea_pyg.train.tuning import run_worker

    _die_with_parent()
    _set_threads(args.threads)
    study = _open(setup, args.worker_index)
    data, fingerprint = _load(args, setup)
    _check_data(study, fingerprint, setup)
    run_worker(study, _runner(args, setup, data), args.trials)
    return 0


class _Watch:
    """Progress bar over trials and one line per newly finished trial."""

    def __init__(self, study, setup: dict[str, Any], total: int, show_bar: bool) -> None:
        from tqdm.auto import tqdm

        self.study, self.setup, self.total = study, setup, total
        self.seen: set[int] = set()
        self.metric = setup["config"].valid_metric
        done = self._finished()
        self.seen = {t.number for t in done}
        self.bar = tqdm(
            total=total,
            initial=min(len(done), total),
            desc="trials",
            unit="trial",
            disable=not show_bar,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def _finished(self):
        from sea_pyg.train.tuning import require_optuna

        s = require_optuna().trial.TrialState
        return [
            t
            for t in self.study.get_trials(deepcopy=False)
            if t.state in (s.COMPLETE, s.PRUNED, s.FAIL)
        ]

    def update(self, quiet: bool = False) -> None:
        new = [t for t in self._finished() if t.number not in self.seen]
        for t in sorted(new, key=lambda t: t.number):
            self.seen.add(t.number)
            if t.state.name != "FAIL":
                self.bar.update(1)
            if not quiet:
                self.bar.write(_trial_line(t, self.setup["space"], self.metric))

    def close(self) -> None:
        self.bar.close()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return json.dumps(v) if not isinstance(v, str) else v


def _trial_line(t, space, metric: str) -> str:
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in space.decode(t.params).items())
    ua = t.user_attrs
    if t.state.name == "COMPLETE":
        what = f"valid {metric} {t.value:.4f} at epoch {ua.get('best_epoch')} of {ua.get('epochs')}"
    elif t.state.name == "PRUNED" and ua.get("duplicate_of") is not None:
        what = f"not trained: its grid point is trial {ua['duplicate_of']}'s"
    elif t.state.name == "PRUNED":
        what = f"pruned after epoch {ua.get('pruned_at')}"
    else:
        what = "failed: " + str(ua.get("failed") or "see the worker's error above")
    retry = t.system_attrs.get("failed_trial")
    again = f" (retry of trial {retry})" if retry is not None else ""
    return f"trial {t.number}{again} [{params}]: {what}, {ua.get('seconds', 0) or 0:.0f} s"


def _spawn(args: argparse.Namespace, index: int) -> subprocess.Popen:
    """Worker ``index``: this command again, with ``--worker-index``."""
    argv = [*args._argv, "--worker-index", str(index)]
    env = {**os.environ, PARENT_ENV: str(os.getpid()), "OMP_NUM_THREADS": str(args.threads)}
    return subprocess.Popen([sys.executable, "-m", "sea_pyg.cli", *argv], env=env)


def _run_workers(args: argparse.Namespace, study, watch: _Watch) -> list[str]:
    """Starts ``--workers`` processes and keeps that many while the study has work; returns
    the problems to report (workers that failed)."""
    from sea_pyg.train.tuning import has_work, reclaim_dead_trials

    procs: dict[int, subprocess.Popen] = {}
    problems: list[str] = []
    deaths, next_index = 0, 0
    try:
        while True:
            for i, p in list(procs.items()):
                rc = p.poll()
                if rc is None:
                    continue
                del procs[i]
                if rc < 0:
                    deaths += 1
                    watch.bar.write(
                        f"worker {i} (pid {p.pid}) was ended by signal {-rc}; its "
                        "trial is queued again and resumes from its last epoch"
                    )
                elif rc > 0:
                    problems.append(f"worker {i} (pid {p.pid}) failed with exit status {rc}")
            reclaim_dead_trials(study)
            watch.update(args.quiet)
            if not problems and deaths <= args.workers:
                while len(procs) < args.workers and has_work(study, args.trials):
                    procs[next_index] = _spawn(args, next_index)
                    next_index += 1
                    if len(procs) < args.workers:
                        time.sleep(0.2)  # let it claim its trial first
            if not procs and not _others_running(study):
                if deaths > args.workers and has_work(study, args.trials):
                    problems.append(
                        f"{deaths} worker processes were killed, more than "
                        f"--workers {args.workers}; no more were started"
                    )
                return problems
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        for p in procs.values():
            p.send_signal(signal.SIGINT)
        for p in procs.values():
            p.wait()
        raise


def _others_running(study) -> bool:
    """Trials still running in processes this command did not start (alive or unknown)."""
    from sea_pyg.train.tuning import process_alive, require_optuna

    s = require_optuna().trial.TrialState
    for t in study.get_trials(deepcopy=False, states=(s.RUNNING,)):
        who = t.user_attrs.get("worker")
        if not who or process_alive(who) is not False:
            return True
    return False


# ------------------------------------------------------------------------------- the report
def format_trials(
    rows: list[dict[str, Any]], names: list[str], metric_cols: list[str], chosen: dict[int, str]
) -> str:
    """The trials table as text (one row per trial; ``chosen`` marks rows)."""
    head = ["trial", "state", *names, *metric_cols, "best", "epochs", "time"]
    body = []
    for r in rows:
        state = "duplicate" if r.get("duplicate_of") is not None else r["state"].lower()
        cells = [f"{r['number']}{chosen.get(r['number'], '')}", state]
        cells += [_fmt(r[n]) if r[n] is not None else "" for n in names]
        cells += [f"{r[c]:.4f}" if isinstance(r[c], (int, float)) else "" for c in metric_cols]
        cells += [
            str(r["best_epoch"]) if r["best_epoch"] is not None else "",
            str(r["epochs"]) if r["epochs"] is not None else "",
            f"{r['seconds']:.0f}s" if r["seconds"] is not None else "",
        ]
        body.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    lines = [
        "  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True))
        for row in [head, *body]
    ]
    return "\n".join(lines)


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(
                {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()}
            )
    return buf.getvalue()


def _best_config(study_dir: Path, trial, metric: str, rule: str) -> str | None:
    """The chosen trial's ``config.yaml`` without its output folder, with a header."""
    import yaml

    from sea_pyg.cli.config import CONFIG_FILE

    path = study_dir / trial.user_attrs.get("run_dir", "") / CONFIG_FILE
    if not path.is_file():
        return None
    settings = yaml.safe_load(path.read_text(encoding="utf-8"))
    settings.pop("out", None)
    ua = trial.user_attrs
    test = ", ".join(
        f"{k} {v:.4f}"
        for k, v in (ua.get("test") or {}).items()
        if k.split("@")[0] in ("recall", "ndcg")
    )
    lines = [f"# written by sea-pyg tune: trial {trial.number} of the study in {study_dir},"]
    if rule == "test":
        lines += [
            "# " + TEST_WARNING + ".",
            f"# Chosen by test {metric} at the best validation epoch.",
        ]
    else:
        lines += [
            f"# chosen by its best validation {metric} ({trial.value:.4f}, epoch "
            f"{ua.get('best_epoch')}); the test set played no part in the choice."
        ]
    own = study_dir / (TEST_BEST_FILE if rule == "test" else BEST_FILE)
    lines += [
        f"# test at that epoch: {test}",
        f"# `sea-pyg train --config {own} --out FOLDER` trains this configuration again.",
    ]
    return "\n".join(lines) + "\n" + yaml.safe_dump(settings, sort_keys=False)


def _report(args: argparse.Namespace, study, setup: dict[str, Any]) -> int:
    from sea_pyg.io import atomic_write_text
    from sea_pyg.train.tuning import TuningError, chosen_trial, trial_rows

    study_dir, space = setup["study_dir"], setup["space"]
    metric = setup["config"].valid_metric
    metrics = list(dict.fromkeys([metric, "ndcg@20"]))
    rows = trial_rows(study, metrics)
    atomic_write_text(_csv(rows), study_dir / TRIALS_CSV)
    try:
        best = chosen_trial(study, "valid")
    except TuningError as exc:
        raise UserError(str(exc)) from None
    chosen = {best.number: "*"}
    test_best = chosen_trial(study, "test") if args.mmrec_test_selection else None
    if test_best is not None:
        chosen[test_best.number] = chosen.get(test_best.number, "") + "T"
    cols = [f"valid:{m}" for m in metrics] + [f"test:{m}" for m in metrics]
    print(
        f"\nstudy {study_dir} ({study_dir / 'study.db'}): {setup['name']}, "
        f"{setup['settings']['sampler']} sampler"
    )
    print(format_trials(rows, space.names(), cols, chosen))
    print(
        "test: at the best validation epoch of each trial; * = chosen (validation)"
        + ("; T = chosen on test (MMRec)" if test_best is not None else "")
    )
    summary = {
        "study": str(study_dir),
        "model": setup["name"],
        "selection": f"best validation {metric}",
        "chosen": _trial_summary(best),
        "optuna_best_trial": study.best_trial.number,
        "settings": setup["settings"],
    }
    text = _best_config(study_dir, best, metric, "valid")
    if text is not None:
        atomic_write_text(text, study_dir / BEST_FILE)
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in space.decode(best.params).items())
    test = best.user_attrs.get("test") or {}
    print(
        f"\nchosen trial {best.number} [{params}] by validation {metric} {best.value:.4f} "
        f"(epoch {best.user_attrs.get('best_epoch')})"
    )
    print(
        "  its test metrics at that epoch: "
        + " ".join(f"{k}={v:.4f}" for k, v in test.items() if k.split("@")[0] in ("recall", "ndcg"))
    )
    if text is not None:
        print(
            f"  configuration: {study_dir / BEST_FILE} (sea-pyg train --config "
            f"{study_dir / BEST_FILE} --out FOLDER)"
        )
    if test_best is not None:
        summary["mmrec_test_selection"] = {
            "warning": TEST_WARNING,
            "chosen": _trial_summary(test_best),
        }
        ttext = _best_config(study_dir, test_best, metric, "test")
        if ttext is not None:
            atomic_write_text(ttext, study_dir / TEST_BEST_FILE)
        tparams = ", ".join(f"{k}={_fmt(v)}" for k, v in space.decode(test_best.params).items())
        ttest = test_best.user_attrs.get("test") or {}
        print(f"\n!! {TEST_WARNING}.")
        print(
            f"!! chosen on test: trial {test_best.number} [{tparams}], test {metric} "
            f"{ttest.get(metric, float('nan')):.4f}, valid {test_best.value:.4f}"
            + (f"; configuration {study_dir / TEST_BEST_FILE}" if ttext else "")
        )
    atomic_write_text(json.dumps(summary, indent=2, default=str) + "\n", study_dir / SUMMARY_FILE)
    print(f"trials: {study_dir / TRIALS_CSV}; summary: {study_dir / SUMMARY_FILE}")
    return 0


def _trial_summary(t) -> dict[str, Any]:
    ua = t.user_attrs
    return {
        "number": t.number,
        "params": t.params,
        "value": t.value,
        "best_epoch": ua.get("best_epoch"),
        "epochs": ua.get("epochs"),
        "valid": ua.get("valid"),
        "test": ua.get("test"),
        "run_dir": ua.get("run_dir"),
    }


# --------------------------------------------------------------------------------- command
def cmd_tune(args: argparse.Namespace) -> int:
    from sea_pyg.train.tuning import (
        has_work,
        reclaim_dead_trials,
        retry_failed_trials,
        run_worker,
        trial_target,
    )

    setup = _setup(args)
    if args.worker_index is not None:
        return _worker_main(args, setup)
    study = _open(setup)
    data, fingerprint = _load(args, setup)
    _check_data(study, fingerprint, setup)
    again = reclaim_dead_trials(study) + retry_failed_trials(study)
    total = int(args.trials or trial_target(study))
    if not args.quiet:
        done = len(study.get_trials(deepcopy=False))
        print(
            f"study {setup['study_dir']}: {setup['name']} on "
            f"{fingerprint['name']}, {setup['settings']['sampler']} sampler, {total} trials"
            + (f"; {done} trial(s) in the file" if done else "")
            + (f"; trial(s) {again} queued again" if again else "")
            + f"; {args.workers} worker(s) at {args.threads} thread(s)",
            flush=True,
        )
    show_bar = not args.no_progress and sys.stderr.isatty()
    watch = _Watch(study, setup, total, show_bar)
    problems: list[str] = []
    try:
        if not has_work(study, args.trials):
            pass
        elif args.workers == 1:
            _set_threads(args.threads)
            try:
                run_worker(
                    study,
                    _runner(args, setup, data),
                    args.trials,
                    on_trial=lambda t: watch.update(args.quiet),
                )
            except Exception as exc:
                if os.environ.get("SEA_PYG_DEBUG"):
                    raise
                problems.append(f"a trial failed ({type(exc).__name__}: {first_line(exc)})")
        else:
            problems = _run_workers(args, study, watch)
        watch.update(args.quiet)
    except KeyboardInterrupt:
        watch.close()
        print(
            f"sea-pyg tune: interrupted; {setup['study_dir']} keeps every finished trial: "
            "the same command resumes the study",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(130) from None
    watch.close()
    if problems:
        raise UserError(
            "; ".join(problems) + f". Finished trials are kept in {setup['study_dir']}; fix the "
            "cause and run the same command again to resume"
        )
    return _report(args, study, setup)
