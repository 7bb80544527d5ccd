"""Figures from training runs (see :mod:`sea_pyg.plot`)."""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sea_pyg.io import atomic_write

__all__ = [
    "Run",
    "load_run",
    "find_runs",
    "plot_curves",
    "plot_ablation",
    "plot_sensitivity",
    "embedding_points",
    "plot_embeddings",
]

INSTALL_HINT = 'pip install "sea-pyg[plot]"'
#: Colours (colour-blind safe, Okabe-Ito) used for runs, models and parts.
COLORS = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000",
]  # fmt: skip
PART_NAMES = {"g": "generic", "u": "unique", "z": "projection"}


def _figure(width: float, height: float):
    """A matplotlib ``Figure`` on the Agg canvas (no pyplot, no global backend change)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised by monkeypatching in the tests
        raise ImportError(
            f"sea-pyg plot needs matplotlib, which is not installed: {INSTALL_HINT}"
        ) from exc
    return Figure(figsize=(width, height), dpi=120, layout="constrained")


def _save(fig, out: str | os.PathLike) -> Path:
    """Writes ``fig`` as the PNG ``out`` atomically (:func:`sea_pyg.io.atomic_write`)."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: the output must be a .png file")
    return atomic_write(out, lambda tmp: fig.savefig(tmp, format="png"))


# ------------------------------------------------------------------------------------ runs
@dataclass
class Run:
    """One training run's ``results.json``.

    Attributes:
        path: The ``results.json`` file.
        results: Its content.
    """

    path: Path
    results: dict[str, Any]

    @property
    def model(self) -> str:
        """Registry name of the model."""
        return str(self.results.get("model", {}).get("name", "?"))

    @property
    def hparams(self) -> dict[str, Any]:
        """The model's hyper-parameters."""
        return dict(self.results.get("model", {}).get("hparams", {}))

    @property
    def dataset(self) -> str:
        """Dataset name."""
        return str(self.results.get("dataset", "?"))

    @property
    def seed(self) -> Any:
        """Seed of the run (``config.seed``)."""
        return self.results.get("config", {}).get("seed")

    @property
    def finished(self) -> bool:
        """The trainer adds ``wall_seconds`` only when ``fit()`` returns."""
        return "wall_seconds" in self.results

    def value(self, name: str) -> Any:
        """A model hyper-parameter, else a training setting (``lr``, ``batch_size``, ...)."""
        if name in self.hparams:
            return self.hparams[name]
        return self.results.get("config", {}).get(name)


def load_run(path: str | os.PathLike) -> Run:
    """Read a run folder's ``results.json`` (or the file itself).

    Raises:
        FileNotFoundError: no ``results.json`` there.
        ValueError: the file is not a sea_pyg ``results.json``.
    """
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        where = f"in {path}" if path.is_dir() else f"at {path}"
        raise FileNotFoundError(
            f"no results.json {where}: pass a run folder written by `sea-pyg train --out DIR` "
            "or its results.json"
        )
    try:
        results = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file} is not valid JSON ({exc})") from None
    if not isinstance(results, dict) or "history" not in results or "model" not in results:
        raise ValueError(
            f"{file} is not a sea_pyg results.json (no 'history'/'model'; written by "
            "sea_pyg.train.Trainer)"
        )
    return Run(file, results)


def find_runs(workdirs: Iterable[str | os.PathLike], finished_only: bool = True) -> list[Run]:
    """All runs ``WORKDIR/*/results.json`` of one or more work folders (as written by
    ``benchmarks/compare_models.py``: ``<model>-<dataset>-seed<k>/results.json``), a work folder
    may also be a run folder itself.

    Args:
        workdirs: Work folders.
        finished_only: Skip runs still training (their ``results.json`` has no ``wall_seconds``).

    Raises:
        FileNotFoundError: a work folder does not exist or holds no (finished) run.
    """
    runs: list[Run] = []
    for wd in workdirs:
        wd = Path(wd)
        if not wd.is_dir():
            raise FileNotFoundError(f"work folder {wd} does not exist")
        files = [wd / "results.json"] if (wd / "results.json").is_file() else []
        files += sorted(wd.glob("*/results.json"))
        if not files:
            raise FileNotFoundError(
                f"no results.json in {wd} or its sub-folders (expected "
                f"{wd}/<model>-<dataset>-seed<k>/results.json, as benchmarks/compare_models.py "
                "writes)"
            )
        found = [load_run(f) for f in files]
        kept = [r for r in found if r.finished or not finished_only]
        if not kept:
            raise FileNotFoundError(
                f"{wd}: {len(found)} run(s), none finished yet (results.json without "
                "'wall_seconds'); wait, or pass --include-unfinished"
            )
        runs += kept
    return runs


def _labels(runs: Sequence[Run], labels: Sequence[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(runs):
            raise ValueError(f"--labels: {len(labels)} label(s) for {len(runs)} run(s)")
        return list(labels)
    names = [r.model for r in runs]
    if len(set(names)) == len(names):
        return names
    return [f"{r.model} ({r.path.parent.name})" for r in runs]


def _check_metric(metric: str) -> str:
    name, _, k = metric.partition("@")
    if not name or not k.isdigit():
        raise ValueError(f"--metrics: metric names look like 'recall@20', got {metric!r}")
    return metric


# ---------------------------------------------------------------------------------- curves
def plot_curves(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    labels: Sequence[str] | None = None,
    metrics: Sequence[str] = ("recall@20", "ndcg@20"),
) -> Path:
    """Training curves of one or more runs, overlaid: the total loss, each logged term (one
    panel per term name, e.g. ``bpr``, ``align``, ``dis``, ``club_nll``, ``reg``) and the
    validation ``metrics`` per epoch; each run's best epoch is marked with a star.

    Args:
        paths: Run folders or ``results.json`` files.
        out: PNG to write.
        labels: Legend labels, one per run (default: model names).
        metrics: Validation metrics to plot.

    Returns:
        The written path.
    """
    if not paths:
        raise ValueError("plot curves: give at least one run folder or results.json")
    runs = [load_run(p) for p in paths]
    names = _labels(runs, labels)
    metrics = [_check_metric(m) for m in metrics]
    for run in runs:
        if not run.results["history"]:
            raise ValueError(f"{run.path}: the run has no finished epoch yet (empty history)")
        # the first validated epoch (a model's pre-training epochs have no validation)
        have = next((h["valid"] for h in run.results["history"] if "valid" in h), {})
        missing = [m for m in metrics if m not in have]
        if missing:
            have = sorted(have)
            raise ValueError(f"{run.path}: no validation metric {missing}; it has {have}")
    terms: list[str] = []
    for run in runs:
        for h in run.results["history"]:
            terms += [t for t in h.get("losses", {}) if t not in terms]
    panels = [("loss", "training loss (sum of the model's terms)")]
    panels += [(f"term:{t}", f"loss term: {t}") for t in terms]
    panels += [(f"valid:{m}", f"valid {m}") for m in metrics]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(4.2 * ncols, 3.0 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (key, title) in zip(axes, panels, strict=False):
        for i, (run, name) in enumerate(zip(runs, names, strict=True)):
            hist = run.results["history"]
            epochs, ys = [], []
            for h in hist:
                if key == "loss":
                    y = h.get("loss")
                elif key.startswith("term:"):
                    y = h.get("losses", {}).get(key[5:])
                else:
                    y = h.get("valid", {}).get(key[6:])
                if y is not None:
                    epochs.append(h["epoch"])
                    ys.append(y)
            if not epochs:
                continue
            color = COLORS[i % len(COLORS)]
            ax.plot(epochs, ys, "-", color=color, lw=1.5, marker=".", ms=4, label=name)
            best = run.results.get("best_epoch", -1)
            if best in epochs:
                ax.plot([best], [ys[epochs.index(best)]], "*", color=color, ms=12, mec="k", mew=0.6)
                if key.startswith("valid:"):
                    ax.axvline(best, color=color, ls=":", lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    datasets = sorted({r.dataset for r in runs})
    fig.suptitle(
        f"training curves on {', '.join(datasets)} (star: best validation epoch)", fontsize=11
    )
    return _save(fig, out)


# -------------------------------------------------------------------------------- ablation
def _group(runs: Iterable[Run]) -> dict[str, dict[str, list[Run]]]:
    """``{dataset: {model: [runs]}}`` in first-seen order."""
    out: dict[str, dict[str, list[Run]]] = {}
    for r in runs:
        out.setdefault(r.dataset, {}).setdefault(r.model, []).append(r)
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if len(values) == 1:
        return float(values[0]), 0.0
    return statistics.mean(values), statistics.stdev(values)


def _metric_of(run: Run, split: str, metric: str) -> float:
    table = run.results.get("test" if split == "test" else "best_valid") or {}
    if metric not in table:
        have = sorted(table)
        raise ValueError(f"{run.path}: no {split} metric {metric!r}; it has {have}")
    return float(table[metric])


def plot_ablation(
    workdirs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    models: Sequence[str] | None = None,
    metrics: Sequence[str] = ("recall@20", "ndcg@20"),
    split: str = "test",
    finished_only: bool = True,
) -> Path:
    """Bars of ``metrics`` (mean ± std over seeds, the number of seeds under each bar) per
    model, one panel per (dataset, metric), from ``benchmarks/compare_models.py`` work folders.
    Test metrics are those at the best validation epoch.

    Args:
        workdirs: One or more work folders (``<model>-<dataset>-seed<k>/results.json``).
        out: PNG to write.
        models: Models to show, in this order (default: all, in the order found).
        metrics: Metrics to show.
        split: ``"test"`` (at the best validation epoch) or ``"valid"`` (the best).
        finished_only: Skip runs still training.
    """
    if split not in ("test", "valid"):
        raise ValueError(f"--split must be 'test' or 'valid', got {split!r}")
    metrics = [_check_metric(m) for m in metrics]
    groups = _group(find_runs(workdirs, finished_only))
    if models:
        known = {m for g in groups.values() for m in g}
        unknown = [m for m in models if m not in known]
        if unknown:
            raise ValueError(
                f"--models: no run of {unknown} in {', '.join(map(str, workdirs))}; found "
                f"{sorted(known)}"
            )
        groups = {d: {m: g[m] for m in models if m in g} for d, g in groups.items()}
        groups = {d: g for d, g in groups.items() if g}
    nmodels = max(len(g) for g in groups.values())
    fig = _figure(max(4.0, 0.9 * nmodels + 1.5) * len(metrics), 3.6 * len(groups) + 0.4)
    axes = fig.subplots(len(groups), len(metrics), squeeze=False)
    for row, (dataset, by_model) in enumerate(groups.items()):
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            names = list(by_model)
            stats = [_mean_std([_metric_of(r, split, metric) for r in by_model[m]]) for m in names]
            xs = range(len(names))
            ax.bar(
                xs,
                [s[0] for s in stats],
                yerr=[s[1] for s in stats],
                color=[COLORS[i % len(COLORS)] for i in xs],
                capsize=4,
                edgecolor="k",
                linewidth=0.5,
            )
            for x, (mean, std), m in zip(xs, stats, names, strict=True):
                text = f"{mean:.4f}" + (f"\n± {std:.4f}" if len(by_model[m]) > 1 else "")
                ax.annotate(
                    text,
                    (x, mean + std),
                    textcoords="offset points",
                    xytext=(0, 3),
                    ha="center",
                    fontsize=7,
                )
            ax.set_xticks(list(xs))
            ax.set_xticklabels(
                [f"{m}\n(n={len(by_model[m])})" for m in names],
                rotation=30,
                ha="right",
                fontsize=8,
            )
            ax.set_ylabel(f"{split} {metric}")
            ax.set_title(f"{dataset}: {split} {metric}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            ax.margins(y=0.15)
    fig.suptitle(f"{split} metrics, mean ± std over seeds (n = seeds)", fontsize=11)
    return _save(fig, out)


# ----------------------------------------------------------------------------- sensitivity
def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def plot_sensitivity(
    workdirs: Sequence[str | os.PathLike],
    params: str | Sequence[str],
    out: str | os.PathLike,
    metrics: Sequence[str] = ("recall@20", "ndcg@20"),
    split: str = "test",
    finished_only: bool = True,
) -> Path:
    """A metric against a hyper-parameter's value, one line per model (mean ± std over seeds
    at each value), one row of panels per parameter and one column per metric.

    The parameter is read from each run's ``results.json``: ``model.hparams`` first, then
    ``config`` (``lr``, ``batch_size``, ...). Runs that also differ in another hyper-parameter
    form separate lines (labelled with it); lines with a single value are left out when other
    lines have several (e.g. the runs of another sweep in the same folder). Values are placed
    at even spacing in sorted order (as in the paper's Figure 4), labelled with the value.

    Args:
        workdirs: Work folders holding ``*/results.json``.
        params: One or more hyper-parameter names, e.g. ``"align_weight"``.
        out: PNG to write.
        metrics: Metrics to plot.
        split: ``"test"`` (at the best validation epoch) or ``"valid"``.
        finished_only: Skip runs still training.
    """
    if split not in ("test", "valid"):
        raise ValueError(f"--split must be 'test' or 'valid', got {split!r}")
    params = [params] if isinstance(params, str) else list(params)
    if not params:
        raise ValueError("--param: give at least one hyper-parameter name")
    metrics = [_check_metric(m) for m in metrics]
    runs = find_runs(workdirs, finished_only)
    fig = _figure(4.6 * len(metrics), 3.6 * len(params) + 0.5)
    axes = fig.subplots(len(params), len(metrics), squeeze=False)
    for row, param in enumerate(params):
        lines, extras = _sensitivity_lines(_runs_recording(runs, param, workdirs), param)
        for col, metric in enumerate(metrics):
            _draw_sensitivity(axes[row][col], lines, extras, param, metric, split)
    fig.suptitle(
        f"sensitivity on {', '.join(sorted({r.dataset for r in runs}))} "
        "(mean ± std over seeds where several)",
        fontsize=11,
    )
    return _save(fig, out)


def _runs_recording(runs: Sequence[Run], param: str, workdirs: Sequence) -> list[Run]:
    """The runs that record ``param`` (see :meth:`Run.value`).

    Raises:
        ValueError: none does.
    """
    having = [r for r in runs if r.value(param) is not None]
    if not having:
        known = sorted({k for r in runs for k in r.hparams} | {"lr", "batch_size"})
        raise ValueError(
            f"--param {param!r}: no run in {', '.join(map(str, workdirs))} records it; the "
            f"runs record {known}"
        )
    return having


def _sensitivity_lines(
    having: Sequence[Run], param: str
) -> tuple[dict[tuple, list[Run]], dict[tuple, str]]:
    """The runs of each line: ``({(model, dataset, *other varying values): runs}, {key: label
    suffix})``. Within a model, hyper-parameters (other than ``param``) that differ split the
    lines; lines with a single value of ``param`` are dropped if others have several."""
    by_model: dict[tuple[str, str], list[Run]] = {}
    for r in having:
        by_model.setdefault((r.model, r.dataset), []).append(r)
    lines: dict[tuple, list[Run]] = {}
    extras: dict[tuple, str] = {}
    for (model, dataset), rs in by_model.items():
        keys = sorted({k for r in rs for k in r.hparams} - {param})
        varying = [k for k in keys if len({json.dumps(r.hparams.get(k)) for r in rs}) > 1]
        for r in rs:
            vals = tuple(json.dumps(r.hparams.get(k)) for k in varying)
            key = (model, dataset, *vals)
            lines.setdefault(key, []).append(r)
            extras[key] = ", ".join(
                f"{k}={_fmt_value(json.loads(v))}" for k, v in zip(varying, vals, strict=True)
            )
    multi = {k: v for k, v in lines.items() if len({json.dumps(r.value(param)) for r in v}) > 1}
    return (multi or lines), extras


def _param_values(lines: dict[tuple, list[Run]], param: str) -> list[str]:
    """The JSON texts of ``param``'s values over all lines, sorted (numbers first)."""
    return sorted(
        {json.dumps(r.value(param)) for v in lines.values() for r in v},
        key=lambda s: (not isinstance(json.loads(s), (int, float)), json.loads(s)),
    )


def _line_label(key: tuple, extras: dict[tuple, str], nlines: int, ndatasets: int) -> str:
    label = key[0] + (f" ({key[1]})" if ndatasets > 1 else "")
    if extras[key] and nlines > 1:
        extra = extras[key]
        label += " [" + (extra if len(extra) <= 60 else extra[:57] + "...") + "]"
    return label


def _draw_sensitivity(
    ax,
    lines: dict[tuple, list[Run]],
    extras: dict[tuple, str],
    param: str,
    metric: str,
    split: str,
) -> None:
    """One panel: ``metric`` (mean ± std) at each value of ``param``, a line per entry of
    ``lines``; values evenly spaced in sorted order."""
    values = _param_values(lines, param)
    pos = {v: i for i, v in enumerate(values)}
    datasets = {k[1] for k in lines}
    for i, (key, rs) in enumerate(lines.items()):
        by_value: dict[str, list[float]] = {}
        for r in rs:
            by_value.setdefault(json.dumps(r.value(param)), []).append(
                _metric_of(r, split, metric)
            )
        xs = sorted(by_value, key=pos.__getitem__)
        stats = [_mean_std(by_value[x]) for x in xs]
        ax.errorbar(
            [pos[x] for x in xs],
            [s[0] for s in stats],
            yerr=[s[1] for s in stats],
            marker="o",
            capsize=3,
            color=COLORS[i % len(COLORS)],
            label=_line_label(key, extras, len(lines), len(datasets)),
        )
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels([_fmt_value(json.loads(v)) for v in values])
    ax.set_xlabel(param)
    ax.set_ylabel(f"{split} {metric}")
    ax.set_title(f"{split} {metric} vs {param}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


# ------------------------------------------------------------------------------ embeddings
def embedding_points(
    model: torch.nn.Module, items: int = 200, seed: int = 0, parts: str = "auto"
) -> tuple[torch.Tensor, list[str], list[str], torch.Tensor]:
    """The separate-learning representations of a random sample of items.

    Uses ``model.separate_parts()`` (:class:`~sea_pyg.models.SEA` and the ``+sea`` models):
    per modality the generic ``g`` and unique ``u`` parts the distancing loss sees, and the
    projections ``z`` of the generic part the alignment loss sees. Parts of different widths
    are zero-padded to the widest.

    Args:
        model: A trained model with ``separate_parts()``.
        items: Number of items, drawn without replacement with a seeded generator.
        seed: Seed of the draw.
        parts: ``"gu"`` (generic and unique parts), ``"z"`` (alignment projections), or
            ``"auto"`` (``"gu"`` if the model has distancing, else ``"z"``).

    Returns:
        ``(points, group_of_row, groups, item_ids)``: ``points`` is ``(rows, D)``; each row's
        group is ``"<modality> <part name>"``; ``groups`` lists them in drawing order.

    Raises:
        ValueError: the model has no separate parts (e.g. LightGCN, or SEA trained without
            alignment and distancing).
    """
    name = getattr(model, "checkpoint", {}).get("model_info", {}).get("name", type(model).__name__)
    if not hasattr(model, "separate_parts"):
        raise ValueError(
            f"model {name!r} has no separate parts (generic/unique representations): "
            "plot embeddings needs SEA (any preset with alignment or distancing) or a +sea model"
        )
    if parts not in ("auto", "gu", "z"):
        raise ValueError(f"--parts must be auto, gu or z, got {parts!r}")
    model.eval()
    with torch.no_grad():
        found = model.separate_parts()
    if not any(found.values()):
        raise ValueError(
            f"model {name!r} has no separate parts: it was trained with alignment and distancing "
            "switched off (e.g. sea-noboth), so there is no generic/unique split to plot"
        )
    if parts == "auto":
        parts = "gu" if any("g" in p for p in found.values()) else "z"
    kind = ["g", "u"] if parts == "gu" else ["z"]
    if not any(k in p for p in found.values() for k in kind):
        what = "distancing (no generic/unique parts)" if parts == "gu" else "alignment (no z)"
        raise ValueError(f"--parts {parts}: model {name!r} was trained without {what}")
    n = next(p[k] for p in found.values() for k in kind if k in p).size(0)
    if items < 2:
        raise ValueError(f"--items must be >= 2, got {items}")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=gen)[: min(items, n)]
    blocks, group_of_row, groups = [], [], []
    for m, p in found.items():
        for k in kind:
            if k not in p:
                continue
            label = f"{m} {PART_NAMES[k]}"
            blocks.append(p[k][idx].float().cpu())
            group_of_row += [label] * idx.numel()
            groups.append(label)
    width = max(b.size(1) for b in blocks)
    blocks = [torch.nn.functional.pad(b, (0, width - b.size(1))) for b in blocks]
    return torch.cat(blocks), group_of_row, groups, idx


def _to_2d(points: torch.Tensor, method: str, seed: int) -> tuple[torch.Tensor, str]:
    if method not in ("auto", "tsne", "pca"):
        raise ValueError(f"--method must be auto, tsne or pca, got {method!r}")
    if method in ("auto", "tsne"):
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            if method == "tsne":
                raise ImportError(
                    "--method tsne needs scikit-learn (pip install scikit-learn); "
                    "--method pca works without it"
                ) from None
        else:
            perplexity = float(min(30.0, (points.size(0) - 1) / 3))
            xy = TSNE(
                n_components=2, perplexity=perplexity, init="pca", random_state=seed
            ).fit_transform(points.double().numpy())
            return torch.from_numpy(xy), "t-SNE"
    torch.manual_seed(seed)
    x = points.double()
    u, s, _ = torch.pca_lowrank(x, q=min(2, *x.shape), center=True)
    xy = u[:, :2] * s[:2]
    if xy.size(1) < 2:
        xy = torch.nn.functional.pad(xy, (0, 2 - xy.size(1)))
    return xy, "PCA"


def plot_embeddings(
    model: torch.nn.Module,
    out: str | os.PathLike,
    items: int = 200,
    seed: int = 0,
    method: str = "auto",
    parts: str = "auto",
    title: str | None = None,
) -> Path:
    """Scatter a trained SEA model's generic and unique item parts per modality in 2-D (four
    colours with two modalities), as the paper's Figures 5 and 6.

    Args:
        model: A model with ``separate_parts()`` (e.g. from :func:`sea_pyg.load_model`).
        out: PNG to write.
        items: Number of randomly drawn items (the paper uses 200).
        seed: Seed of the draw and of t-SNE.
        method: ``"auto"`` (t-SNE if scikit-learn is importable, else PCA), ``"tsne"`` or
            ``"pca"`` (``torch.pca_lowrank``).
        parts: ``"gu"``, ``"z"`` or ``"auto"``; see :func:`embedding_points`.
        title: Figure title (default: model name, method, items).
    """
    points, group_of_row, groups, idx = embedding_points(model, items, seed, parts)
    xy, used = _to_2d(points, method, seed)
    fig = _figure(6.0, 5.2)
    ax = fig.subplots()
    markers = {"generic": "o", "unique": "^", "projection": "s"}
    for i, g in enumerate(groups):
        rows = torch.tensor([r == g for r in group_of_row])
        ax.scatter(
            xy[rows, 0].numpy(),
            xy[rows, 1].numpy(),
            s=12,
            alpha=0.75,
            color=COLORS[i % len(COLORS)],
            marker=markers.get(g.split()[-1], "o"),
            label=g,
            linewidths=0,
        )
    ax.legend(fontsize=8, markerscale=1.5)
    ax.set_xticks([])
    ax.set_yticks([])
    what = (
        "generic/unique parts"
        if any(g.endswith(("generic", "unique")) for g in groups)
        else "alignment projections"
    )
    info = getattr(model, "checkpoint", {})
    name = info.get("model_info", {}).get("name", type(model).__name__)
    dataset = info.get("dataset", {}).get("name", "")
    ax.set_title(
        title or f"{name} on {dataset}: {used} of {what} of {idx.numel()} random items",
        fontsize=10,
    )
    return _save(fig, out)
