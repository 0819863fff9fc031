"""Forgetting curves: the loss of each replaced batch against the steps since it was seen.

One checkpoint gives one point per batch; `injc eval` over several checkpoints gives the curves. Each batch is
compared, as the paper compares it, with a model that never saw it when one is given (`--baseline`, the clean
run): the paired per-row difference, with a bootstrap interval and a sign-flip p-value, so row-to-row variation
cancels. Without a baseline the control is every never-used row of the reserved tail (up to CONTROL_ROWS), and the
interval is that of an unpaired difference: with few rows it is wide, and the report says how wide.
"""

import numpy as np

from injc.evals.context import EvalContext
from injc.evals.generic import item_losses, mean_loss
from injc.evals.stats import bootstrap_ci, compare, sign_flip_method, sign_flip_pvalue

CONTROL_ROWS = 256


def evaluate(ctx: EvalContext, entry: dict, records: dict) -> dict:
    result = mean_loss(ctx, entry)
    losses = np.array([i["loss"] for i in result["items"]])
    batch_size, steps_done = records["batch_size"], ctx.scorer.steps_done
    spare = ctx.unused_tail_rows()[:CONTROL_ROWS]
    control = ctx.scorer.text_losses([ctx.text_tokens(row) for row in spare]) if len(spare) else None  # as items
    baseline = item_losses(ctx, entry["name"], ctx.baseline)[1] if ctx.baseline is not None else None
    batches = []
    for index, step in enumerate(records["steps"]):
        rows = slice(index * batch_size, (index + 1) * batch_size)
        seen = steps_done is not None and steps_done > step
        batch = {"step": step, "loss": float(losses[rows].mean()), "seen": seen,
                 "steps_since_seen": steps_done - step - 1 if seen else None}
        if control is not None:
            comparison = compare(losses[rows], control, ("batch", "control"))
            batch.update({"minus_unseen_control": comparison["difference"],
                          "minus_unseen_control_ci95": comparison["difference_ci95"]})
        if baseline is not None:
            paired = losses[rows] - baseline[rows]
            batch.update({"minus_baseline": float(paired.mean()),
                          "minus_baseline_ci95": list(bootstrap_ci(lambda d: d.mean(), (paired,))),
                          "minus_baseline_p_value": sign_flip_pvalue(paired),
                          "minus_baseline_p_method": sign_flip_method(len(paired))})
        batches.append(batch)
    result["metrics"].update({"batches": batches, "control_rows": int(len(spare)),
                              "unseen_control_loss": float(control.mean()) if control is not None else None,
                              "baseline": ctx.baseline.checkpoint if ctx.baseline is not None else None})
    return result
