r"""Paired significance tests between two runs, or two groups of runs, on the same users.

Two models evaluated on the same :math:`n` users give paired per-user values
:math:`(a_u, b_u)` of a metric (saved by every run, see :mod:`sea_pyg.train.per_user`); the
differences :math:`d_u = a_u - b_u` carry the evidence. For a **group** of runs (e.g. one
configuration over several seeds), :math:`a_u` is the mean of user :math:`u`'s values over the
group's runs, so the test asks whether the models differ on the users, with the seed noise
averaged out (the users, not the seeds, are the sample).

**Paired t-test** (SciPy's :func:`~scipy.stats.ttest_rel`): with :math:`\bar d` the mean and
:math:`s_d` the sample standard deviation (:math:`n - 1` in the denominator) of the differences,

.. math::
    t = \frac{\bar d}{s_d / \sqrt n}, \qquad \nu = n - 1 \text{ degrees of freedom};

its effect size is Cohen's :math:`d_z = \bar d / s_d` (the mean difference in standard
deviations of the differences).

**Wilcoxon signed-rank test** (SciPy's :func:`~scipy.stats.wilcoxon` on the non-zero
differences, zero differences dropped first, with SciPy's ``method="auto"``: the exact null
distribution for at most 50 differences without ties; with tied :math:`|d_u|`, all sign flips
for at most 13, else the normal approximation with tie correction and no continuity
correction). With :math:`R^+` and :math:`R^-` the sums of the ranks of :math:`|d_u|` (average
ranks for ties) over the positive and the negative differences, its effect size is the
matched-pairs rank-biserial correlation

.. math::
    r = \frac{R^+ - R^-}{R^+ + R^-} \in [-1, 1]

(1: A better on every user where they differ). Ranking metrics tie a lot (many users have
recall 0 under both models); those users carry no sign and are dropped, their number is reported.
Differences are rounded to 12 decimals before ranking, so that the floating-point noise of a
group mean does not turn a tie into a difference.

``alternative``: ``"two-sided"`` (A and B differ), ``"greater"`` (A is better), ``"less"``.
Several metrics tested at once are several tests: no correction for multiple comparisons is
applied.

Needs SciPy (``pip install "sea-pyg[stats]"``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sea_pyg.train.checkpoint import data_differences
from sea_pyg.train.per_user import SPLITS, PerUserMetrics, load_per_user

__all__ = [
    "PairedTest",
    "SignificanceError",
    "paired_test",
    "compare_runs",
    "group_values",
    "ALTERNATIVES",
]

ALTERNATIVES = ("two-sided", "greater", "less")
#: Differences are rounded to this many decimals before the signed-rank test.
DECIMALS = 12


class SignificanceError(ValueError):
    """Runs that cannot be compared (other data or users, a missing metric, ...)."""


def _scipy_stats():
    try:
        from scipy import stats
    except ModuleNotFoundError:
        raise ImportError(
            'the paired tests need SciPy: pip install "sea-pyg[stats]" (or pip install scipy)'
        ) from None
    return stats


@dataclass(frozen=True)
class PairedTest:
    """The result of :func:`paired_test` (A against B on one metric).

    Attributes:
        metric, split: What was compared (``"recall@20"``, ``"test"``).
        n: Number of paired users.
        mean_a, mean_b: The metric's mean over the users (the runs' reported value; for a group,
            the mean over its runs).
        mean_diff: :math:`\\bar d`, the mean of ``a - b``.
        t_statistic, t_pvalue: The paired t-test.
        cohen_dz: Cohen's :math:`d_z = \\bar d / s_d` (``±inf`` when every difference is the
            same non-zero value, 0 when all are zero).
        wilcoxon_statistic, wilcoxon_pvalue: The signed-rank test (SciPy's statistic: the
            smaller rank sum for ``"two-sided"``, :math:`R^+` otherwise).
        rank_biserial: :math:`(R^+ - R^-) / (R^+ + R^-)`.
        n_ties: Users with equal values (dropped by the signed-rank test).
        alternative: ``"two-sided"``, ``"greater"`` (A better) or ``"less"``.
        runs_a, runs_b: The runs of each side (folders, or labels).
    """

    metric: str
    split: str
    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    t_statistic: float
    t_pvalue: float
    cohen_dz: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float
    rank_biserial: float
    n_ties: int
    alternative: str = "two-sided"
    runs_a: tuple[str, ...] = ()
    runs_b: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (non-finite numbers as strings ``"inf"``...)."""
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = str(v)
            elif isinstance(v, tuple):
                out[k] = list(v)
        return out


def paired_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    alternative: str = "two-sided",
    metric: str = "",
    split: str = "",
) -> PairedTest:
    """Paired t-test and Wilcoxon signed-rank test of ``a`` against ``b`` (see the module's
    documentation for the statistics and effect sizes).

    Args:
        a, b: ``(n,)`` per-user values of the same users in the same order, ``n >= 2``.
        alternative: ``"two-sided"``, ``"greater"`` (``a`` larger) or ``"less"``.
        metric, split: Labels stored in the result.

    Degenerate cases SciPy answers with NaN: when every difference is zero, both p-values are
    1 and both effect sizes 0; when every difference is the same non-zero value, :math:`t` and
    :math:`d_z` are infinite and the t-test's p-value is 0 (1 for the one-sided alternative
    that points the other way).

    Raises:
        ValueError: shapes differ, fewer than 2 users, non-finite values, unknown
            ``alternative``.
        ImportError: SciPy is not installed.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {list(ALTERNATIVES)}, got {alternative!r}")
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(
            f"paired values need one value per user on both sides: got {x.size} and {y.size}"
        )
    if x.size < 2:
        raise ValueError(f"a paired test needs at least 2 users, got {x.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("the per-user values must be finite numbers")
    stats = _scipy_stats()
    d = np.round(x - y, DECIMALS)
    nonzero = d[d != 0]
    common = dict(
        metric=metric, split=split, n=int(x.size), mean_a=float(x.mean()),
        mean_b=float(y.mean()), mean_diff=float((x - y).mean()),
        n_ties=int(x.size - nonzero.size), alternative=alternative,
    )
    if nonzero.size == 0:
        return PairedTest(
            t_statistic=0.0, t_pvalue=1.0, cohen_dz=0.0, wilcoxon_statistic=0.0,
            wilcoxon_pvalue=1.0, rank_biserial=0.0, **common,
        )
    mean = float((x - y).mean())
    if np.all(d == d[0]):  # one non-zero difference for every user: s_d = 0, t = ±inf
        dz = t_stat = math.copysign(math.inf, mean)
        agrees = alternative == "two-sided" or (alternative == "greater") == (mean > 0)
        t_p = 0.0 if agrees else 1.0
    else:
        dz = mean / float(np.std(x - y, ddof=1))
        t = stats.ttest_rel(x, y, alternative=alternative)
        t_stat, t_p = float(t.statistic), float(t.pvalue)
    w = stats.wilcoxon(nonzero, alternative=alternative)
    ranks = stats.rankdata(np.abs(nonzero))
    r_plus, r_minus = float(ranks[nonzero > 0].sum()), float(ranks[nonzero < 0].sum())
    return PairedTest(
        t_statistic=t_stat, t_pvalue=t_p, cohen_dz=dz,
        wilcoxon_statistic=float(w.statistic), wilcoxon_pvalue=float(w.pvalue),
        rank_biserial=(r_plus - r_minus) / (r_plus + r_minus), **common,
    )


def _load(run: PerUserMetrics | str | os.PathLike, split: str) -> PerUserMetrics:
    if isinstance(run, PerUserMetrics):
        if run.split != split:
            raise SignificanceError(
                f"{run.label}: holds {run.split!r} values, the comparison is on {split!r}"
            )
        return run
    try:
        return load_per_user(run, split)
    except FileNotFoundError as exc:
        raise SignificanceError(str(exc)) from None


def _check_same_data(runs: list[PerUserMetrics]) -> None:
    """Same data fingerprint (where known) and same users, else a :class:`SignificanceError`."""
    first = runs[0]
    for run in runs[1:]:
        if first.data and run.data:
            diffs = data_differences(first.data, run.data)
            if diffs:
                raise SignificanceError(
                    f"{first.label} and {run.label} were trained on different data (they "
                    f"differ in: {'; '.join(diffs)}); a paired test needs the same users and "
                    "held-out items: compare runs on one dataset"
                )
        if not np.array_equal(first.users, run.users):
            only_a = np.setdiff1d(first.users, run.users)
            only_b = np.setdiff1d(run.users, first.users)
            detail = (
                f"{first.users.size} vs {run.users.size} users"
                + (f"; e.g. user {int(only_a[0])} only in the first" if only_a.size else "")
                + (f"; e.g. user {int(only_b[0])} only in the second" if only_b.size else "")
            )
            raise SignificanceError(
                f"{first.label} and {run.label} evaluate different users on {first.split} "
                f"({detail}): a paired test needs runs on the same data"
            )


def group_values(runs: Sequence[PerUserMetrics], metric: str) -> np.ndarray:
    """Each user's mean of ``metric`` over ``runs`` (which must evaluate the same users)."""
    cols = []
    for run in runs:
        try:
            cols.append(run.metric(metric))
        except KeyError as exc:
            raise SignificanceError(exc.args[0]) from None
    return np.mean(np.stack(cols), axis=0)


def compare_runs(
    group_a: Sequence[PerUserMetrics | str | os.PathLike] | PerUserMetrics | str | os.PathLike,
    group_b: Sequence[PerUserMetrics | str | os.PathLike] | PerUserMetrics | str | os.PathLike,
    metrics: Sequence[str] = ("recall@20", "ndcg@20"),
    split: str = "test",
    alternative: str = "two-sided",
    allow_unfinished: bool = False,
) -> list[PairedTest]:
    """:func:`paired_test` of run(s) A against run(s) B on each metric, per user.

    Args:
        group_a, group_b: A run (folder, or :class:`~sea_pyg.train.per_user.PerUserMetrics`)
            or a list of runs; a list is one group, its per-user values averaged over its runs.
        metrics: Metric names, e.g. ``("recall@20", "ndcg@20")``.
        split: ``"test"`` (default) or ``"valid"`` values (both at each run's best validation
            epoch).
        alternative: See :func:`paired_test` (``"greater"``: A is better).
        allow_unfinished: Also accept runs that are still training or were interrupted (their
            values are those of their best epoch so far).

    Raises:
        SignificanceError: an empty group, a run given twice, an unfinished run, runs on
            different data or users, a metric a run lacks (each message names the runs).
        ValueError / FileNotFoundError: a folder that is not a run with per-user metrics.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {list(ALTERNATIVES)}, got {alternative!r}")
    if isinstance(metrics, str):
        metrics = [metrics]
    if not metrics:
        raise ValueError("metrics: give at least one metric, e.g. recall@20")
    groups = []
    for side, group in (("A", group_a), ("B", group_b)):
        items = [group] if isinstance(group, (str, os.PathLike, PerUserMetrics)) else list(group)
        if not items:
            raise SignificanceError(f"group {side} has no run")
        groups.append([_load(r, split) for r in items])
    seen: dict[str, str] = {}
    for side, runs in zip("AB", groups, strict=True):
        for run in runs:
            if run.run is None:
                continue
            key = str(Path(run.run).resolve())
            if key in seen:
                where = "twice in group " + side if seen[key] == side else "in both groups"
                raise SignificanceError(f"the run {run.run} is given {where}")
            seen[key] = side
            if not allow_unfinished and run.status not in (None, "finished"):
                raise SignificanceError(
                    f"the run {run.run} is {run.status}: its per-user values are those of its "
                    "best epoch so far. Finish it (--resume), or allow unfinished runs "
                    "(allow_unfinished=True, --include-unfinished)"
                )
    everyone = groups[0] + groups[1]
    _check_same_data(everyone)
    out = []
    for metric in metrics:
        a = group_values(groups[0], metric)
        b = group_values(groups[1], metric)
        test = paired_test(a, b, alternative=alternative, metric=metric, split=split)
        out.append(
            PairedTest(**{
                **asdict(test),
                "runs_a": tuple(r.label for r in groups[0]),
                "runs_b": tuple(r.label for r in groups[1]),
            })
        )
    return out
