r"""One configuration trained over several seeds, and the mean ± standard deviation of its metrics.

A single run's metric is one draw: the seed sets the initial weights, the order of the mini-batches
and the negatives. Over :math:`n` seeds with values :math:`x_1, \dots, x_n` of a metric,
:func:`seed_summary` reports the mean :math:`\bar x = \frac1n \sum_i x_i` and the **sample**
standard deviation

.. math::
    s = \sqrt{\frac{1}{n - 1} \sum_i (x_i - \bar x)^2}

(not defined for one seed: ``nan``, shown as the mean alone), for every validation metric at the
best validation epoch, every test metric at that epoch, the best epoch, the epochs run and the
seconds per training epoch. Whether two configurations differ beyond this seed noise is a question
for :mod:`sea_pyg.train.significance` (a paired test over the users).

:func:`train_seeds` trains a model over seeds from Python; ``sea-pyg train --seeds 1 2 3`` does it
from the command line (one run folder per seed).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch_geometric.data import HeteroData

from sea_pyg.models.base import Recommender
from sea_pyg.train.config import TrainConfig
from sea_pyg.train.runfolder import check_output_dir
from sea_pyg.train.trainer import Trainer, seed_everything

__all__ = [
    "MeanStd",
    "SeedRuns",
    "check_seeds",
    "seed_summary",
    "format_seed_summary",
    "train_seeds",
]

#: The per-run numbers :func:`seed_summary` reports besides the metrics (``results.json`` keys).
RUN_NUMBERS = ("best_epoch", "epochs_run", "train_seconds_per_epoch")


@dataclass(frozen=True)
class MeanStd:
    """Mean and sample standard deviation of one number over seeds.

    Attributes:
        mean: :math:`\\bar x`.
        std: :math:`s` (``n - 1`` in the denominator; ``nan`` for one value).
        values: The values, in the order of the runs.
    """

    mean: float
    std: float
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @classmethod
    def of(cls, values: Sequence[float]) -> MeanStd:
        vals = tuple(float(v) for v in values)
        if not vals:
            raise ValueError("MeanStd.of: no values")
        std = statistics.stdev(vals) if len(vals) > 1 else math.nan
        return cls(statistics.fmean(vals), std, vals)

    def format(self, digits: int = 4) -> str:
        """``"0.1234 ± 0.0012"`` (the mean alone for one value)."""
        if math.isnan(self.std):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": None if math.isnan(self.std) else self.std,
                "n": self.n, "values": list(self.values)}


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """``seeds`` as a list of distinct integers >= 0.

    Raises:
        ValueError: empty, not integers, negative, or a seed given twice (named).
    """
    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"seeds: each seed must be an integer >= 0, got {s!r}")
        if s in out:
            raise ValueError(f"seeds: seed {s} is given twice; each seed trains one run")
        out.append(s)
    if not out:
        raise ValueError("seeds: give at least one seed")
    return out


def _label(result: Mapping[str, Any], i: int) -> str:
    config = result.get("config") if isinstance(result.get("config"), Mapping) else {}
    if config.get("output_dir"):
        return str(config["output_dir"])
    return f"run {i + 1} (seed {config.get('seed', '?')})"


def seed_summary(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, MeanStd]]:
    """Mean ± std over runs (e.g. one per seed) of every reported number.

    Args:
        results: The runs' results (:meth:`~sea_pyg.train.Trainer.fit`'s return value or
            ``results.json``).

    Returns:
        ``{"valid": {metric: MeanStd}, "test": {metric: MeanStd}, "run": {"best_epoch",
        "epochs_run", "train_seconds_per_epoch": MeanStd}}``; metrics in the first run's order.

    Raises:
        ValueError: no runs, a run without metrics (it never finished an evaluation), or runs
            that report different metrics (each named).
    """
    if not results:
        raise ValueError("seed_summary: no runs")
    out: dict[str, dict[str, MeanStd]] = {}
    for split, key in (("valid", "best_valid"), ("test", "test")):
        names: list[str] | None = None
        for i, res in enumerate(results):
            metrics = res.get(key) or {}
            if not metrics:
                raise ValueError(
                    f"{_label(res, i)} has no {split} metrics: it never finished an evaluation"
                )
            if names is None:
                names = list(metrics)
            elif set(metrics) != set(names):
                raise ValueError(
                    f"the runs report different {split} metrics: {_label(results[0], 0)} has "
                    f"{sorted(names)}, {_label(res, i)} has {sorted(metrics)}; give them the same "
                    "topk and metrics"
                )
        out[split] = {n: MeanStd.of([r[key][n] for r in results]) for n in names or []}
    out["run"] = {
        k: MeanStd.of([r[k] for r in results])
        for k in RUN_NUMBERS if all(isinstance(r.get(k), (int, float)) for r in results)
    }
    return out


def format_seed_summary(summary: Mapping[str, Mapping[str, MeanStd]], digits: int = 4) -> str:
    """A table of :func:`seed_summary`: a row per metric, columns valid and test, then the best
    epoch, epochs run and seconds per epoch."""
    valid, test = summary.get("valid", {}), summary.get("test", {})
    names = list(dict.fromkeys([*valid, *test]))
    cells = [(n, valid[n].format(digits) if n in valid else "-",
              test[n].format(digits) if n in test else "-") for n in names]
    run_names = {"best_epoch": "best epoch", "epochs_run": "epochs run",
                 "train_seconds_per_epoch": "s/epoch"}
    extra = [(run_names.get(k, k), v.format(1 if k != "train_seconds_per_epoch" else 2))
             for k, v in summary.get("run", {}).items()]
    width = max([len(c[0]) for c in cells] + [len(e[0]) for e in extra] + [6]) + 2
    col = max([len(c[1]) for c in cells] + [len(c[2]) for c in cells] + [10]) + 2
    lines = [" " * width + f"{'valid':<{col}s}{'test @ best valid':s}"]
    lines += [f"{n:<{width}s}{v:<{col}s}{t}" for n, v, t in cells]
    lines += [f"{n:<{width}s}{v}" for n, v in extra]
    return "\n".join(lines)


@dataclass(frozen=True)
class SeedRuns:
    """What :func:`train_seeds` returns.

    Attributes:
        seeds: The seeds, in training order.
        results: Each run's :meth:`~sea_pyg.train.Trainer.fit` results.
        summary: :func:`seed_summary` of ``results``.
        folders: Each run's folder (``None`` entries without ``output_dir``).
    """

    seeds: tuple[int, ...]
    results: tuple[dict[str, Any], ...]
    summary: dict[str, dict[str, MeanStd]]
    folders: tuple[str | None, ...]


def train_seeds(
    build: Callable[[], tuple[Recommender, Mapping[str, Any]]],
    data: HeteroData,
    config: TrainConfig,
    seeds: Sequence[int],
    output_dir: str | None = None,
) -> SeedRuns:
    """Trains the same configuration once per seed and summarises the runs.

    For each seed: :func:`~sea_pyg.train.seed_everything` (seed), ``build()`` (so the model's
    initial weights depend on the seed; inside :meth:`TrainConfig.knn_scope
    <sea_pyg.train.TrainConfig.knn_scope>`, so that its item graphs follow
    ``config.knn_backend``), then a :class:`~sea_pyg.train.Trainer` with ``config`` at that
    seed.

    Args:
        build: Returns ``(model, model_info)``, e.g.
            ``lambda: build_model("lightgcn", data)[:2]``.
        data: The dataset.
        config: The training settings; its ``seed`` and ``output_dir`` are replaced per run.
        seeds: Distinct integers >= 0.
        output_dir: Template of the run folders with ``{seed}``, e.g.
            ``"runs/lightgcn-small-seed{seed}"`` (``None``: nothing written; with one seed the
            template may omit ``{seed}``). ``config.resume`` / ``overwrite`` apply to each.

    Raises:
        ValueError: bad seeds, a template without ``{seed}`` for several seeds, a run folder
            that holds a run (without ``resume`` / ``overwrite``; all checked before the first
            run trains), and what :class:`~sea_pyg.train.Trainer` raises.
    """
    seeds = check_seeds(seeds)
    if output_dir is not None and "{seed}" not in output_dir and len(seeds) > 1:
        raise ValueError(
            f"output_dir {output_dir!r} must contain '{{seed}}' (one run folder per seed), e.g. "
            f"'{output_dir}-seed{{seed}}'"
        )
    folders = [output_dir.replace("{seed}", str(s)) if output_dir else None for s in seeds]
    for folder in folders:  # every folder refused before anything is trained
        if folder is not None:
            check_output_dir(folder, config.resume, config.overwrite)
    results = []
    for seed, folder in zip(seeds, folders, strict=True):
        cfg = dataclasses.replace(config, seed=seed, output_dir=folder)
        seed_everything(seed)
        with cfg.knn_scope():  # the model's k-NN graphs with config.knn_backend
            model, info = build()
        results.append(Trainer(model, data, cfg, model_info=dict(info)).fit())
    return SeedRuns(tuple(seeds), tuple(results), seed_summary(results), tuple(folders))
