"""``sea-pyg``: train models, write synthetic datasets, describe dataset folders."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "lightgcn"
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

    try:
        if args.data:
            return read_mmrec(args.data, name=args.name)
        return load_synthetic(args.synthetic or DEFAULT_SYNTHETIC, seed=args.data_seed)
    except DatasetFormatError as exc:
        raise SystemExit(f"sea-pyg: bad dataset: {exc}") from None
    except ValueError as exc:
        raise SystemExit(f"sea-pyg: {exc}") from None


def cmd_train(args: argparse.Namespace) -> int:
    from sea_pyg.data import describe
    from sea_pyg.train import TrainConfig, Trainer, build_model, seed_everything
    from sea_pyg.train.registry import sea_variant

    if args.sea:
        try:
            args.model = sea_variant(args.model)
        except ValueError as exc:
            raise SystemExit(f"sea-pyg: {exc}") from None
    data = _load_data(args)
    if not args.quiet:
        print(describe(data), flush=True)
    hparams = _parse_sets(args.set or [])
    seed_everything(args.seed)
    try:
        model, info, train_defaults = build_model(args.model, data, **hparams)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"sea-pyg: {exc}") from None
    cfg_kwargs: dict[str, Any] = dict(train_defaults)
    for name in (
        "epochs", "lr", "batch_size", "patience", "eval_chunk_size", "device", "valid_metric"
    ):
        value = getattr(args, name)
        if value is not None:
            cfg_kwargs[name] = value
    out = args.out
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
    config = TrainConfig(**cfg_kwargs)
    trainer = Trainer(model, data, config, model_info=info)
    results = trainer.fit()
    test = results["test"]
    keys = [f"{m}@{k}" for m in ("recall", "ndcg") for k in config.topk]
    print(f"\n{info['name']} test metrics at the best validation epoch ({results['best_epoch']}):")
    print("  " + "  ".join(f"{k:>10s}" for k in keys))
    print("  " + "  ".join(f"{test.get(k, float('nan')):10.4f}" for k in keys))
    print(f"results: {Path(out) / 'results.json'}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from sea_pyg.data.synthetic import PRESETS, make_synthetic

    if args.preset not in PRESETS:
        raise SystemExit(f"sea-pyg: unknown preset {args.preset!r}; choose from {sorted(PRESETS)}")
    data = make_synthetic(args.preset, seed=args.seed)
    folder = data.to_mmrec(args.out, name=args.name or args.preset)
    n = len(data.interactions)
    print(f"wrote {args.preset} ({n} interactions) to {folder}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from sea_pyg.data import describe

    print(describe(_load_data(args)))
    return 0


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (default: the built-in synthetic 'small' preset)")
    g.add_argument("--data", help="MMRec dataset folder (<name>.inter + <modality>_feat.npy)")
    g.add_argument("--name", help="dataset name inside --data, if the folder has several")
    g.add_argument("--synthetic", help="synthetic preset: tiny, small, baby, sports, clothing")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data")


def build_parser() -> argparse.ArgumentParser:
    from sea_pyg.train.registry import MODELS

    parser = argparse.ArgumentParser(
        prog="sea-pyg", description="SEA and multimodal recommendation baselines on PyG."
    )
    sub = parser.add_subparsers(dest="command")

    models = ", ".join(f"{k} ({v.description})" for k, v in sorted(MODELS.items()))
    t = sub.add_parser("train", help="train a model under the MMRec protocol")
    t.add_argument("--model", default=DEFAULT_MODEL, help=f"model: {models}")
    t.add_argument(
        "--sea",
        action="store_true",
        help="add SEA's separate-learning module to the host model (vbpr -> vbpr+sea, "
        "freedom -> freedom+sea)",
    )
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
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--quiet", action="store_true", help="no per-epoch log lines")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("synth", help="write a synthetic preset as an MMRec folder")
    s.add_argument("preset", help="tiny, small, baby, sports or clothing")
    s.add_argument("out", help="output folder")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--name", help="dataset name (default: the preset name)")
    s.set_defaults(func=cmd_synth)

    i = sub.add_parser("info", help="validate and describe a dataset folder")
    _add_data_args(i)
    i.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
