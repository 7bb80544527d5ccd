"""Figures from a ``sea-pyg tune`` study (its ``study.db``, read with Optuna).

* :func:`plot_trials`: the optimisation history, each finished trial's best validation value
  in trial order, pruned trials at their last reported value, and the best so far.
* :func:`plot_study_sensitivity`: the paper's Figure 4 from a study: a metric against each
  hyper-parameter's value with the others at the chosen trial's values (a line through the
  trials that differ from it in that one parameter), over every trial of the study in grey.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sea_pyg.plot.figures import COLORS, _check_metric, _figure, _fmt_value, _save
from sea_pyg.train.tuning import chosen_trial, load_study, study_settings, trial_rows

__all__ = ["plot_trials", "plot_study_sensitivity", "is_study"]


def is_study(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a study folder (holds ``study.db``)."""
    return (Path(path) / "study.db").is_file()


def _rows(study_dir: str | os.PathLike, metric: str):
    study = load_study(study_dir)
    settings = study_settings(study)
    metrics = list(dict.fromkeys([metric, settings["train"]["valid_metric"]]))
    return study, settings, trial_rows(study, metrics)


def plot_trials(
    study_dir: str | os.PathLike, out: str | os.PathLike, metric: str | None = None
) -> Path:
    """The optimisation history of the study in ``study_dir``.

    x: trial number; y: the trial's best validation ``metric`` (default: the study's
    objective); complete trials as dots, pruned ones as crosses at their last reported
    validation value, the running best of complete trials as a step line, the chosen trial
    ringed.

    Raises:
        TuningError: no study there. ValueError: no finished trial, or an unknown metric.
    """
    study, settings, rows = _rows(study_dir, metric or "recall@20")
    objective = settings["train"]["valid_metric"]
    metric = _check_metric(metric or objective)
    done = [r for r in rows if r["state"] == "COMPLETE" and r[f"valid:{metric}"] is not None]
    if not done:
        raise ValueError(f"{study_dir}: no complete trial records valid {metric} yet")
    pruned = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state.name == "PRUNED" and t.intermediate_values
    ]
    fig = _figure(6.4, 3.8)
    ax = fig.subplots()
    xs = [r["number"] for r in done]
    ys = [r[f"valid:{metric}"] for r in done]
    ax.plot(xs, ys, "o", color=COLORS[0], label="complete trial")
    if pruned:
        ax.plot(
            [t.number for t in pruned],
            [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
            "x",
            color=COLORS[1],
            label="pruned (last value)",
        )
    best, run = [], float("-inf")
    for y in ys:
        run = max(run, y)
        best.append(run)
    ax.step(xs, best, where="post", color=COLORS[2], label="best so far")
    chosen = chosen_trial(study, "valid")
    if metric == objective:
        ax.plot(
            [chosen.number],
            [chosen.value],
            "o",
            markersize=12,
            markerfacecolor="none",
            color="black",
            label=f"chosen: trial {chosen.number}",
        )
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"best valid {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(
        f"{settings['model']}: {settings['sampler']} sampler, {len(done)} complete, "
        f"{len(pruned)} pruned trial(s)",
        fontsize=10,
    )
    return _save(fig, out)


def _key(v: Any) -> str:
    return json.dumps(v, sort_keys=True)


def plot_study_sensitivity(
    study_dir: str | os.PathLike,
    out: str | os.PathLike,
    params: list[str] | None = None,
    metrics: list[str] | tuple[str, ...] = ("recall@20", "ndcg@20"),
    split: str = "test",
) -> Path:
    """The paper's Figure 4 from a study: for each parameter (row) and metric (column), the
    metric (``split``: test at the best validation epoch, or valid) against the parameter's
    value, the other parameters held at the chosen trial's values (the chosen trial is the
    best by validation), over all complete trials in grey.

    Raises:
        TuningError: no study there. ValueError: a parameter the study does not search, a
            bad metric, or no complete trial.
    """
    if split not in ("test", "valid"):
        raise ValueError(f"--split must be 'test' or 'valid', got {split!r}")
    metrics = [_check_metric(m) for m in metrics]
    study = load_study(study_dir)
    settings = study_settings(study)
    rows = [r for r in trial_rows(study, metrics) if r["state"] == "COMPLETE"]
    names = list(settings["space"])
    params = list(params or names)
    unknown = [p for p in params if p not in names]
    if unknown:
        raise ValueError(
            f"--param {', '.join(unknown)}: the study in {study_dir} searches {', '.join(names)}"
        )
    if not rows:
        raise ValueError(f"{study_dir}: no complete trial yet")
    chosen = chosen_trial(study, "valid").number
    best = next(r for r in rows if r["number"] == chosen)
    fig = _figure(4.4 * len(metrics), 3.4 * len(params) + 0.5)
    axes = fig.subplots(len(params), len(metrics), squeeze=False)
    for i, param in enumerate(params):
        others = [n for n in names if n != param]
        values = sorted(
            {_key(r[param]) for r in rows},
            key=lambda s: (not isinstance(json.loads(s), (int, float)), json.loads(s)),
        )
        spec = settings["space"][param]
        ranged = "choices" not in spec  # a range: the real axis (log if sampled so)
        pos = {v: json.loads(v) for v in values} if ranged else {v: k for k, v in enumerate(values)}
        line = [r for r in rows if all(_key(r[o]) == _key(best[o]) for o in others)]
        line.sort(key=lambda r: pos[_key(r[param])])
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            col = f"{split}:{metric}"
            ax.plot(
                [pos[_key(r[param])] for r in rows],
                [r[col] for r in rows],
                "o",
                color="0.75",
                label="all trials",
            )
            ax.plot(
                [pos[_key(r[param])] for r in line],
                [r[col] for r in line],
                "-o",
                color=COLORS[0],
                label="others at the chosen values",
            )
            ax.plot(
                [pos[_key(best[param])]],
                [best[col]],
                "o",
                markersize=11,
                markerfacecolor="none",
                color="black",
                label=f"chosen (trial {chosen})",
            )
            if ranged:
                ax.set_xscale("log" if spec.get("log") else "linear")
            else:
                ax.set_xticks(range(len(values)))
                ax.set_xticklabels([_fmt_value(json.loads(v)) for v in values], fontsize=8)
            ax.set_xlabel(param)
            ax.set_ylabel(f"{split} {metric}")
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fixed = ", ".join(f"{n}={_fmt_value(best[n])}" for n in names)
    fig.suptitle(
        f"{settings['model']}: {split} metrics (at each trial's best validation epoch); "
        f"chosen by validation: {fixed}",
        fontsize=9,
    )
    return _save(fig, out)
