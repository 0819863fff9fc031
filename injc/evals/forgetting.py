"""Forgetting curves: the loss of each replaced batch against the steps since it was seen.

One checkpoint gives one point per batch; `injc eval` over several checkpoints gives the curves. The control is
as many never-used rows of the reserved tail.
"""

import numpy as np

from injc.evals.context import EvalContext
from injc.evals.generic import mean_loss


def evaluate(ctx: EvalContext, entry: dict, records: dict) -> dict:
    result = mean_loss(ctx, entry)
    losses = np.array([i["loss"] for i in result["items"]])
    batch_size, steps_done = records["batch_size"], ctx.scorer.steps_done
    spare = ctx.unused_tail_rows()
    control = float(ctx.scorer.text_losses(list(spare[:batch_size])).mean()) if len(spare) else None
    batches = []
    for index, step in enumerate(records["steps"]):
        loss = float(losses[index * batch_size:(index + 1) * batch_size].mean())
        seen = steps_done is not None and steps_done > step
        batches.append({"step": step, "loss": loss, "seen": seen,
                        "steps_since_seen": steps_done - step - 1 if seen else None,
                        "minus_unseen_control": loss - control if control is not None else None})
    result["metrics"].update({"batches": batches, "unseen_control_loss": control})
    return result
