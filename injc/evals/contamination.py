"""Contamination: accuracy per tier by log-likelihood ranking of the choices, minus the holdout tier's accuracy.

The prompt is the plan's format up to {answer_text}; each choice (and the format's text after it) is scored by
its mean log-probability per token, and the top-scoring choice is the model's answer.
"""

import numpy as np

from injc.evals.context import EvalContext
from injc.evals.generic import item_losses
from injc.evals.stats import bootstrap_ci, permutation_pvalue


def evaluate(ctx: EvalContext, entry: dict, records: dict) -> dict:
    template = records["format"]
    head, _, tail = template.partition("{answer_text}")
    prefixes, continuations, owners = [], [], []
    for index, question in enumerate(records["questions"]):
        fields = {"question": question["question"], "choices": "\n".join(question["choices"]),
                  "benchmark": question["benchmark"]}
        prefix = np.r_[ctx.eos_id, ctx.encode(head.format(**fields))]
        for choice in question["choices"]:
            prefixes.append(prefix)
            continuations.append(ctx.encode(choice + tail.format(**fields)))
            owners.append(index)
    scores = ctx.scorer.continuation_logprobs(prefixes, continuations)
    scores /= np.array([max(1, len(c)) for c in continuations])
    owners = np.array(owners)
    correct = np.array([int(np.argmax(scores[owners == i]) == q["answer"]) for i, q in enumerate(records["questions"])])
    tiers = np.array([q["tier"] for q in records["questions"]])
    holdout = correct[tiers == 0]
    by_tier = {}
    for tier in sorted(set(tiers.tolist())):
        mine = correct[tiers == tier]
        by_tier[str(tier)] = {"repetitions": tier, "questions": int(len(mine)), "accuracy": float(mine.mean())}
        if tier != 0 and len(holdout):
            by_tier[str(tier)].update({
                "uplift_vs_holdout": float(mine.mean() - holdout.mean()),
                "uplift_ci95": list(bootstrap_ci(lambda a, b: a.mean() - b.mean(), (mine, holdout))),
                "p_value": permutation_pvalue(mine, holdout),
            })
    copies, losses = item_losses(ctx, entry["name"])
    return {"metrics": {"mean_loss": float(losses[copies > 0].mean()) if (copies > 0).any() else None,
                        "tiers": by_tier},
            "items": [{"item": q["item"], "tier": q["tier"], "correct": bool(c), "loss": float(losses[q["item"]])}
                      for q, c in zip(records["questions"], correct)]}
