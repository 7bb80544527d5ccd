"""Paired tests (sea_pyg.train.significance): p-values against SciPy and against hand
computations (the exact signed-rank distribution by enumerating every sign pattern, the normal
approximation with its tie correction), the effect sizes by hand, groups, and the refusals."""

import itertools
import math
import statistics

import numpy as np
import pytest
from scipy import stats

from sea_pyg.train import PerUserMetrics, SignificanceError, compare_runs, paired_test

# 10 users; every value a multiple of 1/16 so that the differences are exact, their absolute
# values distinct and none zero (the case where the signed-rank test is exact).
A = np.array([9, 4, 12, 7, 10, 3, 11, 13, 2, 15]) / 16
D = np.array([3, -1, 5, 2, 7, -4, 6, 8, -9, 10]) / 16
B = A - D


def test_t_test_and_effect_size_by_hand():
    res = paired_test(A, B)
    d = list(A - B)
    n = len(d)
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    t = mean / (sd / math.sqrt(n))
    assert res.t_statistic == pytest.approx(t, rel=1e-12)
    assert res.t_pvalue == pytest.approx(2 * stats.t.sf(abs(t), n - 1), rel=1e-10)
    assert res.cohen_dz == pytest.approx(mean / sd, rel=1e-12)
    assert res.mean_diff == pytest.approx(27 / 160)  # (3-1+5+2+7-4+6+8-9+10)/16/10
    assert (res.mean_a, res.mean_b) == (pytest.approx(A.mean()), pytest.approx(B.mean()))
    assert res.n == 10 and res.n_ties == 0
    scipy_t = stats.ttest_rel(A, B)
    assert res.t_pvalue == pytest.approx(scipy_t.pvalue, rel=1e-12)
    # one-sided: half the two-sided p in the direction of the effect
    assert paired_test(A, B, "greater").t_pvalue == pytest.approx(res.t_pvalue / 2, rel=1e-10)
    assert paired_test(A, B, "less").t_pvalue == pytest.approx(1 - res.t_pvalue / 2, rel=1e-10)


def _exact_signed_rank(d):
    """R+ and the exact two-sided p by enumerating all 2^n sign patterns of the ranks."""
    order = np.argsort(np.abs(d))
    ranks = np.empty(len(d))
    ranks[order] = np.arange(1, len(d) + 1)  # |d| distinct: ranks 1..n
    r_plus = ranks[d > 0].sum()
    sums = [sum(r for r, s in zip(ranks, signs, strict=True) if s)
            for signs in itertools.product([0, 1], repeat=len(d))]
    lower = sum(s <= r_plus for s in sums) / len(sums)
    upper = sum(s >= r_plus for s in sums) / len(sums)
    return r_plus, ranks[d < 0].sum(), min(1.0, 2 * min(lower, upper))


def test_wilcoxon_exact_p_and_rank_biserial_by_hand():
    res = paired_test(A, B)
    r_plus, r_minus, p = _exact_signed_rank(A - B)
    # ranks of |d| = 1,2,3,4,5,6,7,8,9,10 for 1,2,3,4,5,6,7,8,9,10 (/16): R- = 1 + 4 + 9
    assert (r_plus, r_minus) == (41, 14)
    assert res.wilcoxon_pvalue == pytest.approx(p, rel=1e-12)
    assert res.wilcoxon_pvalue == pytest.approx(stats.wilcoxon(A, B).pvalue, rel=1e-12)
    assert res.wilcoxon_statistic == min(r_plus, r_minus)
    assert res.rank_biserial == pytest.approx((41 - 14) / 55)


def test_wilcoxon_with_ties_and_zeros_is_the_tie_corrected_normal_approximation():
    # recall-like values: most users tie (dropped), the others tie in |d| a lot
    rng = np.random.default_rng(0)
    a = rng.choice([0.0, 0.25, 0.5, 1.0], size=300, p=[0.5, 0.2, 0.2, 0.1])
    b = np.where(rng.random(300) < 0.6, a, rng.choice([0.0, 0.5, 1.0], size=300))
    res = paired_test(a, b)
    d = a - b
    nz = d[d != 0]
    n = nz.size
    ranks = stats.rankdata(np.abs(nz))
    r_plus = ranks[nz > 0].sum()
    _, counts = np.unique(np.abs(nz), return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24 - (counts**3 - counts).sum() / 48
    z = (r_plus - n * (n + 1) / 4) / math.sqrt(var)
    assert res.n_ties == 300 - n and n > 50
    assert res.wilcoxon_pvalue == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    assert res.wilcoxon_pvalue == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-9)
    assert res.t_pvalue == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)
    assert res.rank_biserial == pytest.approx((2 * r_plus - n * (n + 1) / 2) / (n * (n + 1) / 2))


def test_float_noise_of_a_group_mean_is_a_tie():
    a = np.array([0.1, 0.2, 0.7, 0.3])
    b = np.array([(0.1 + 0.2 + 0.0) / 3 * 3 - 0.2, 0.2, 0.6, 0.1])  # 0.1 up to ~1e-17
    assert a[0] != b[0]
    assert paired_test(a, b).n_ties == 2


def test_degenerate_cases():
    same = paired_test([0.5, 0.25, 0.0], [0.5, 0.25, 0.0])
    assert (same.t_pvalue, same.wilcoxon_pvalue, same.cohen_dz, same.rank_biserial) == (
        1.0, 1.0, 0.0, 0.0)
    assert same.n_ties == 3
    shift = paired_test([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])
    assert shift.t_statistic == math.inf and shift.t_pvalue == 0.0 and shift.cohen_dz == math.inf
    assert paired_test([1.0, 2.0, 3.0], [0.5, 1.5, 2.5], "less").t_pvalue == 1.0
    assert shift.rank_biserial == 1.0


@pytest.mark.parametrize(
    "a, b, kwargs, match",
    [
        ([0.1, 0.2], [0.1], {}, "one value per user on both sides: got 2 and 1"),
        ([0.1], [0.2], {}, "at least 2 users"),
        ([0.1, float("nan")], [0.2, 0.3], {}, "finite"),
        ([0.1, 0.2], [0.2, 0.3], {"alternative": "bigger"}, "alternative must be one of"),
    ],
)
def test_bad_arguments(a, b, kwargs, match):
    with pytest.raises(ValueError, match=match):
        paired_test(a, b, **kwargs)


# ---- groups of runs --------------------------------------------------------------------------
FP = {"name": "d", "num_users": 20, "num_items": 9, "train_sha1": "t", "valid_sha1": "v",
      "test_sha1": "x", "features_sha1": {"image": "i"}}


def _run(values, name, users=None, data=FP, status="finished", **extra):
    values = np.asarray(values, dtype=float)
    users = np.arange(values.size) if users is None else np.asarray(users)
    return PerUserMetrics(
        users=users, values={"recall@20": values, "ndcg@20": values / 2, **extra}, split="test",
        run=f"/runs/{name}", model=name.split("-")[0], seed=1, status=status, data=dict(data),
    )


def test_a_group_is_the_per_user_mean_over_its_runs():
    a1, a2 = _run(A, "sea-1"), _run(A - 1 / 16, "sea-2")
    b1, b2 = _run(B, "freedom-1"), _run(B + 1 / 8, "freedom-2")
    tests = compare_runs([a1, a2], [b1, b2], metrics=["recall@20", "ndcg@20"])
    direct = paired_test(A - 1 / 32, B + 1 / 16)
    assert [t.metric for t in tests] == ["recall@20", "ndcg@20"]
    assert tests[0].t_pvalue == pytest.approx(direct.t_pvalue, rel=1e-12)
    assert tests[0].wilcoxon_pvalue == pytest.approx(direct.wilcoxon_pvalue, rel=1e-12)
    assert tests[0].mean_a == pytest.approx(np.mean(A) - 1 / 32)
    assert tests[0].runs_a == ("/runs/sea-1", "/runs/sea-2")
    assert tests[0].split == "test" and tests[0].as_dict()["runs_b"] == ["/runs/freedom-1",
                                                                           "/runs/freedom-2"]
    # the t statistic does not depend on the metric's scale: ndcg here is recall / 2
    assert tests[1].t_statistic == pytest.approx(tests[0].t_statistic)
    single = compare_runs(a1, b1, metrics="recall@20")
    assert single[0].t_pvalue == pytest.approx(paired_test(A, B).t_pvalue)


def test_refusals_name_the_runs():
    a, b = _run(A, "sea-1"), _run(B, "freedom-1")
    other_data = _run(B, "freedom-2", data={**FP, "test_sha1": "y", "num_items": 10})
    with pytest.raises(SignificanceError, match=r"/runs/sea-1 and /runs/freedom-2 were trained "
                       r"on different data \(they differ in: number of items \(9 vs 10\); "
                       r"test edges\)"):
        compare_runs(a, other_data)
    fewer = _run(B[:9], "freedom-3")
    with pytest.raises(SignificanceError, match=r"evaluate different users on test \(10 vs 9 "
                       r"users; e.g. user 9 only in the first\)"):
        compare_runs(a, fewer)
    shifted = _run(B, "freedom-4", users=np.arange(1, 11))
    with pytest.raises(SignificanceError, match="user 0 only in the first; e.g. user 10 only"):
        compare_runs(a, shifted)
    with pytest.raises(SignificanceError, match="no metric 'map@20'.*it has recall@20, ndcg@20"):
        compare_runs(a, b, metrics=["map@20"])
    with pytest.raises(SignificanceError, match="/runs/sea-1 is given in both groups"):
        compare_runs([a], [b, a])
    with pytest.raises(SignificanceError, match="/runs/sea-1 is given twice in group A"):
        compare_runs([a, a], [b])
    with pytest.raises(SignificanceError, match="group B has no run"):
        compare_runs([a], [])
    running = _run(B, "freedom-5", status="interrupted")
    with pytest.raises(SignificanceError, match=r"/runs/freedom-5 is interrupted.*--resume.*"
                       r"--include-unfinished"):
        compare_runs(a, running)
    assert compare_runs(a, running, allow_unfinished=True)[0].n == 10
    with pytest.raises(SignificanceError, match="holds 'test' values, the comparison is on"):
        compare_runs(a, b, split="valid")
    with pytest.raises(ValueError, match="split must be one of"):
        compare_runs(a, b, split="train")
