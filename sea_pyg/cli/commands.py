"""``sea-pyg synth``, ``prepare``, ``recommend``, ``plot``, ``info``, the dataset flags they share
and ``--import``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import warnings
from pathlib import Path

from sea_pyg.cli.checks import check_device, check_output_folder
from sea_pyg.cli.errors import UserError

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_SYNTHETIC",
    "load_data",
    "import_modules",
    "cmd_synth",
    "cmd_prepare",
    "cmd_recommend",
    "cmd_plot",
    "cmd_info",
]

DEFAULT_MODEL = "sea"
DEFAULT_SYNTHETIC = "small"


def load_data(args: argparse.Namespace):
    """The dataset of ``--data`` (a folder or a dataset root) or ``--synthetic`` (default: the
    built-in ``small`` preset)."""
    from sea_pyg.data import DatasetFormatError, load_synthetic, read_mmrec
    from sea_pyg.data.dataset import MMRecDataset, dataset_root_name, is_dataset_root

    try:
        if args.data and is_dataset_root(args.data):
            name = args.name or dataset_root_name(args.data)
            if name is None:
                raise UserError(
                    f"{args.data} is a dataset root; pass --name (the <name>.inter "
                    f"in {args.data}/raw)"
                )
            return MMRecDataset(args.data, name)[0]
        if args.data:
            return read_mmrec(args.data, name=args.name)
        return load_synthetic(args.synthetic or DEFAULT_SYNTHETIC, seed=args.data_seed)
    except DatasetFormatError as exc:
        raise UserError(f"bad dataset: {exc}") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None


def import_modules(names: list[str] | None) -> None:
    """Imports each ``--import`` module, in order, before any model name is resolved, so that a
    module from outside the package can register models in :data:`sea_pyg.models.MODELS`.

    The current folder is searched after ``sys.path`` while importing (the ``sea-pyg`` script,
    unlike ``python -m``, does not put it on ``sys.path``).

    Raises:
        UserError: a module fails to import (``--import MODULE: <error>``).
    """
    if not names:
        return
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception as exc:
                raise UserError(f"--import {name}: {type(exc).__name__}: {exc}") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def cmd_synth(args: argparse.Namespace) -> int:
    from sea_pyg.data.synthetic import PRESETS, make_synthetic

    if args.preset not in PRESETS:
        raise UserError(f"unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}")
    check_output_folder(args.out, f"output folder {args.out}")
    data = make_synthetic(args.preset, seed=args.seed)
    folder = data.to_mmrec(args.out, name=args.name or args.preset)
    n = len(data.interactions)
    print(f"wrote {args.preset} ({n} interactions) to {folder}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from sea_pyg.data import DatasetFormatError
    from sea_pyg.data.raw import prepare_amazon

    if args.no_text and args.text_model:
        raise UserError("--no-text and --text-model exclude each other")
    check_device(args.device)
    try:
        report = prepare_amazon(
            args.interactions,
            args.out,
            name=args.name,
            meta=args.meta,
            images=args.images,
            image_encoder=args.image_encoder,
            k=args.k,
            seed=args.seed,
            text=not args.no_text,
            text_model=args.text_model,
            allow_download=args.allow_download,
            image_dim=args.image_dim,
            batch_size=args.batch_size,
            device=args.device,
            interactions_format=args.format,
            overwrite=args.overwrite,
            progress=not args.no_progress and sys.stderr.isatty(),
            log=None if args.quiet else (lambda msg: print(msg, flush=True)),
        )
    except (DatasetFormatError, ValueError, ImportError, FileExistsError) as exc:
        raise UserError(str(exc)) from None
    print(report.summary())
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from sea_pyg.train import UnfinishedRunWarning, load_model, recommend

    check_device(args.device)
    if not Path(args.run).exists():
        raise UserError(f"--run: no checkpoint at {args.run} (no such file or folder)")
    data = load_data(args)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnfinishedRunWarning)
            model = load_model(args.run, data, device=args.device)
        for w in caught:
            if issubclass(w.category, UnfinishedRunWarning):
                print(f"sea-pyg recommend: note: {w.message}", file=sys.stderr, flush=True)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        recs = recommend(
            model,
            data,
            args.users,
            k=args.k,
            exclude=args.exclude,
            internal_ids=args.internal_ids,
            index=args.index,
        )
    except (FileNotFoundError, ValueError, ImportError) as exc:
        raise UserError(str(exc)) from None
    if args.json:
        rows = [
            {"user": u, "items": items, "scores": [round(float(s), 6) for s in sc[: len(items)]]}
            for u, items, sc in zip(recs.user_ids, recs.item_ids, recs.scores.tolist(), strict=True)
        ]
        print(json.dumps(rows, indent=2))
        return 0
    info = model.checkpoint["model_info"]
    print(
        f"top-{args.k} items from {info['name']} ({model.checkpoint['path']}), "
        f"{args.exclude} items excluded:"
    )
    for user, items in zip(recs.user_ids, recs.item_ids, strict=True):
        print(f"{user}\t{' '.join(items)}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from sea_pyg import plot

    try:
        if args.figure == "curves":
            out = plot.plot_curves(args.runs, args.out, labels=args.labels, metrics=args.metrics)
        elif args.figure == "ablation":
            out = plot.plot_ablation(
                args.workdirs, args.out, models=args.models, metrics=args.metrics,
                split=args.split, finished_only=not args.include_unfinished,
            )
        elif args.figure == "trials":
            out = plot.plot_trials(args.study, args.out, metric=args.metric)
        elif args.figure == "sensitivity" and any(plot.is_study(w) for w in args.workdirs):
            if len(args.workdirs) != 1:
                raise UserError("plot sensitivity: give one study folder (holding study.db), "
                                "or work folders of runs, not both")
            out = plot.plot_study_sensitivity(args.workdirs[0], args.out, params=args.param,
                                              metrics=args.metrics, split=args.split)
        elif args.figure == "sensitivity":
            if not args.param:
                raise UserError("plot sensitivity: --param NAME is needed for work folders "
                                "of runs (a study folder knows its parameters)")
            out = plot.plot_sensitivity(
                args.workdirs, args.param, args.out, metrics=args.metrics, split=args.split,
                finished_only=not args.include_unfinished,
            )
        else:
            from sea_pyg.train import load_model

            if args.data is None and args.synthetic is None:
                raise UserError(
                    "plot embeddings needs the run's dataset: --data FOLDER or "
                    "--synthetic PRESET (with the --data-seed it was trained with)"
                )
            model = load_model(args.run, load_data(args))
            out = plot.plot_embeddings(
                model, args.out, items=args.items, seed=args.seed, method=args.method,
                parts=args.parts,
            )
    except (FileNotFoundError, ValueError, ImportError) as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from sea_pyg.data import describe

    print(describe(load_data(args)))
    return 0
