"""Gaussian watermark: the paper's per-sequence statistic x = ∇ₑℓ(e)ᵀw / (σ‖∇ₑℓ(e)‖₂) on clean embeddings e.

Under H0 (noise w never trained on) x ~ N(0, 1). Members are the noised rows with their own noise, regenerated
from (seed, step, row); the holdout uses fresh noise (seed + 1000) on the same rows. Reports the mean of x,
TPR at 1% FPR (threshold Φ⁻¹(0.99) under H0) and a z-test p-value.
"""

import math

import numpy as np

from injc.evals.context import EvalContext
from injc.evals.stats import normal_sf
from injc.shards.stream import TokenStream
from injc.train.noise import embedding_noise

THRESHOLD_1PCT = 2.3263478740408408


def _statistic(ctx: EvalContext, rows: np.ndarray, seed: int, step: int, std: float) -> np.ndarray:
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
        member = _statistic(ctx, rows, records["seed"], step, records["std"])
        fresh = _statistic(ctx, rows, records["seed"] + 1000, step, records["std"])
        members.append(member)
        holdout.append(fresh)
        per_step.append({"step": step, "mean_x": float(member.mean()), "mean_x_holdout": float(fresh.mean())})
    if not members:
        return {"metrics": {"note": "no watermarked step was trained before this checkpoint"}, "items": []}
    x, x0 = np.concatenate(members), np.concatenate(holdout)
    z = float(x.mean() * math.sqrt(len(x)))
    return {"metrics": {"mean_x": float(x.mean()), "mean_x_holdout": float(x0.mean()),
                        "tpr_at_1pct_fpr": float((x > THRESHOLD_1PCT).mean()),
                        "fpr_holdout_at_threshold": float((x0 > THRESHOLD_1PCT).mean()),
                        "z": z, "p_value": normal_sf(z), "sequences": int(len(x))},
            "items": per_step, "x": x.tolist()}


