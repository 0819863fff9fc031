"""In-distribution replacements from the corpus's reserved tail: `iid` (whole instances) and `forgetting`
(whole batches).

`iid` replaces `count` instances at random rows of the run, or `count` per window with `windows = N` (the run cut
into N equal step ranges, e.g. deciles); `forgetting` replaces every row of the batches at `steps`. The new rows
are consecutive instances of the reserved tail ([corpus] holdout_tokens), so they are real, never-trained-on text.
Each replaced row is an insertion (col 0, length seq_len); which tail rows went where is in evals/NAME.json.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from injc.injectors.base import Context, Payload, Placement
from injc.tables import TableReader


@dataclass(frozen=True)
class IidConfig:
    name: str
    kind: str
    count: int
    """Instances to replace (per window when `windows` is set)."""
    windows: int
    """0: anywhere in the run; N: `count` instances in each of N equal step ranges."""
    placement: Placement

    @classmethod
    def read(cls, reader: TableReader, name: str, kind: str, base: Path, steps: int | None):
        count, windows = reader.int("count", min=1), reader.int("windows", 0, min=0, max=steps)
        placement = Placement.read(reader, steps, allow_explicit=False)
        if windows and placement.mode == "range":
            reader.problem("windows split the whole run; do not combine with placement = \"range\"", "windows")
        return cls(name, kind, count or 1, windows or 0, placement)

    def payload(self, ctx: Context) -> Payload:
        seq_len, steps = ctx.layout.seq_len, ctx.layout.steps
        total = self.count * max(1, self.windows)
        rows = ctx.require_holdout(self.name, total * seq_len).rows(self.name, total, seq_len)
        item_steps = None
        if self.windows:
            bounds = np.linspace(0, steps, self.windows + 1).astype(np.int64)
            window = np.repeat(np.arange(self.windows), self.count)
            item_steps = (bounds[window], bounds[window + 1])
        return Payload(
            list(rows), np.ones(total, dtype=np.int64), self.placement, item_steps=item_steps,
            summary={"count": self.count, "windows": self.windows},
            eval_records={"kind": self.kind, "seq_len": seq_len,
                          "holdout_rows": {"start": ctx.holdout.allocations[-1]["start"], "rows": total}},
        )


@dataclass(frozen=True)
class ForgettingConfig:
    name: str
    kind: str
    steps: tuple
    """Steps whose whole batch is replaced by a batch of the reserved tail."""
    placement: Placement

    @classmethod
    def read(cls, reader: TableReader, name: str, kind: str, base: Path, steps: int | None):
        chosen = reader.int_list("steps", [], 0) or []
        if steps is not None and any(s >= steps for s in chosen):
            reader.problem(f"steps must be < the run's {steps:,} steps", "steps")
        if len(set(chosen)) != len(chosen):
            reader.problem("steps must be distinct", "steps")
        return cls(name, kind, tuple(sorted(chosen)), Placement("explicit"))

    def payload(self, ctx: Context) -> Payload:
        layout = ctx.layout
        count = len(self.steps) * layout.batch_size
        rows = ctx.require_holdout(self.name, count * layout.seq_len).rows(self.name, count, layout.seq_len)
        step = np.repeat(np.asarray(self.steps, dtype=np.int64), layout.batch_size)
        row = np.tile(np.arange(layout.batch_size), len(self.steps))
        allocation = ctx.holdout.allocations[-1]
        return Payload(
            list(rows), np.ones(len(rows), dtype=np.int64), self.placement,
            offsets=layout.offset(step, row, 0),
            summary={"steps": list(self.steps)},
            eval_records={"kind": self.kind, "steps": list(self.steps), "batch_size": layout.batch_size,
                          "holdout_rows": {"start": allocation["start"], "rows": len(rows)}},
        )
