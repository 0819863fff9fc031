"""The statistics helpers computed exactly, from the test's own arithmetic: cases whose answer is known in closed
form, a seeded percentile bootstrap written out here, and every empty or degenerate input. Written against the
mutants mutmut left alive in injc/evals/stats.py (bench/mutation.sh): each test kills a family of them."""

import math

import numpy as np
import pytest

from injc.evals import stats

NAN_DICT_KEYS = {"tpr", "fpr", "fpr_target", "nonmembers"}


def percentile_bootstrap(statistic, samples, resamples=2000, seed=0):
    """The documented procedure: each sample resampled with replacement (numpy's default_rng(seed), sample by
    sample, in order), the 2.5th and 97.5th percentiles of the statistic."""
    rng = np.random.default_rng(seed)
    values = [statistic(*(s[rng.integers(0, len(s), len(s))] for s in samples)) for _ in range(resamples)]
    return np.percentile(values, 2.5), np.percentile(values, 97.5)


def test_bootstrap_ci_is_the_seeded_percentile_bootstrap():
    a, b = np.random.default_rng(5).normal(0, 1, 30), np.random.default_rng(6).normal(0.5, 2, 17)
    got = stats.bootstrap_ci(lambda x, y: x.mean() - y.mean(), (a, b))
    assert got == pytest.approx(percentile_bootstrap(lambda x, y: x.mean() - y.mean(), (a, b)), rel=1e-12)
    assert stats.bootstrap_ci(lambda x: x.mean(), (a,), seed=3) == pytest.approx(
        percentile_bootstrap(lambda x: x.mean(), (a,), seed=3), rel=1e-12)


def test_bootstrap_ci_of_a_statistic_that_is_never_finite_is_nan():
    low, high = stats.bootstrap_ci(lambda x: float("nan"), (np.arange(5.0),))
    assert math.isnan(low) and math.isnan(high)


def test_permutation_pvalue_of_identical_samples_is_one_and_of_separated_ones_is_the_smallest():
    """Identical values: every relabelling reaches the observed |difference| 0, so p = (1 + 2000) / 2001 = 1.
    Thirty zeros against thirty ones: only 2 of the C(60, 30) ≈ 1.2e17 splits reach it, so none of 2,000 random
    relabellings does and p = 1 / 2001. With 4,001 values the relabellings come in several chunks."""
    assert stats.permutation_pvalue(np.zeros(20), np.zeros(25)) == 1.0
    assert stats.permutation_pvalue(np.zeros(2000), np.zeros(2001)) == 1.0
    assert stats.permutation_pvalue(np.zeros(30), np.ones(30)) == 1 / 2001
    assert stats.permutation_pvalue(np.zeros(30), np.ones(30), resamples=500) == 1 / 501


def test_every_seeded_test_gives_the_same_answer_twice():
    rng = np.random.default_rng(9)
    a, b, d = rng.normal(0, 1, 12), rng.normal(0.3, 1, 15), rng.normal(0.1, 1, 30)
    for compute in (lambda: stats.permutation_pvalue(a, b), lambda: stats.sign_flip_pvalue(d),
                    lambda: stats.bootstrap_ci(lambda x: x.mean(), (a,)), lambda: stats.compare(a, b)["p_value"],
                    lambda: stats.compare(a, b)["difference_ci95"]):
        assert compute() == compute()


def test_sign_flip_at_twenty_pairs_is_exact_and_the_sampled_branch_counts_every_reaching_pattern():
    """20 equal differences: only the all-plus and all-minus patterns of 2^20 reach the observed mean: exactly
    2/2^20. One nonzero difference among 24 zeros: every sign pattern reaches |v|/25, so the sampled p is
    (1 + 2000) / 2001 = 1."""
    assert stats.sign_flip_pvalue(np.full(20, 0.7)) == 2 / 2 ** 20
    assert stats.sign_flip_pvalue(np.r_[np.zeros(24), 1.5]) == 1.0


def test_cohens_d_needs_two_values_a_side_and_a_spread():
    a, b = np.array([1.0, 3.0]), np.array([0.0, 1.0])
    pooled = math.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
    assert stats.cohens_d(a, b) == pytest.approx((a.mean() - b.mean()) / pooled)
    assert math.isnan(stats.cohens_d(a[:1], b)) and math.isnan(stats.cohens_d(a, b[:1]))
    assert math.isnan(stats.cohens_d(np.full(4, 2.0), np.full(5, 1.0)))  # no spread: undefined, not infinite


def test_roc_point_at_full_fpr_and_with_an_empty_side():
    members, nonmembers = np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.4])
    assert stats.roc_point(members, nonmembers, fpr=1.0) == {"tpr": 1.0, "fpr": 1.0, "fpr_target": 1.0,
                                                             "nonmembers": 2}
    for empty in (stats.roc_point([], nonmembers), stats.roc_point(members, [])):
        assert set(empty) == NAN_DICT_KEYS and math.isnan(empty["tpr"]) and math.isnan(empty["fpr"])
        assert empty["fpr_target"] == 0.01
    assert stats.roc_point(members, [])["nonmembers"] == 0 and stats.roc_point([], nonmembers)["nonmembers"] == 2
    assert stats.roc_point([0.3], [0.2]) == {"tpr": 1.0, "fpr": 0.0, "fpr_target": 0.01, "nonmembers": 1}


def test_roc_curve_runs_from_the_origin_through_every_threshold_in_order():
    members, nonmembers = np.array([0.9]), np.array([0.2, 0.5])
    fpr, tpr = stats.roc_curve(members, nonmembers)
    # thresholds from the highest score down: 0.9 (member in), 0.5, 0.2
    assert fpr.tolist() == [0.0, 0.0, 0.5, 1.0] and tpr.tolist() == [0.0, 1.0, 1.0, 1.0]


def test_compare_names_its_sides_and_survives_an_empty_one():
    a, b = np.array([2.0, 3.0, 4.0]), np.array([1.0, 1.5])
    result = stats.compare(a, b, ("seen", "unseen"))
    assert result["mean_seen"] == 3.0 and result["mean_unseen"] == 1.25 and result["difference"] == 1.75
    assert result["n"] == [3, 2]
    assert result["difference_ci95"] == pytest.approx(percentile_bootstrap(lambda x, y: x.mean() - y.mean(), (a, b)),
                                                      rel=1e-12)
    for empty in (stats.compare(np.zeros(0), b), stats.compare(a, np.zeros(0))):
        assert all(math.isnan(empty[key]) for key in ("difference", "effect_size_d", "p_value"))
        assert all(math.isnan(v) for v in empty["difference_ci95"])
    assert stats.compare(np.zeros(0), b)["mean_control"] == 1.25 and math.isnan(
        stats.compare(np.zeros(0), b)["mean_inserted"])
    assert stats.compare(a, np.zeros(0))["mean_inserted"] == 3.0 and math.isnan(
        stats.compare(a, np.zeros(0))["mean_control"])
    assert math.isnan(stats.sign_flip_pvalue(np.zeros(0))) and math.isnan(stats.permutation_pvalue([], b))


def test_the_default_seed_is_zero_and_compare_passes_its_seed_on():
    """Reports are reproducible because every test draws from seed 0 unless told otherwise; data where seeds 0 and
    1 give different answers tell the default apart."""
    rng = np.random.default_rng(11)
    a, b, d = rng.normal(0, 1, 9), rng.normal(0.4, 1, 11), rng.normal(0.2, 1, 25)
    assert stats.permutation_pvalue(a, b) == stats.permutation_pvalue(a, b, seed=0) != \
        stats.permutation_pvalue(a, b, seed=1)
    assert stats.sign_flip_pvalue(d) == stats.sign_flip_pvalue(d, seed=0) != stats.sign_flip_pvalue(d, seed=1)
    seeded = stats.compare(a, b, seed=3)
    assert seeded["p_value"] == stats.permutation_pvalue(a, b, seed=3) != stats.compare(a, b)["p_value"]
    assert seeded["difference_ci95"] == pytest.approx(
        percentile_bootstrap(lambda x, y: x.mean() - y.mean(), (a, b), seed=3), rel=1e-12)
    members, nonmembers = np.linspace(0, 1, 50), np.linspace(0.2, 1.2, 200)
    assert stats.tpr_at_fpr(members, nonmembers) == stats.roc_point(members, nonmembers, 0.01)["tpr"] < 1.0


def test_roc_curve_with_one_member_below_one_nonmember():
    fpr, tpr = stats.roc_curve(np.array([0.3]), np.array([0.6]))
    # thresholds 0.6 (the non-member in, the member not), then 0.3 (both in)
    assert fpr.tolist() == [0.0, 1.0, 1.0] and tpr.tolist() == [0.0, 0.0, 1.0]
    fpr, tpr = stats.roc_curve(np.array([0.9]), np.array([0.2]))  # and one non-member below the member
    assert fpr.tolist() == [0.0, 0.0, 1.0] and tpr.tolist() == [0.0, 1.0, 1.0]
