"""The metric every experiment gets, and the families whose eval is a loss comparison.

mean_loss: the mean over inserted items of the per-token cross-entropy of the item's own tokens (EOS wrappers
removed) given one leading EOS. texts/tokens compare with their `controls`; iid rows compare with never-used
rows of the reserved tail; documents report the loss per condition.
"""

import numpy as np

from injc.evals.context import EvalContext
from injc.evals.stats import compare


def item_losses(ctx: EvalContext, name: str, scorer=None) -> tuple[np.ndarray, np.ndarray]:
    """(copies, loss) of every payload item of an experiment, scored by the checkpoint (as `ctx.score_items` scored
    them, where it has) or by `scorer`."""
    items = ctx.items.get(name, [])
    if not items:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    copies = np.array([c for c, _ in items])
    if scorer is None and name in ctx.item_losses:
        return copies, ctx.item_losses[name]
    return copies, (scorer or ctx.scorer).text_losses([ctx.text_tokens(t) for _, t in items])


def mean_loss(ctx: EvalContext, entry: dict) -> dict:
    copies, losses = item_losses(ctx, entry["name"])
    inserted = copies > 0
    result = {"metrics": {"mean_loss": float(losses[inserted].mean()) if inserted.any() else None},
              "items": [{"item": i, "copies": int(count), "loss": float(loss)}
                        for i, (count, loss) in enumerate(zip(copies, losses))]}
    if (~inserted).any() and inserted.any():
        result["metrics"]["vs_controls"] = compare(losses[inserted], losses[~inserted])
    return result


def iid(ctx: EvalContext, entry: dict, records: dict) -> dict:
    """Loss of the inserted tail rows against as many tail rows that no experiment used."""
    result = mean_loss(ctx, entry)
    spare = ctx.unused_tail_rows()
    count = min(len(spare), records["holdout_rows"]["rows"])
    if count:
        controls = ctx.scorer.text_losses([ctx.text_tokens(row) for row in spare[:count]])  # scored as the items
        inserted = np.array([i["loss"] for i in result["items"]])
        result["metrics"]["vs_unseen_rows"] = compare(inserted, controls, ("inserted", "unseen"))
        result["unseen_losses"] = controls.tolist()
    return result


def documents(ctx: EvalContext, entry: dict, records: dict) -> dict:
    result = mean_loss(ctx, entry)
    losses = np.array([i["loss"] for i in result["items"]])
    conditions = {}
    for document in records["documents"]:
        key = f"{document['split']}×{document['repetitions']}"
        conditions.setdefault(key, []).append(float(losses[document["items"]].mean()))
    result["metrics"]["loss_by_condition"] = {k: float(np.mean(v)) for k, v in sorted(conditions.items())}
    result["losses_by_condition"] = dict(sorted(conditions.items()))
    return result
