"""Math: greedy accuracy per op count on the held-out test problems (unseen op counts included)."""

import re

import numpy as np

from injc.evals.context import EvalContext
from injc.evals.generic import mean_loss
from injc.evals.stats import bootstrap_ci

ANSWER = re.compile(r"Answer:\s*(\d+)")
TOKENS_PER_OP = 40


def evaluate(ctx: EvalContext, entry: dict, records: dict) -> dict:
    result = mean_loss(ctx, entry)
    by_ops: dict[int, list[bool]] = {}
    trained_ops = {p["ops"] for p in records["train"]}
    result["problems"] = []
    for problem in records["test"]:
        prompt = np.r_[ctx.eos_id, ctx.encode(problem["problem"] + "\n")]
        budget = TOKENS_PER_OP * (problem["ops"] + 4)
        text = ctx.tokenizer.decode(ctx.scorer.greedy(prompt, budget, stop=ctx.eos_id).tolist())
        match = ANSWER.search(text)
        correct = bool(match) and int(match.group(1)) == problem["answer"]
        by_ops.setdefault(problem["ops"], []).append(correct)
        result["problems"].append({"ops": problem["ops"], "correct": correct})
    result["metrics"]["accuracy_by_ops"] = {
        str(ops): {"accuracy": float(np.mean(hits)), "problems": len(hits), "seen_in_training": ops in trained_ops,
                   "ci95": list(bootstrap_ci(lambda x: x.mean(), (np.array(hits, float),)))}
        for ops, hits in sorted(by_ops.items())
    }
    return result
