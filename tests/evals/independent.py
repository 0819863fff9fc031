"""The statistics the eval tests recompute the scorers' numbers with, written out the textbook way (a loop of
resamples, every sign pattern enumerated), independent of injc.evals.stats."""

import itertools

import numpy as np


def bootstrap_mean(values, seed=0, resamples=2000):
    """The percentile 95% interval of the mean, resampling with numpy's generator seeded as the scorers seed it."""
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(resamples)]
    return [np.percentile(means, 2.5), np.percentile(means, 97.5)]


def exact_sign_flip(values):
    """The two-sided sign-flip p-value over all 2^n sign patterns."""
    flips = itertools.product([-1, 1], repeat=len(values))
    return np.mean([abs(np.dot(s, values)) / len(values) >= abs(values.mean()) - 1e-12 for s in flips])
