"""`knowledge`: knowledge acquisition from a pool of paraphrases of fictional facts, inserted per window.

The run is cut into windows of `window_steps` steps; window w receives `per_window` documents (a number, or a
list with one number per window), taken in order from the pool (wrapping around), placed at random inside the
window. The probes (cloze pairs `input`/`target`) go to evals/NAME.json.

`per_window = "dynamic"` leaves the counts to the paper's controller (Algorithm 1, `decide`), run between
windows by `injc run`: the model is probed at the end of each window and the next window's count is halved or
doubled to follow a target that ramps linearly from 0 to `control.target` at the end of training.
"""

import dataclasses
import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from injc.errors import InjcError
from injc.injectors.base import Context, Payload, Placement, check_records, gather, read_jsonl, string_field
from injc.tables import TableReader

DYNAMIC = "dynamic"


@dataclass(frozen=True)
class Control:
    """The paper's Algorithm 1 and its bounds (defaults as in the paper's code)."""

    target: float = 0.08
    """p*: the probe value to reach at the end of training; the target at step s is p*·s/S."""
    initial: int = 64
    """Documents in the first window."""
    max_change: int = 256
    """|n_w − n_{w−1}| ≤ max_change."""
    min: int = 1
    max: int = 8192
    controller: str | None = None
    """Optional 'module:function' called as function(state, probe) -> count instead of Algorithm 1."""

    @classmethod
    def read(cls, reader: TableReader) -> "Control":
        low, high = reader.int("min", cls.min, min=0), reader.int("max", cls.max, min=1)
        control = cls(reader.number("target", cls.target, min=0.0), reader.int("initial", cls.initial, min=0),
                      reader.int("max_change", cls.max_change, min=1), low, high, reader.str("controller", None))
        if isinstance(low, int) and isinstance(high, int) and low > high:
            reader.problem(f"must be ≥ min ({low}), got {high}", "max")
        if isinstance(control.controller, str) and control.controller.count(":") != 1:
            reader.problem(f"expected 'module:function', got {control.controller!r}", "controller")
        reader.finish()
        return control

    def target_at(self, step: int, total_steps: int) -> float:
        return self.target * step / total_steps


def algorithm_one(control: Control, previous: int, probe: float, target: float) -> tuple[int, str]:
    """The paper's update: halve above 1.05·target, double below 0.95·target, then clamp the change to
    ±max_change and the count to [min, max]. Returns the count and why, in words."""
    if probe > 1.05 * target:
        count, why = previous // 2, f"probe {probe:.4g} > 1.05 × target {target:.4g}: halve"
    elif probe < 0.95 * target:
        count, why = previous * 2, f"probe {probe:.4g} < 0.95 × target {target:.4g}: double"
    else:
        count, why = previous, f"probe {probe:.4g} within 5% of target {target:.4g}: keep"
    clamped = max(control.min, min(control.max, previous + control.max_change, max(previous - control.max_change,
                                                                                  count)))
    if clamped != count:
        why += f", clamped to {clamped}"
    return clamped, why


def decide(control: Control, state: dict, probe: float) -> tuple[int, str]:
    """The next window's count from the probe at its first step: Algorithm 1, or the plan's own controller
    (imported by name, never evaluated as code), whose answer must be an integer in [min, max]."""
    if control.controller is None:
        return algorithm_one(control, state["previous"], probe, state["target"])
    module_name, function_name = control.controller.split(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise InjcError(f"controller {control.controller!r} cannot be imported: {error}") from None
    count = function(dict(state), probe)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise InjcError(f"controller {control.controller!r} returned {count!r}; it must return an integer count")
    if not control.min <= count <= control.max:
        raise InjcError(f"controller {control.controller!r} returned {count}, outside [min, max] = "
                        f"[{control.min}, {control.max}]")
    return int(count), f"controller {control.controller}"


@dataclass(frozen=True)
class KnowledgeConfig:
    name: str
    kind: str
    documents: Path
    probes: Path
    per_window: tuple | None
    """Documents per window; None while a dynamic experiment's counts are not decided."""
    window_steps: int
    field: str
    placement: Placement
    control: Control | None = None
    """Set when per_window = "dynamic"."""

    @property
    def windows(self) -> int:
        return math.ceil(self.placement.end_step / self.window_steps)

    def with_counts(self, counts) -> "KnowledgeConfig":
        """This experiment with `counts` for its first windows and 0 for the rest (not yet decided)."""
        counts = tuple(int(n) for n in counts)
        return dataclasses.replace(self, per_window=counts + (0,) * (self.windows - len(counts)))

    @classmethod
    def read(cls, reader: TableReader, name: str, kind: str, base: Path, steps: int | None):
        window_steps = reader.int("window_steps", min=1)
        per_window = reader.get("per_window", None)
        windows = math.ceil(steps / window_steps) if steps and window_steps else None
        control = None
        if reader.has("control") and per_window != DYNAMIC:
            reader.get("control", None)
            reader.problem('only with per_window = "dynamic"', "control")
        if per_window == DYNAMIC:
            if not reader.has("control"):
                reader.problem('per_window = "dynamic" needs an [experiments.control] table (target, initial, '
                               'max_change, min, max)', "control")
            control = Control.read(TableReader(reader.get("control", {}), f"{reader.where}.control",
                                               reader.problems))
            per_window = None
        elif isinstance(per_window, int) and not isinstance(per_window, bool) and per_window >= 0:
            per_window = (per_window,) * (windows or 0)
        elif (isinstance(per_window, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                    for n in per_window)):
            if windows is not None and len(per_window) != windows:
                reader.problem(f"has {len(per_window)} entries but the run has {windows} windows of "
                               f"{window_steps} steps", "per_window")
            per_window = tuple(per_window)
        else:
            reader.problem(f"expected a count ≥ 0, an array of counts per window or \"dynamic\", got "
                           f"{per_window!r}", "per_window")
            per_window = ()
        return cls(name, kind, reader.path("documents", base), reader.path("probes", base), per_window,
                   window_steps or 1, reader.str("field", "text"), Placement("range", 0, steps or 1), control)

    def payload(self, ctx: Context) -> Payload:
        if self.per_window is None:
            raise InjcError(f"experiment {self.name!r} has per_window = \"dynamic\": its counts are decided window "
                            f"by window by injc run (or give per_window as a count or a list to build it)")
        def probe_records() -> list[dict]:
            probes = read_jsonl(self.probes, self.name)
            check_records(self.name, self.probes, probes,
                          lambda p: isinstance(p.get("input"), str) and isinstance(p.get("target"), str),
                          'needs string "input" and "target"')
            return probes

        pool, probes = gather(lambda: string_field(self.name, self.documents,
                                                   read_jsonl(self.documents, self.name), self.field), probe_records)
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
