"""Held-out loss: the mean loss of rows no experiment used and the model never trained on (the reserved tail after
every allocation), the number the paper compares between a run with the experiments and one without."""

import numpy as np

from injc.evals.context import EvalContext

HELDOUT_ROWS = 64


def heldout_loss(ctx: EvalContext) -> dict | None:
    """Mean loss on never-trained rows: the reserved tail after every allocation (None without a tail), and each
    row's mean, so two runs can be compared row by row (paired)."""
    rows = ctx.unused_tail_rows()[:HELDOUT_ROWS]
    if len(rows) == 0:
        return None
    losses = ctx.scorer.token_losses(list(rows), [1] * len(rows))
    return {"loss": float(np.concatenate(losses).mean()), "rows": int(len(rows)),
            "row_losses": [float(row.mean()) for row in losses]}
