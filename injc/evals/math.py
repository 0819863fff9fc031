"""Math: greedy accuracy per op count on the held-out test problems (unseen op counts included).

Prompts are SHOTS-shot, as the paper's: the SHOTS training problems with the fewest operations, each followed by
its solution, a blank line between them, then the test problem. The first "Answer: N" of the greedy continuation
is the model's answer. Every problem may generate as many tokens as the longest solution of the item set (training
and test problems) plus a margin, so no solution stops before its "Answer:" (the paper allows 500 tokens; a
fixed budget per op count cut off 88 of 200 one-operation solutions at the paper's max_params = 20). A prompt
longer than the model's context keeps its last tokens.
"""

import re

import numpy as np

from injc.evals.context import EvalContext
from injc.evals.generic import mean_loss
from injc.evals.stats import bootstrap_ci

ANSWER = re.compile(r"Answer:\s*(\d+)")
BUDGET_MARGIN = 8
"""Tokens allowed beyond the longest solution: the line break after it, and a stop token."""
SHOTS = 3


def few_shot_prefix(train: list[dict], shots: int = SHOTS) -> str:
    """The solved examples every test prompt starts with: the `shots` training problems with the fewest operations
    (ties in training order), each as "problem\nsolution", followed by a blank line."""
    chosen = sorted(range(len(train)), key=lambda i: (train[i]["ops"], i))[:shots]
    return "".join(f"{train[i]['problem']}\n{train[i]['solution']}\n\n" for i in chosen)


def generation_budget(ctx: EvalContext, records: dict) -> int:
    """New tokens for every problem: the longest solution of the item set, tokenized, plus BUDGET_MARGIN."""
    return max(len(ctx.encode(p["solution"])) for p in records["test"] + records["train"]) + BUDGET_MARGIN


def evaluate(ctx: EvalContext, entry: dict, records: dict) -> dict:
    result = mean_loss(ctx, entry)
    budget = generation_budget(ctx, records)
    by_ops: dict[int, list[bool]] = {}
    trained_ops = {p["ops"] for p in records["train"]}
    result["problems"] = []
    prefix = few_shot_prefix(records["train"])
    for problem in records["test"]:
        text = prefix + problem["problem"] + "\n"
        prompt = np.r_[ctx.eos_id, ctx.encode(text)]
        generated = ctx.scorer.greedy(prompt, budget, stop=ctx.eos_id)
        match = ANSWER.search(ctx.tokenizer.decode(generated.tolist()))
        correct = bool(match) and int(match.group(1)) == problem["answer"]
        by_ops.setdefault(problem["ops"], []).append(correct)
        result["problems"].append({"ops": problem["ops"], "correct": correct, "prompt": text,
                                   "generated": generated.tolist()})
    result["metrics"]["shots"] = min(SHOTS, len(records["train"]))
    result["metrics"]["generation_budget"] = budget
    result["metrics"]["accuracy_by_ops"] = {
        str(ops): {"accuracy": float(np.mean(hits)), "problems": len(hits), "seen_in_training": ops in trained_ops,
                   "ci95": list(bootstrap_ci(lambda x: x.mean(), (np.array(hits, float),)))}
        for ops, hits in sorted(by_ops.items())
    }
    return result
