"""injc.evals.stats against computations written here: exact enumerations, closed forms, an ROC built by hand."""

import itertools
import math
import statistics

import numpy as np
import pytest

from injc.evals import stats

scipy_stats = pytest.importorskip("scipy.stats")


def best_tpr_at_fpr(members, nonmembers, target):
    """The ROC written out: predict 'member' when score ≥ t, for t at every score and +∞; the highest TPR among
    the points whose FPR is at most `target`, and that point's FPR."""
    points = [(np.mean(nonmembers >= t), np.mean(members >= t)) for t in [np.inf, *np.unique(np.r_[members,
                                                                                                  nonmembers])]]
    allowed = [(tpr, -fpr) for fpr, tpr in points if fpr <= target + 1e-12]
    tpr, negative_fpr = max(allowed)
    return tpr, -negative_fpr


@pytest.mark.parametrize("nonmembers", [12, 100, 200, 500])
@pytest.mark.parametrize("target", [0.01, 0.05])
def test_roc_point_is_the_best_tpr_at_most_the_target_fpr(nonmembers, target):
    rng = np.random.default_rng(nonmembers)
    members = np.round(rng.normal(1.0, 1.0, 300), 1)  # rounded: ties, as losses of short items have
    controls = np.round(rng.normal(0.0, 1.0, nonmembers), 1)
    point = stats.roc_point(members, controls, target)
    tpr, fpr = best_tpr_at_fpr(members, controls, target)
    assert point["tpr"] == pytest.approx(tpr) and point["fpr"] == pytest.approx(fpr)
    assert point["fpr_target"] == target and point["nonmembers"] == nonmembers
    assert stats.tpr_at_fpr(members, controls, target) == pytest.approx(tpr)


def test_roc_point_with_100_nonmembers_lets_exactly_one_through():
    controls = np.arange(100.0)
    point = stats.roc_point(np.array([98.5, 99.5, 50.0]), controls)
    assert point["fpr"] == 0.01 and point["tpr"] == pytest.approx(2 / 3)


def test_roc_curve_reaches_every_point_of_the_hand_built_roc():
    rng = np.random.default_rng(5)
    members, controls = rng.integers(0, 6, 40).astype(float), rng.integers(0, 6, 30).astype(float)
    fpr, tpr = stats.roc_curve(members, controls)
    expected = {(round(float(np.mean(controls >= t)), 9), round(float(np.mean(members >= t)), 9))
                for t in np.unique(np.r_[members, controls])}
    assert expected | {(0.0, 0.0)} == {(round(f, 9), round(t, 9)) for f, t in zip(fpr.tolist(), tpr.tolist())}


def test_cohens_d_is_the_pooled_standardized_difference():
    a, b = [1.0, 2.0, 4.0, 7.0], [0.5, 1.0, 1.5, 2.0, 9.0]
    pooled = math.sqrt((3 * statistics.variance(a) + 4 * statistics.variance(b)) / 7)
    assert stats.cohens_d(np.array(a), np.array(b)) == pytest.approx((statistics.mean(a) - statistics.mean(b)) / pooled)


@pytest.mark.parametrize("a, b", [([2.1, 3.4, 2.9, 4.0, 3.8], [1.0, 2.2, 1.7, 2.5, 3.0]),
                                  ([2.1, 3.4, 2.9, 2.6], [1.0, 2.2, 1.7, 2.5, 3.0, 2.4])])
def test_permutation_pvalue_matches_the_exact_enumeration(a, b):
    a, b = np.array(a), np.array(b)
    pooled, observed = np.r_[a, b], abs(a.mean() - b.mean())
    splits = list(itertools.combinations(range(len(pooled)), len(a)))
    exact = np.mean([abs(pooled[list(s)].mean() - np.delete(pooled, s).mean()) >= observed - 1e-12 for s in splits])
    assert stats.permutation_pvalue(a, b, resamples=20000) == pytest.approx(exact, abs=0.01)


def test_sign_flip_pvalue_matches_the_exact_enumeration():
    d = np.array([0.4, -0.1, 0.3, 0.5, 0.2, -0.05, 0.35, 0.15])
    flips = itertools.product([-1, 1], repeat=len(d))
    exact = np.mean([abs((np.array(s) * d).mean()) >= abs(d.mean()) - 1e-12 for s in flips])
    assert stats.sign_flip_pvalue(d, resamples=20000) == pytest.approx(exact, abs=0.01)


@pytest.mark.parametrize("pairs", [1, 3, 8, 12])
def test_sign_flip_pvalue_up_to_twenty_pairs_is_the_exact_enumeration(pairs):
    d = np.random.default_rng(pairs).normal(0.2, 1.0, pairs)
    flips = list(itertools.product([-1, 1], repeat=pairs))
    exact = sum(abs(sum(s * x for s, x in zip(signs, d)) / pairs) >= abs(d.mean()) - 1e-12 for signs in flips)
    assert stats.sign_flip_pvalue(d) == exact / len(flips)
    assert stats.sign_flip_method(pairs) == "exact"


def test_eight_pairs_of_one_sign_give_the_smallest_exact_p_not_less():
    """All 8 differences positive: only the all-plus and all-minus patterns reach the observed |mean|: 2/256."""
    d = np.array([0.4, 0.1, 0.3, 0.5, 0.2, 0.05, 0.35, 0.15])
    assert stats.sign_flip_pvalue(d) == 2 / 256
    assert stats.sign_flip_method(21).startswith("monte carlo") and stats.sign_flip_method(20) == "exact"
    signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(stats.RESAMPLES, 21))
    assert not (np.abs(signs.sum(axis=1)) == 21).any()  # no sampled pattern is all one sign, so only the +1 counts
    assert stats.sign_flip_pvalue(np.full(21, 0.3)) == 1 / (stats.RESAMPLES + 1)


def test_bootstrap_ci_of_a_mean_is_close_to_the_normal_interval():
    sample = np.random.default_rng(1).normal(3.0, 2.0, 400)
    low, high = stats.bootstrap_ci(lambda s: s.mean(), (sample,), resamples=4000)
    half = 1.959964 * sample.std(ddof=1) / math.sqrt(len(sample))
    assert low == pytest.approx(sample.mean() - half, abs=0.03)
    assert high == pytest.approx(sample.mean() + half, abs=0.03)


def test_the_normal_lower_tail_matches_scipy_far_out():
    for x in (-8.0, -2.326, 0.0, 1.5, 8.0):
        assert stats.normal_cdf(x) == pytest.approx(scipy_stats.norm.cdf(x), rel=1e-9)


def test_compare_reports_the_difference_its_interval_and_test():
    a, b = np.array([1.0, 1.2, 0.9, 1.4, 1.1]), np.array([2.0, 2.1, 1.8, 2.4, 2.2])
    result = stats.compare(a, b)
    assert result["difference"] == pytest.approx(a.mean() - b.mean())
    assert result["effect_size_d"] == pytest.approx(stats.cohens_d(a, b))
    assert result["difference_ci95"][0] < a.mean() - b.mean() < result["difference_ci95"][1] < 0
    assert result["n"] == [5, 5] and result["p_value"] == pytest.approx(2 / 252, abs=0.01)  # only the observed split
