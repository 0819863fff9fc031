"""`gaussian-watermark`: the paper's Gaussian watermark; no token changes, a trainer directive instead.

Writes `{"kind": "embedding_noise", "steps": [...], "std": σ, "seed": s}` to the manifest: at those steps the
trainer adds N(0, σ²) noise to the input embeddings of every row, regenerable from (seed, step, row) alone
(injc.train.noise.embedding_noise), so the eval recomputes it. Plan keys: every_steps (one noised batch every
N steps, starting at `first_step`) or steps (explicit), std = 0.075, seed (default: from the plan seed).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from injc.injectors.base import Context, Payload, Placement
from injc.tables import TableReader


@dataclass(frozen=True)
class WatermarkConfig:
    name: str
    kind: str
    steps: tuple
    std: float
    seed: int | None

    @classmethod
    def read(cls, reader: TableReader, name: str, kind: str, base: Path, steps: int | None):
        every = reader.int("every_steps", None, min=1)
        first = reader.int("first_step", 0, min=0)
        explicit = reader.int_list("steps", [], 0) if reader.has("steps") else None
        if (every is None) == (explicit is None):
            reader.problem("give exactly one of every_steps or steps", "steps")
        chosen = explicit or (list(range(first or 0, steps or 0, every)) if every else [])
        if steps is not None and any(s >= steps for s in chosen):
            reader.problem(f"steps must be < the run's {steps:,} steps", "steps")
        return cls(name, kind, tuple(sorted(set(chosen))), reader.number("std", 0.075, min=0.0),
                   reader.int("seed", None, min=0, max=(1 << 63) - 1))

    def payload(self, ctx: Context) -> Payload:
        seed = self.seed if self.seed is not None else int(ctx.rng(self.name, "seed").integers(1 << 62))
        directive = {"kind": "embedding_noise", "experiment": self.name, "steps": list(self.steps),
                     "std": self.std, "seed": seed}
        return Payload(
            [], np.zeros(0, dtype=np.int64), Placement("random"), directive=directive,
            summary={"noised_steps": len(self.steps), "std": self.std},
            eval_records={"kind": self.kind, **directive, "batch_size": ctx.layout.batch_size},
        )
