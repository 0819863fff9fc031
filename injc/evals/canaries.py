"""Canaries (MemP): member vs non-member loss and membership inference, per condition.

The attack score is the negative mean loss of the whole host + canary text (a loss attack, as in Panda et al.);
members of a condition are compared with the holdout hosts that carry canaries of the same length. The TPR is
reported at the threshold that lets at most 1% of non-members through, with the FPR it achieves and their number:
with fewer than 100 non-members it is TPR at 0% FPR, and says so (`membership.fpr`).
"""

import numpy as np

from injc.evals.context import EvalContext
from injc.evals.generic import item_losses
from injc.evals.stats import bootstrap_ci, compare, roc_point, tpr_at_fpr


def evaluate(ctx: EvalContext, entry: dict, records: dict) -> dict:
    copies, losses = item_losses(ctx, entry["name"])
    items = records["items"]
    conditions = {}
    for length in sorted({i["canary_length"] for i in items}):
        controls = np.array([losses[i["item"]] for i in items if not i["member"] and i["canary_length"] == length])
        for reps in sorted({i["repetitions"] for i in items if i["member"]}):
            members = np.array([losses[i["item"]] for i in items
                                if i["member"] and i["canary_length"] == length and i["repetitions"] == reps])
            if len(members) == 0:
                continue
            key = f"len{length}×{reps}"
            conditions[key] = {
                "canary_length": length, "repetitions": reps,
                **compare(members, controls, ("member", "nonmember")),
                "membership": {**roc_point(-members, -controls),
                               "tpr_ci95": list(bootstrap_ci(lambda m, c: tpr_at_fpr(-m, -c), (members, controls)))},
            }
    return {"metrics": {"mean_loss": float(losses[copies > 0].mean()), "conditions": conditions},
            "items": [{**i, "loss": float(losses[i["item"]])} for i in items]}
