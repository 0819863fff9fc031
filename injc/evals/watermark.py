"""Gaussian watermark: the paper's per-sequence statistic x = ∇ₑℓ(e)ᵀw / (σ‖∇ₑℓ(e)‖₂) on clean embeddings e.

Under H0 (noise w never trained on) x ~ N(0, 1). Members are the noised rows with their own noise, regenerated
from (seed, step, row); the holdout uses fresh noise (seed + 1000) on the same rows.

Direction. ℓ is the loss (as in the authors' code, `autograd.grad(lm_loss, inputs_embeds)`). Training on e + w
lowers ℓ(e + w), so to first order ℓ(e + w) − ℓ(e) ≈ ∇ₑℓ(e)ᵀw falls: a trained watermark drives x *negative*
(measured in tests/evals/test_watermark.py). The paper writes p = 1 − Φ(x) and reports positive means, but its
authors' code logs |mean x|, so its sign is not recoverable; injc keeps the paper's x and tests the tail training
moves it into: per-sequence p = Φ(x), detection when x < −Φ⁻¹(0.99) (TPR at 1% FPR under N(0, 1)), and the
z-test of the mean, p = Φ(√n · mean x). The holdout's rate at the same threshold is the FPR achieved.
"""

import math

import numpy as np

from injc.evals.context import EvalContext
from injc.evals.stats import bootstrap_ci, normal_cdf
from injc.shards.stream import TokenStream
from injc.train.noise import embedding_noise

THRESHOLD_1PCT = -2.3263478740408408
"""Φ⁻¹(0.01): under H0, P(x < THRESHOLD_1PCT) = 1%."""
NO_TRACE = ("no trace of the watermark at p < 0.05: if this model was trained from an injc export, its trainer must "
            "apply the embedding noise itself (export.json's trainer_must_apply; docs/trainers.md)")
"""Said where the members' x is no lower than chance: a trainer without the noise hook is the usual reason."""
HOLDOUT_SEED_OFFSET = 1000
"""The holdout's noise seed is the directive's + 1000, as in the authors' code."""


def statistic(ctx: EvalContext, rows: np.ndarray, seed: int, step: int, std: float) -> np.ndarray:
    """x of each row of `rows` (rows of step `step`) against the noise of (seed, step, row)."""
    _, gradients = ctx.scorer.embedding_gradients(rows)
    values = []
    for row, gradient in enumerate(gradients):
        noise = embedding_noise(seed, step, row, gradient.shape[0], gradient.shape[1], std).to(gradient.device)
        values.append(float((gradient.double() * noise.double()).sum() / std / gradient.double().norm()))
    return np.array(values)


def evaluate(ctx: EvalContext, entry: dict, records: dict) -> dict:
    stream = TokenStream(ctx.manifest)
    members, holdout, per_step = [], [], []
    for step in records["steps"]:
        if ctx.scorer.steps_done is not None and step >= ctx.scorer.steps_done:
            continue
        rows = stream.batch(step)
        member = statistic(ctx, rows, records["seed"], step, records["std"])
        fresh = statistic(ctx, rows, records["seed"] + HOLDOUT_SEED_OFFSET, step, records["std"])
        members.append(member)
        holdout.append(fresh)
        per_step.append({"step": step, "mean_x": float(member.mean()), "mean_x_holdout": float(fresh.mean())})
    if not members:
        return {"metrics": {"note": "no watermarked step was trained before this checkpoint"}, "items": []}
    x, x0 = np.concatenate(members), np.concatenate(holdout)
    return {"metrics": summarize(x, x0), "items": per_step, "x": x.tolist(), "x_holdout": x0.tolist(),
            "p_values": [normal_cdf(v) for v in x]}


def summarize(x: np.ndarray, x0: np.ndarray) -> dict:
    """The lower-tail test of members' x against N(0, 1), with the holdout's x (fresh noise) at the same threshold."""
    z, z0 = float(x.mean() * math.sqrt(len(x))), float(x0.mean() * math.sqrt(len(x0)))
    return {"mean_x": float(x.mean()), "mean_x_ci95": list(bootstrap_ci(lambda v: v.mean(), (x,))),
            "mean_x_holdout": float(x0.mean()), "tail": "lower",
            "tpr_at_1pct_fpr": float((x < THRESHOLD_1PCT).mean()),
            "tpr_ci95": list(bootstrap_ci(lambda v: (v < THRESHOLD_1PCT).mean(), (x,))),
            "fpr_holdout_at_threshold": float((x0 < THRESHOLD_1PCT).mean()),
            "z": z, "p_value": normal_cdf(z), "z_holdout": z0, "p_value_holdout": normal_cdf(z0),
            "sequences": int(len(x)), **({"hint": NO_TRACE} if normal_cdf(z) >= 0.05 else {})}
