"""`BuildOptions`: every way one plan can be built, documented and checked in one place.

The CLI (`injc build`), the dynamic-control loop (`injc run`, a build grown window by window) and CPDT (one build per
row and seed) each make one of these and hand it to `injc.compiler.build.build`; the defaults are the plain build
of the whole plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from injc.compiler.plan import Plan
from injc.errors import InjcError

if TYPE_CHECKING:
    from injc.compiler.workers import RayExecutor


@dataclass(frozen=True)
class BuildOptions:
    clean: bool = False
    """Write the control stream of the plan: the same base tokens and recorded schedule, no payload written (it
    differs from the injected build only inside insertion intervals)."""
    force: bool = False
    """Replace an earlier injc build in the output folder (never anything else)."""
    progress: bool = True
    """Progress bars on stderr."""
    workers: int | RayExecutor | None = None
    """≥ 2: tokenize in that many processes; a `RayExecutor`: on Ray tasks; None: the tokenizer's own threads. The
    bytes are the same for every value."""
    only: tuple[str, ...] | None = None
    """Write just these experiments (every payload is still made, so items and held-out allocations are those of
    the whole plan; the manifest lists the selection). None: all."""
    seed: int | None = None
    """Replaces the plan's [layout] seed."""
    skip_tokens: int | None = None
    """Replaces the plan's [corpus] skip_tokens: another window of the corpus."""
    fraction: float | None = None
    """Rescale the copies of each written random/range experiment to about this share of the run's tokens
    (`injc.compiler.payloads.rescale_copies`)."""
    until_step: int | None = None
    """Write only steps [0, until_step) and mark the manifest partial (a staged build); the same build with a larger
    value, or None, appends the next steps. The schedule is prefix-stable, so the stages add up to the one-shot
    build byte for byte."""
    extend: bool = False
    """Insist that the output folder is a staged build of the same plan and options."""
    counts: Mapping[str, Sequence[int]] | None = None
    """Decided per-window counts of `per_window = "dynamic"` experiments (windows past a list get 0)."""
    control: Sequence[dict] | None = None
    """The dynamic-control decisions' records, copied to the manifest."""
    target: str | None = None
    """"olmo-core:SEED": write the rows straight into OLMo-core's order for that data seed (the folder is also
    its export) instead of the stream-order shards."""

    def __post_init__(self):
        if self.only is not None and not isinstance(self.only, tuple):
            object.__setattr__(self, "only", tuple(self.only))
        if self.fraction is not None and not 0 < self.fraction < 1:
            raise InjcError(f"--fraction must be between 0 and 1, got {self.fraction}")
        for name in ("seed", "skip_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise InjcError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        if self.until_step is not None and self.until_step < 1:
            raise InjcError(f"--until-step must be 1 or more, got {self.until_step:,}")
        if self.target is not None:
            parse_target(self.target)

    @property
    def target_seed(self) -> int | None:
        """OLMo-core's data seed of a `target` build (None: stream-order shards)."""
        return parse_target(self.target) if self.target else None

    def applied(self, plan: Plan) -> Plan:
        """The plan with this build's seed and corpus window."""
        if self.seed is not None:
            plan = dataclasses.replace(plan, seed=self.seed)
        if self.skip_tokens is not None:
            plan = dataclasses.replace(plan, corpus=dataclasses.replace(plan.corpus, skip_tokens=self.skip_tokens))
        return plan

    def last_step(self, steps: int) -> int:
        """The end of the steps this build writes, checked against the run's `steps`."""
        if self.until_step is not None and self.until_step > steps:
            raise InjcError(f"--until-step must be between 1 and the run's {steps:,} steps, got {self.until_step:,}")
        return self.until_step or steps


def parse_target(target: str) -> int:
    """The data seed of `--target olmo-core:SEED`; refuses other trainers."""
    name, _, seed = target.partition(":")
    if name != "olmo-core":
        raise InjcError(f"--target {target!r}: only olmo-core is written directly (olmo-core:SEED); write the "
                        f"others with injc export")
    if not seed.isdigit():
        raise InjcError(f"--target {target!r}: give OLMo-core's data seed, as in olmo-core:1234")
    return int(seed)
