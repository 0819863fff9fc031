"""`knowledge`: knowledge acquisition from a pool of paraphrases of fictional facts, inserted per window.

The run is cut into windows of `window_steps` steps; window w receives `per_window` documents (a number, or a
list with one number per window), taken in order from the pool (wrapping around), placed at random inside the
window. The probes (cloze pairs `input`/`target`) go to evals/NAME.json. A dynamic controller can later set
`per_window` from probe results between windows.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from injc.injectors.base import Context, Payload, Placement, check_records, read_jsonl, string_field
from injc.tables import TableReader


@dataclass(frozen=True)
class KnowledgeConfig:
    name: str
    kind: str
    documents: Path
    probes: Path
    per_window: tuple
    window_steps: int
    field: str
    placement: Placement

    @classmethod
    def read(cls, reader: TableReader, name: str, kind: str, base: Path, steps: int | None):
        window_steps = reader.int("window_steps", min=1)
        per_window = reader.get("per_window", None)
        windows = math.ceil(steps / window_steps) if steps and window_steps else None
        if isinstance(per_window, int) and not isinstance(per_window, bool) and per_window >= 0:
            per_window = (per_window,) * (windows or 0)
        elif (isinstance(per_window, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                    for n in per_window)):
            if windows is not None and len(per_window) != windows:
                reader.problem(f"has {len(per_window)} entries but the run has {windows} windows of "
                               f"{window_steps} steps", "per_window")
            per_window = tuple(per_window)
        else:
            reader.problem(f"expected a count ≥ 0 or an array of counts per window, got {per_window!r}",
                           "per_window")
            per_window = ()
        return cls(name, kind, reader.path("documents", base), reader.path("probes", base), per_window,
                   window_steps or 1, reader.str("field", "text"), Placement("range", 0, steps or 1))

    def payload(self, ctx: Context) -> Payload:
        pool = string_field(self.name, self.documents, read_jsonl(self.documents, self.name), self.field)
        probes = read_jsonl(self.probes, self.name)
        check_records(self.name, self.probes, probes,
                      lambda p: isinstance(p.get("input"), str) and isinstance(p.get("target"), str),
                      'needs string "input" and "target"')
        counts = np.asarray(self.per_window, dtype=np.int64)
        pool_index = np.arange(counts.sum()) % len(pool)
        window = np.repeat(np.arange(len(counts)), counts)
        start = window * self.window_steps
        end = np.minimum(start + self.window_steps, ctx.layout.steps)
        encoded = ctx.encode(pool)
        items = [ctx.wrap(encoded[i]) for i in pool_index]
        ctx.check_items(self.name, items, "document")
        windows = [{"window": int(w), "start_step": int(w * self.window_steps),
                    "end_step": int(min((w + 1) * self.window_steps, ctx.layout.steps)), "documents": int(n)}
                   for w, n in enumerate(counts)]
        return Payload(
            items, np.ones(len(items), dtype=np.int64), self.placement, item_steps=(start, end),
            summary={"window_steps": self.window_steps, "per_window": counts.tolist(), "pool": len(pool)},
            eval_records={"kind": self.kind, "probes": [{"input": p["input"], "target": p["target"]} for p in probes],
                          "windows": windows, "pool_indices": pool_index.tolist()},
        )
