"""Canaries (MemP): member vs non-member loss and membership inference, per condition.

The attack score is the negative mean loss of the whole host + canary text (a loss attack, as in Panda et al.);
members of a condition are compared with the holdout hosts that carry canaries of the same length. The TPR is
reported at the threshold that lets at most 1% of non-members through, with the FPR it achieves and their number:
with fewer than 100 non-members it is TPR at 0% FPR, and says so (`membership.fpr`).

A canary of random or rare ids can be recognised by its ids alone: they appear nowhere else, so a model that has
only learned their frequency already gives the member a lower loss. The order control separates that from
memorizing the sequence: each member is scored again with its canary's ids shuffled (same ids, seeded order), and
`vs_shuffled` compares the two, paired per member. A member no better than its shuffled self was recognised by its
ids, not memorized as a sequence.
"""

import numpy as np

from injc.evals.context import EvalContext
from injc.evals.generic import item_losses
from injc.evals.stats import bootstrap_ci, compare, roc_point, sign_flip_method, sign_flip_pvalue, tpr_at_fpr


def shuffled_losses(ctx: EvalContext, name: str, items: list[dict]) -> dict[int, float]:
    """Each member's loss with its canary's ids in a shuffled order (seeded by the item), host unchanged."""
    tokens = ctx.items.get(name, [])
    texts, members = [], [i for i in items if i["member"] and i["canary_length"] > 1]  # one id has one order
    for item in members:
        text = ctx.text_tokens(tokens[item["item"]][1]).copy()
        length = item["canary_length"]
        text[-length:] = np.random.default_rng(item["item"]).permutation(text[-length:])
        texts.append(text)
    return dict(zip((i["item"] for i in members), ctx.scorer.text_losses(texts))) if texts else {}


def evaluate(ctx: EvalContext, entry: dict, records: dict) -> dict:
    copies, losses = item_losses(ctx, entry["name"])
    items = records["items"]
    shuffled = shuffled_losses(ctx, entry["name"], items) if records.get("canary", "random") != "none" else {}
    conditions = {}
    for length in sorted({i["canary_length"] for i in items}):
        controls = np.array([losses[i["item"]] for i in items if not i["member"] and i["canary_length"] == length])
        for reps in sorted({i["repetitions"] for i in items if i["member"]}):
            chosen = [i["item"] for i in items
                      if i["member"] and i["canary_length"] == length and i["repetitions"] == reps]
            if not chosen:
                continue
            members = losses[chosen]
            key = f"len{length}×{reps}"
            conditions[key] = {
                "canary_length": length, "repetitions": reps,
                **compare(members, controls, ("member", "nonmember")),
                "membership": {**roc_point(-members, -controls),
                               "tpr_ci95": list(bootstrap_ci(lambda m, c: tpr_at_fpr(-m, -c), (members, controls)))},
            }
            if shuffled and length > 1:
                paired = members - np.array([shuffled[i] for i in chosen])
                conditions[key]["vs_shuffled"] = {
                    "difference": float(paired.mean()), "p_value": sign_flip_pvalue(paired),
                    "p_method": sign_flip_method(len(paired)),
                    "difference_ci95": list(bootstrap_ci(lambda d: d.mean(), (paired,))), "n": len(paired)}
    return {"metrics": {"mean_loss": float(losses[copies > 0].mean()), "conditions": conditions},
            "items": [{**i, "loss": float(losses[i["item"]]),
                       **({"loss_shuffled": shuffled[i["item"]]} if i["item"] in shuffled else {})} for i in items]}
