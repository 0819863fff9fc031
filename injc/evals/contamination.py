"""Contamination: accuracy per tier by log-likelihood ranking of the choices, minus the holdout tier's accuracy.

Each choice is scored as it would be trained: the plan's format is filled with the choice as {answer_text} and
tokenized whole (as the injector tokenizes the inserted text), and the scored tokens are those after the longest
prefix shared with the tokenized prompt (the format up to {answer_text}). Tokenizing the choice alone would
score other tokens than the trained ones (`…Answer:` + `Ġ` + `The` instead of `…Answer:` + `ĠThe`).

The top choice by normalized log-probability is the model's answer, normalized per benchmark as OLMES does for
the cloze formulation (`OLMES`): `pmi` (the choice's log-probability after the prompt minus after the bare
"Answer:", for ARC-Challenge, CommonsenseQA, OpenBookQA), `char` (divided by the choice's characters, for
ARC-Easy, HellaSwag, MMLU, PIQA, Social IQa), `none` (the sum, for BoolQ and WinoGrande). Other benchmarks
(synthetic ones, like the demo's) get `token`: the mean per scored token. Each item records its normalization.
"""

import numpy as np

from injc.evals.context import EvalContext
from injc.evals.generic import item_losses
from injc.evals.stats import bootstrap_ci, cohens_d, permutation_pvalue

OLMES = {"arc_challenge": "pmi", "csqa": "pmi", "commonsense_qa": "pmi", "openbookqa": "pmi", "obqa": "pmi",
         "arc_easy": "char", "hellaswag": "char", "mmlu": "char", "piqa": "char", "socialiqa": "char",
         "social_iqa": "char", "siqa": "char", "boolq": "none", "winogrande": "none"}
"""OLMES's normalization of the cloze formulation per benchmark (Gu et al. 2024); MMLU subjects (mmlu_*) too."""
UNCONDITIONAL = "Answer:"
"""The prompt PMI's unconditional term scores each choice after (OLMES)."""


NO_BENCHMARK = "(no benchmark named)"
"""The normalization table's key for questions whose file names no benchmark (synthetic ones)."""


def normalization(benchmark: str) -> str:
    """How a benchmark's choice scores are normalized: OLMES's rule, else the mean per token."""
    key = benchmark.strip().lower().replace("-", "_").replace(" ", "_")
    return OLMES.get(key) or ("char" if key.startswith("mmlu_") else "token")


def shared_prefix(prompt: np.ndarray, full: np.ndarray) -> int:
    """How many leading tokens the tokenized prompt and the tokenized prompt + answer have in common."""
    width = min(len(prompt), len(full))
    differ = np.flatnonzero(prompt[:width] != full[:width])
    return int(differ[0]) if len(differ) else width


def evaluate(ctx: EvalContext, entry: dict, records: dict) -> dict:
    template = records["format"]
    head, _, tail = template.partition("{answer_text}")
    prefixes, continuations, owners, methods, characters = [], [], [], [], []
    for index, question in enumerate(records["questions"]):
        fields = {"question": question["question"], "choices": "\n".join(question["choices"]),
                  "benchmark": question["benchmark"]}
        prompt = ctx.encode(head.format(**fields))
        for choice in question["choices"]:
            full = ctx.encode(head.format(**fields) + choice + tail.format(**fields, answer_text=choice))  # as trained
            shared = shared_prefix(prompt, full)
            prefixes.append(np.r_[ctx.eos_id, full[:shared]])
            continuations.append(full[shared:])
            owners.append(index)
            methods.append(normalization(question["benchmark"]))
            characters.append(max(1, len(choice)))
    scores = ctx.scorer.continuation_logprobs(prefixes, continuations)
    methods = np.array(methods)
    pmi = np.flatnonzero(methods == "pmi")
    if len(pmi):
        bare = np.r_[ctx.eos_id, ctx.encode(UNCONDITIONAL)]
        scores[pmi] -= ctx.scorer.continuation_logprobs([bare] * len(pmi), [continuations[i] for i in pmi])
    scores = np.where(methods == "token", scores / np.array([max(1, len(c)) for c in continuations]), scores)
    scores = np.where(methods == "char", scores / np.array(characters), scores)
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
                "effect_size_d": cohens_d(mine, holdout),
                "p_value": permutation_pvalue(mine, holdout),
            })
    copies, losses = item_losses(ctx, entry["name"])
    used = {q["benchmark"] or NO_BENCHMARK: normalization(q["benchmark"]) for q in records["questions"]}
    return {"metrics": {"mean_loss": float(losses[copies > 0].mean()) if (copies > 0).any() else None,
                        "tiers": by_tier, "normalization": dict(sorted(used.items()))},
            "items": [{"item": q["item"], "tier": q["tier"], "correct": bool(c), "loss": float(losses[q["item"]]),
                       "normalization": normalization(q["benchmark"]), "choice_scores": scores[owners == i].tolist()}
                      for i, (q, c) in enumerate(zip(records["questions"], correct))]}
