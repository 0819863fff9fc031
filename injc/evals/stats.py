"""Statistics for comparisons with controls: effect sizes, permutation p-values, bootstrap CIs, TPR at low FPR.

numpy only, seeded, vectorized over resamples.
"""

import math

import numpy as np

RESAMPLES = 2000


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Standardized mean difference (a − b) with the pooled standard deviation."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else float("nan")


def permutation_pvalue(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Two-sided p-value of the difference in means under random relabelling (with the +1 correction). The
    relabellings are shuffled rows, a few million values at a time, so that 20,000 items cost tens of MB."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    pooled = np.r_[a, b]
    observed, total = abs(a.mean() - b.mean()), pooled.sum()
    rng, rows = _rng(seed), max(1, 4_000_000 // len(pooled))
    exceeding = 0
    for done in range(0, resamples, rows):
        shuffled = rng.permuted(np.broadcast_to(pooled, (min(rows, resamples - done), len(pooled))), axis=1)
        first = shuffled[:, :len(a)].sum(1)
        diffs = np.abs(first / len(a) - (total - first) / len(b))
        exceeding += int((diffs >= observed - 1e-12).sum())
    return float((1 + exceeding) / (resamples + 1))


def bootstrap_ci(statistic, samples: tuple[np.ndarray, ...], resamples: int = RESAMPLES, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile CI of statistic(*samples), resampling each sample independently with replacement."""
    rng = _rng(seed)
    values = []
    for _ in range(resamples):
        values.append(statistic(*(s[rng.integers(0, len(s), len(s))] for s in samples)))
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def tpr_at_fpr(members: np.ndarray, nonmembers: np.ndarray, fpr: float = 0.01) -> float:
    """Share of members scoring above the lowest threshold that lets at most `fpr` of non-members through (higher =
    member): the ROC curve's best TPR at FPR ≤ `fpr`. See `roc_point` for the FPR it achieves."""
    return roc_point(members, nonmembers, fpr)["tpr"]


def roc_point(members: np.ndarray, nonmembers: np.ndarray, fpr: float = 0.01) -> dict:
    """TPR at the lowest threshold whose FPR is at most `fpr`, with the FPR it achieves and the number of
    non-members. At most ⌊fpr·n⌋ non-members may score above the threshold, so it is the (⌊fpr·n⌋+1)-th highest
    non-member score: with 100 non-members and fpr = 1% one of them passes (FPR 1%); with fewer than 1/fpr none
    may, and the TPR is TPR at 0% FPR (`fpr` says so)."""
    members, nonmembers = np.asarray(members, float), np.asarray(nonmembers, float)
    if len(members) == 0 or len(nonmembers) == 0:
        return {"tpr": float("nan"), "fpr": float("nan"), "fpr_target": fpr, "nonmembers": int(len(nonmembers))}
    allowed = int(math.floor(fpr * len(nonmembers) + 1e-9))
    threshold = np.sort(nonmembers)[::-1][allowed] if allowed < len(nonmembers) else -np.inf
    return {"tpr": float((members > threshold).mean()), "fpr": float((nonmembers > threshold).mean()),
            "fpr_target": fpr, "nonmembers": int(len(nonmembers))}


def roc_curve(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every threshold, from (0, 0) to (1, 1) (higher score = member)."""
    members, nonmembers = np.sort(np.asarray(members, float)), np.sort(np.asarray(nonmembers, float))
    thresholds = np.unique(np.r_[members, nonmembers])[::-1]
    tpr = 1 - np.searchsorted(members, thresholds, side="left") / max(len(members), 1)
    fpr = 1 - np.searchsorted(nonmembers, thresholds, side="left") / max(len(nonmembers), 1)
    return np.r_[0.0, fpr], np.r_[0.0, tpr]


def compare(a: np.ndarray, b: np.ndarray, labels: tuple[str, str] = ("inserted", "control"), seed: int = 0) -> dict:
    """Means, difference with bootstrap CI, Cohen's d and permutation p-value of a vs b."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    low, high = bootstrap_ci(lambda x, y: x.mean() - y.mean(), (a, b), seed=seed) if len(a) and len(b) else (
        float("nan"), float("nan"))
    return {
        f"mean_{labels[0]}": float(a.mean()) if len(a) else float("nan"),
        f"mean_{labels[1]}": float(b.mean()) if len(b) else float("nan"),
        "difference": float(a.mean() - b.mean()) if len(a) and len(b) else float("nan"),
        "difference_ci95": [low, high],
        "effect_size_d": cohens_d(a, b),
        "p_value": permutation_pvalue(a, b, seed=seed),
        "n": [int(len(a)), int(len(b))],
    }


def normal_cdf(x: float) -> float:
    """P(Z ≤ x) for a standard normal Z (the lower tail, accurate far into it)."""
    return 0.5 * math.erfc(-x / math.sqrt(2))


EXACT_SIGN_FLIPS = 20
"""Up to this many pairs the sign-flip test enumerates all 2^n sign patterns (exact); above it samples them."""


def sign_flip_method(pairs: int) -> str:
    """How `sign_flip_pvalue` computes the p-value of `pairs` paired differences, for reports."""
    return "exact" if pairs <= EXACT_SIGN_FLIPS else f"monte carlo ({RESAMPLES:,} sign patterns)"


def sign_flip_pvalue(differences: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Two-sided p-value that paired differences have mean 0 under random sign flips: the share of the 2^n sign
    patterns whose |mean| reaches the observed one, counted exactly up to EXACT_SIGN_FLIPS pairs (so 8 pairs give
    a multiple of 1/256, never less than 2/256), sampled (`resamples` patterns, +1 corrected) above."""
    differences = np.asarray(differences, float)
    pairs = len(differences)
    if pairs == 0:
        return float("nan")
    observed = abs(differences.mean()) - 1e-12
    if pairs <= EXACT_SIGN_FLIPS:
        patterns, reaching, bits = 1 << pairs, 0, np.arange(pairs)
        for first in range(0, patterns, 1 << 16):  # 65,536 patterns at a time: a few MB
            codes = np.arange(first, min(first + (1 << 16), patterns), dtype=np.int64)
            signs = 1.0 - 2.0 * ((codes[:, None] >> bits) & 1)
            reaching += int((np.abs(signs @ differences) / pairs >= observed).sum())
        return float(reaching / patterns)
    signs = _rng(seed).choice([-1.0, 1.0], size=(resamples, pairs))
    flipped = np.abs((signs * differences).mean(1))
    return float((1 + (flipped >= observed).sum()) / (resamples + 1))
