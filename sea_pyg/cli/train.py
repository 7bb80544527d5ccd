"""``sea-pyg train``: every setting checked before the data is loaded, then one run per model
(``--model`` and each ``--compare`` model) and seed (``--seed``, or each of ``--seeds``), each
writing ``OUT/config.yaml`` that reruns it; with ``--seeds``, mean ± std over the seeds."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sea_pyg.cli import commands
from sea_pyg.cli.checks import check_device, check_knn_backend, check_model_name
from sea_pyg.cli.checks import check_output_folder as _check_output_folder
from sea_pyg.cli.config import (
    CONFIG_FILE,
    FIELD_OF_DEST,
    NOT_SETTINGS,
    resolved_config_yaml,
    training_fields,
)
from sea_pyg.cli.errors import UserError, in_flag_words
from sea_pyg.cli.hparams import check_hparams, parse_sets

__all__ = [
    "cmd_train",
    "torch_threads",
    "flag_names",
    "QUICK_START_LR",
    "QUICK_START_EPOCHS",
    "QUICK_START_COMPARE",
]

#: Quick start (``sea-pyg train`` without --data/--synthetic): SEA-family models train at this
#: learning rate for at most this many epochs unless --lr/--epochs are given. The paper's lr
#: (1e-4) needs hundreds of epochs on the built-in data; a CPU quick start should take minutes.
QUICK_START_LR = 1e-3
QUICK_START_EPOCHS = 30
QUICK_START_COMPARE = ["lightgcn"]


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{setting or dest: --flag}`` of ``parser``'s flags (``output_dir`` and ``out`` ->
    ``--out``), to put library messages in the user's words."""
    out: dict[str, str] = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or action.dest in ("help", "config"):
            continue
        out[action.dest] = longs[0]
        out[FIELD_OF_DEST.get(action.dest, action.dest)] = longs[0]
    return out


def _config_kwargs(args: argparse.Namespace, spec: Any, overrides: dict[str, Any],
                   output_dir: str | None) -> dict[str, Any]:
    """:class:`~sea_pyg.train.TrainConfig` arguments: the model's training defaults, then the
    quick start's, then every flag that names a TrainConfig field and was given."""
    fields = training_fields()
    kwargs: dict[str, Any] = {**spec.train_defaults, **overrides}
    for dest, value in vars(args).items():
        field = FIELD_OF_DEST.get(dest, dest)
        if field in fields and value is not None and not dest.startswith("_"):
            kwargs[field] = value
    kwargs.update(
        output_dir=output_dir,
        progress=not args.no_progress and sys.stderr.isatty(),
        verbose=not args.quiet,
    )
    return kwargs


def _train_config(kwargs: dict[str, Any], flags: dict[str, str]):
    from sea_pyg.train import TrainConfig

    try:
        return TrainConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(in_flag_words(str(exc), flags)) from None


def _check_data_flags(args: argparse.Namespace) -> None:
    """The dataset flags, without reading any data."""
    if args.data is not None:
        if not Path(args.data).exists():
            raise UserError(f"--data {args.data} does not exist")
        if not Path(args.data).is_dir():
            raise UserError(f"--data {args.data} is a file; pass the dataset folder")
    elif args.synthetic is not None:
        from sea_pyg.data.synthetic import PRESETS

        if args.synthetic not in PRESETS:
            raise UserError(
                f"--synthetic: unknown preset {args.synthetic!r}; choose from "
                f"{', '.join(PRESETS)}"
            )


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``--threads N``: torch's intra-op threads (:func:`torch.set_num_threads`) while the
    command runs (``None``: torch's default, the machine's cores), restored afterwards."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _default_out(name: str, data: Any, args: argparse.Namespace) -> str:
    """The run folder of a model that has no ``--out`` (a ``--compare`` model), and of every
    run with ``--seeds`` (under ``--out``, default ``runs``)."""
    base = Path(args.out or "runs") if args.seeds else Path("runs")
    return str(base / f"{name}-{getattr(data, 'name', 'data')}-seed{args.seed}")


def _check_run_folder(out: str, args: argparse.Namespace, flags: dict[str, str]) -> None:
    """Refuses, before any data is loaded or trained, a folder that holds a run (unless
    --resume / --overwrite) or that another run is using."""
    from sea_pyg.train import check_output_dir
    from sea_pyg.train.distributed import is_main_process

    if not is_main_process():  # rank 0 alone claims and writes the folder
        return
    try:
        check_output_dir(out, resume=args.resume, overwrite=args.overwrite)
    except ValueError as exc:
        raise UserError(in_flag_words(str(exc), flags)) from None


def check_output_folder(path: str, what: str | None = None) -> None:
    """The folder check of :mod:`~sea_pyg.cli.checks`, on rank 0 alone under torchrun (rank 0
    alone writes; the others would race it for the probe file)."""
    from sea_pyg.train.distributed import is_main_process

    if is_main_process():
        _check_output_folder(path, what)


def _train_one(args, parser, data, name, hparams, overrides, flags) -> tuple[dict, dict, Any]:
    from sea_pyg.models import MODELS, build_model
    from sea_pyg.train import Trainer, seed_everything

    spec = MODELS[name]
    out = args.out if name == args.model and not args.seeds else None
    if out is None:
        out = _default_out(name, data, args)
        check_output_folder(out, f"the output folder {out} (default of --out)")
    config = _train_config(_config_kwargs(args, spec, overrides, out), flags)
    seed_everything(args.seed)
    try:
        with config.knn_scope():  # the model's k-NN graphs with --knn-backend
            model, info, _ = build_model(name, data, **hparams)
    except (TypeError, ValueError) as exc:
        words = {**flags, **{k: f"--set {k}" for k in spec.defaults}}
        raise UserError(f"--model {name}: {in_flag_words(str(exc), words)}") from None
    data_args = {
        "data": str(Path(args.data).resolve()) if args.data else None,
        "name": args.name,
        "synthetic": args.synthetic,
        "data_seed": args.data_seed if args.synthetic else None,
    }
    text = resolved_config_yaml(parser, args, info, config, data_args)
    try:
        # the trainer writes config.yaml once it has claimed the folder (lock, refusal checks)
        trainer = Trainer(model, data, config, model_info=info, run_files={CONFIG_FILE: text})
    except (ValueError, OSError) as exc:
        raise UserError(in_flag_words(str(exc), flags)) from None
    if not args.quiet:
        print(f"\n== {info['name']}: lr {config.lr}, at most {config.epochs} epochs, "
              f"patience {config.patience} ==", flush=True)
    try:
        results = trainer.fit()
    except (ValueError, OSError) as exc:
        raise UserError(in_flag_words(str(exc), flags)) from None
    except KeyboardInterrupt:
        print(f"sea-pyg train: interrupted; {out} keeps the last finished epoch: the same "
              "command plus --resume continues", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    if trainer.resumed == "finished" and trainer.dist.is_main:
        print(f"sea-pyg train: the run in {out} had already finished "
              f"({results.get('stop_reason', 'finished')}); nothing was trained or changed "
              "(raise --epochs to extend a run that stopped at its cap)", flush=True)
    return results, info, config


def cmd_train(args: argparse.Namespace) -> int:
    """Under ``torchrun`` (``WORLD_SIZE > 1``) every process joins the process group first
    (:func:`sea_pyg.train.distributed.init_from_env`) and leaves it at the end; the ranks
    other than 0 print nothing but errors."""
    from sea_pyg.train.distributed import init_from_env, is_main_process, shutdown

    try:
        owned = init_from_env(args.device or "cpu")
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"torchrun: {exc}") from None
    try:
        if not is_main_process():
            args.quiet, args.no_progress = True, True
        with torch_threads(args.threads):
            return _cmd_train(args)
    finally:
        if owned:
            shutdown()


def _seeds(args: argparse.Namespace) -> list[int]:
    """The seeds to train: ``--seeds`` (checked), else ``[--seed]``."""
    from sea_pyg.train.repeat import check_seeds

    if not args.seeds:
        return [args.seed]
    try:
        return check_seeds(args.seeds)
    except ValueError as exc:
        raise UserError(str(exc).replace("seeds:", "--seeds:", 1)) from None


def _check_minibatch_models(names: list[str], fanout: list[int] | None = None) -> None:
    """--minibatch: every model to train must support it (named in the error otherwise), and
    --fanout must name a model that samples a neighbourhood (``samples_neighbourhood``)."""
    from sea_pyg.models import MODELS
    from sea_pyg.models.base import no_neighbourhood

    def can(spec: Any) -> bool:  # a +sea entry wraps its host in WithSeparateLearning
        return bool(spec.cls.supports_minibatch) and spec.host is None

    able = [n for n, spec in MODELS.items() if can(spec)]
    unable = [n for n in names if not can(MODELS[n])]
    if unable:
        raise UserError(
            f"--minibatch: {', '.join(unable)} cannot train on sampled mini-batches (the "
            "training step needs the whole graph, an item-item graph or all items, e.g. SEA's "
            f"alignment); models that can: {', '.join(able)} (see docs/scale.md)"
        )
    for name in names:
        if not MODELS[name].cls.samples_neighbourhood:
            try:  # the model's own message (set_minibatch would raise it after the data)
                no_neighbourhood(name, fanout)
            except ValueError as exc:
                raise UserError(str(exc)) from None


def _cmd_train(args: argparse.Namespace) -> int:
    from sea_pyg.data import describe
    from sea_pyg.models import MODELS, sea_variant

    parser = args._parser
    flags = flag_names(parser)
    # ---- everything that can be checked without data
    args.model = check_model_name(args.model)
    if args.sea:
        try:
            args.model = sea_variant(args.model)
        except ValueError as exc:
            raise UserError(f"--sea: {exc}") from None
    quick = args.data is None and args.synthetic is None
    compare = list(args.compare) if args.compare is not None else (
        QUICK_START_COMPARE if quick and args.model == commands.DEFAULT_MODEL else [])
    compare = [check_model_name(m, "--compare") for m in compare]
    compare = list(dict.fromkeys(m for m in compare if m != args.model))
    if args.device is not None:
        check_device(args.device)
    check_knn_backend(args.knn_backend)
    if args.minibatch:
        _check_minibatch_models([args.model, *compare], args.fanout)
    training_flags = {k: v for k, v in flags.items() if k not in NOT_SETTINGS + ("set",)}
    hparams = check_hparams(args.model, parse_sets(args.set), training_flags)
    seeds = _seeds(args)
    if args.out is not None:
        check_output_folder(args.out)
        if not args.seeds:
            _check_run_folder(args.out, args, flags)
    else:
        check_output_folder("runs", "the output folder runs/ (default of --out)")
    _check_data_flags(args)
    overrides: dict[str, Any] = {}
    if quick and args.model.startswith("sea"):
        overrides = {"lr": QUICK_START_LR, "epochs": QUICK_START_EPOCHS}
    for name in [args.model, *compare]:
        _train_config(_config_kwargs(args, MODELS[name], overrides if name == args.model
                                     else {}, None), flags)
    if quick:
        args.synthetic = commands.DEFAULT_SYNTHETIC
        given = {k for k in overrides if getattr(args, k) is not None}
        if not args.quiet and len(given) < len(overrides):
            print(
                f"quick start on the built-in data: {args.model} at lr {QUICK_START_LR} for at "
                f"most {QUICK_START_EPOCHS} epochs (the paper's lr 1e-4 needs hundreds of "
                "epochs here; pass --lr/--epochs, or --synthetic small for the full protocol)",
                flush=True,
            )

    # ---- the data, then the runs
    data = commands.load_data(args)
    if not args.quiet:
        print(describe(data), flush=True)
    for seed in seeds:  # every run folder refused before anything is trained
        args.seed = seed
        for name in compare if not args.seeds else [args.model, *compare]:
            _check_run_folder(_default_out(name, data, args), args, flags)
    rows = []
    for name in [args.model, *compare]:
        for seed in seeds:
            args.seed = seed
            results, info, config = _train_one(
                args, parser, data, name, hparams if name == args.model else {},
                overrides if name == args.model else {}, flags,
            )
            rows.append((info["name"], results, config))
    from sea_pyg.train.distributed import is_main_process

    if not is_main_process():  # rank 0 reports
        return 0
    if args.seeds:
        _print_seed_summaries(rows, seeds)
    else:
        _print_table(rows)
    return 0


def _print_seed_summaries(rows: list[tuple[str, dict, Any]], seeds: list[int]) -> None:
    """Per model: mean ± std over the seeds of every metric, and its run folders."""
    from sea_pyg.train.repeat import format_seed_summary, seed_summary

    by_model: dict[str, list[tuple[dict, Any]]] = {}
    for name, res, cfg in rows:
        by_model.setdefault(name, []).append((res, cfg))
    for name, runs in by_model.items():
        try:
            summary = seed_summary([res for res, _ in runs])
        except ValueError as exc:
            raise UserError(str(exc)) from None
        print(f"\n{name}: {len(runs)} seeds ({' '.join(map(str, seeds))}), mean ± std over the "
              "seeds (sample std):")
        print(format_seed_summary(summary))
        print(f"runs ({name}): {' '.join(str(cfg.output_dir) for _, cfg in runs)}")
    if len(by_model) > 1:
        first, second = list(by_model.values())[:2]
        print("\npaired test over the users: sea-pyg compare "
              f"{' '.join(str(c.output_dir) for _, c in first)} --vs "
              f"{' '.join(str(c.output_dir) for _, c in second)}")


def _print_table(rows: list[tuple[str, dict, Any]]) -> None:
    """The test metrics of each ``(model name, results, config)`` side by side, then where each
    run's ``results.json`` is."""
    first, results, config = rows[0]
    keys = [f"{m}@{k}" for m in ("recall", "ndcg") for k in config.topk]
    title = "test metrics at the best validation epoch"
    print(f"\n{title}:" if len(rows) > 1 else
          f"\n{first} {title} ({results['best_epoch']}):")
    width = max(len(r[0]) for r in rows) + 2
    print(" " * width + "  ".join(f"{k:>10s}" for k in keys) + "  best epoch")
    for name, res, _ in rows:
        test = res["test"]
        print(f"{name:<{width}s}" + "  ".join(f"{test.get(k, float('nan')):10.4f}" for k in keys)
              + f"  {res['best_epoch']:>10d}")
    for name, _, cfg in rows:
        print(f"results ({name}): {Path(cfg.output_dir) / 'results.json'}")

