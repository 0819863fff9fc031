"""`canaries`: the paper's memorization-patterns experiment (MemP, after Panda et al. 2025).

Host texts get a canary (random tokens, the base corpus's rarest tokens, or none) appended; every condition (canary
length × repetitions) gets `per_condition` hosts, and `holdout` further hosts with canaries of their own are never
inserted: the non-member controls of the membership-inference eval. Plan keys: hosts (JSONL file, or
"corpus-holdout": documents of the reserved tail), host_field, canary, lengths, repetitions, per_condition, holdout,
rare_pool, placement random | range."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from injc.compiler.tables import TableReader
from injc.errors import InputError
from injc.injectors.base import Context, Payload, Placement, read_jsonl, string_field

CANARY_KINDS = ("random", "rare", "none")
HOLDOUT_HOSTS = "corpus-holdout"


@dataclass(frozen=True)
class CanariesConfig:
    name: str
    kind: str
    hosts: Path | None
    """JSONL host texts; None for hosts = "corpus-holdout" (documents of the corpus's reserved tail)."""
    host_field: str
    canary: str
    """random: uniform non-special token ids | rare: drawn from the base corpus's rarest ids | none."""
    lengths: tuple
    repetitions: tuple
    per_condition: int
    holdout: int
    rare_pool: int
    """How many of the rarest ids canary = "rare" draws from."""
    placement: Placement

    @classmethod
    def read(cls, reader: TableReader, name: str, kind: str, base: Path, steps: int | None):
        hosts = None if reader.table.get("hosts") == HOLDOUT_HOSTS else reader.path("hosts", base)
        reader.used.add("hosts")
        return cls(
            name, kind, hosts, reader.str("host_field", "text"),
            reader.str("canary", "random", choices=CANARY_KINDS),
            tuple(reader.int_list("lengths", [1, 8, 32], 1) or ()),
            tuple(reader.int_list("repetitions", [1, 4, 16], 1) or ()),
            reader.int("per_condition", 100, min=1), reader.int("holdout", 500, min=0),
            reader.int("rare_pool", 64, min=1), Placement.read(reader, steps, allow_explicit=False),
        )

    def conditions(self) -> list[tuple[int, int]]:
        lengths = (0,) if self.canary == "none" else self.lengths
        return [(length, reps) for length in lengths for reps in self.repetitions]

    def _canary_ids(self, ctx: Context, rng: np.random.Generator) -> np.ndarray:
        candidates = ctx.ordinary_ids
        if self.canary == "rare":
            counts = ctx.corpus_token_counts()[candidates]
            candidates = candidates[np.argsort(counts, kind="stable")[: self.rare_pool]]
        return candidates

    def _host_tokens(self, ctx: Context, need: int) -> list[np.ndarray]:
        if self.hosts is None:
            return ctx.require_holdout(self.name).documents(self.name, need)
        texts = string_field(self.name, self.hosts, read_jsonl(self.hosts, self.name), self.host_field)
        if need > len(texts):
            raise InputError(f"experiment {self.name!r}: {len(self.conditions())} conditions × "
                             f"{self.per_condition} + {self.holdout} holdout need {need:,} hosts, "
                             f"{str(self.hosts)!r} has {len(texts):,}")
        return ctx.encode(texts)

    def payload(self, ctx: Context) -> Payload:
        conditions = self.conditions()
        need = self.per_condition * len(conditions) + self.holdout
        hosts = self._host_tokens(ctx, need)
        rng = ctx.rng(self.name, "canaries")
        chosen = rng.permutation(len(hosts))[:need]
        member_conditions = [c for c in conditions for _ in range(self.per_condition)]
        holdout_lengths = [conditions[i % len(conditions)][0] for i in range(self.holdout)]
        lengths = [c[0] for c in member_conditions] + holdout_lengths
        copies = np.array([c[1] for c in member_conditions] + [0] * self.holdout, dtype=np.int64)
        pool = self._canary_ids(ctx, rng) if self.canary != "none" else np.zeros(0, dtype=np.int64)
        room = ctx.layout.seq_len - 2
        items, item_records = [], []
        for item, (host, length) in enumerate(zip(chosen, lengths)):
            tokens = hosts[host][hosts[host] != ctx.tokenizer.eos_id]
            canary = rng.choice(pool, size=length) if length else np.zeros(0, dtype=np.int64)
            body = np.concatenate([tokens[: max(0, room - length)], canary])
            items.append(ctx.wrap(body))
            item_records.append({"item": item, "host_index": int(host), "member": bool(copies[item] > 0),
                                 "canary_length": length, "repetitions": int(copies[item]),
                                 "canary": canary.tolist(), "host_tokens": int(len(body) - length)})
        ctx.check_items(self.name, items, "host")
        return Payload(
            items, copies, self.placement,
            summary={"repetitions": list(self.repetitions), "canary": self.canary,
                     "conditions": [{"canary_length": c[0], "repetitions": c[1], "hosts": self.per_condition}
                                    for c in conditions], "holdout": self.holdout},
            eval_records={"kind": self.kind, "canary": self.canary, "items": item_records},
        )
