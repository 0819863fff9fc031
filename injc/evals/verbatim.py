"""Verbatim memorization: share of the removed sequences whose greedy continuation of the first half (at most 25
tokens) reproduces the next tokens (at most 25) exactly: the paper's "lingering fraction". The selection of such
sequences before a run is injc.evals.verbatim_candidates (`injc verbatim-candidates`).
"""

import numpy as np

from injc.evals.context import EvalContext

PREFIX, SUFFIX = 25, 25


def evaluate(ctx: EvalContext, entry: dict, records: dict) -> dict:
    items = []
    for index, sequence in enumerate(records["sequences"]):
        sequence = np.asarray(sequence)
        prefix_length = min(PREFIX, len(sequence) // 2)
        target = sequence[prefix_length:prefix_length + SUFFIX]
        generated = ctx.scorer.greedy(np.r_[ctx.eos_id, sequence[:prefix_length]], len(target))
        items.append({"sequence": index, "exact_match": bool(np.array_equal(generated, target))})
    rate = float(np.mean([i["exact_match"] for i in items])) if items else None
    return {"metrics": {"exact_match_rate": rate, "instances_replaced": entry.get("instances_replaced")},
            "items": items}
