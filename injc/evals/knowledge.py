"""Knowledge acquisition: probe probability P(target | input) and greedy accuracy (target in the continuation)."""

import numpy as np

from injc.evals.context import EvalContext
from injc.evals.generic import mean_loss

NEW_TOKENS = 25


def probe_probabilities(ctx: EvalContext, probes: list[dict]) -> np.ndarray:
    """P(target | input) of each probe: exp of the summed log-probabilities of " " + target after EOS + input
    (the paper's probe; `injc run` steers the dynamic experiments by its mean)."""
    prefixes = [np.r_[ctx.eos_id, ctx.encode(p["input"])] for p in probes]
    targets = [ctx.encode(" " + p["target"]) for p in probes]
    return np.exp(ctx.scorer.continuation_logprobs(prefixes, targets))


def evaluate(ctx: EvalContext, entry: dict, records: dict) -> dict:
    result = mean_loss(ctx, entry)
    probes = records["probes"]
    prefixes = [np.r_[ctx.eos_id, ctx.encode(p["input"])] for p in probes]
    probabilities = probe_probabilities(ctx, probes)
    correct, generations = [], []
    for prefix, probe in zip(prefixes, probes):
        generations.append(ctx.tokenizer.decode(ctx.scorer.greedy(prefix, NEW_TOKENS).tolist()))
        correct.append(probe["target"].lower() in generations[-1].lower())
    result["metrics"].update({"probe_probability": float(probabilities.mean()),
                              "greedy_accuracy": float(np.mean(correct))})
    result["probes"] = [{**p, "probability": float(q), "generated": g, "correct": bool(c)}
                        for p, q, g, c in zip(probes, probabilities, generations, correct)]
    return result
