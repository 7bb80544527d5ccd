"""Train SEA on an MMRec-format dataset folder with the paper's settings.

The folder holds ``<name>.inter`` and one ``<modality>_feat.npy`` per modality (e.g. the MMRec
``baby`` folder: ``baby.inter``, ``image_feat.npy``, ``text_feat.npy``), or is a dataset root
with a ``raw/`` sub-folder (see docs/data.md). Settings are the official ones (reference.md 4.8):
lr 1e-4, batch 2048, valid Recall@20, patience 20 (30 for clothing), seed 999.

    python examples/train_sea.py data/baby
    python examples/train_sea.py data/clothing --patience 30
    python examples/train_sea.py data/baby --model sea-reference      # the official CLUB fit
    python examples/train_sea.py data/baby --model sea-b              # SoloSim + negative L2
    sea-pyg synth small /tmp/small && python examples/train_sea.py /tmp/small --epochs 5

Writes ``runs/<model>-<dataset>-seed<seed>/`` (best.pt, last.pt, results.json); rerun with
``--resume`` after a crash.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sea_pyg.data import describe, read_mmrec
from sea_pyg.data.dataset import MMRecDataset, dataset_root_name, is_dataset_root
from sea_pyg.models import build_model
from sea_pyg.train import TrainConfig, Trainer, seed_everything


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("folder", help="MMRec dataset folder (or dataset root with raw/)")
    p.add_argument("--model", default="sea", help="sea, sea-reference, sea-a..sea-d, ...")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--patience", type=int, default=20, help="20 (baby, sports), 30 (clothing)")
    p.add_argument("--seed", type=int, default=999)
    p.add_argument("--out", help="output folder (default runs/<model>-<dataset>-seed<seed>)")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()

    if is_dataset_root(args.folder):
        data = MMRecDataset(args.folder, dataset_root_name(args.folder))[0]
    else:
        data = read_mmrec(args.folder)
    print(describe(data))

    seed_everything(args.seed)
    model, info, train_defaults = build_model(args.model, data)  # lr 1e-4 for SEA presets
    out = args.out or str(Path("runs") / f"{args.model}-{data.name}-seed{args.seed}")
    config = TrainConfig(
        **train_defaults,
        epochs=args.epochs,
        patience=args.patience,
        seed=args.seed,
        output_dir=out,
        resume=args.resume,
    )
    results = Trainer(model, data, config, model_info=info).fit()
    test = results["test"]
    print(f"\n{args.model} on {data.name}, best epoch {results['best_epoch']}: " + ", ".join(
        f"{k} {test[k]:.4f}" for k in ("recall@10", "recall@20", "ndcg@10", "ndcg@20")))
    print(f"results: {out}/results.json")


if __name__ == "__main__":
    main()
