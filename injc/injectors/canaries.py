"""`canaries`: the paper's memorization-patterns experiment (MemP, after Panda et al. 2025).

Host texts get a canary (random tokens, the base corpus's rarest tokens, the tokens a model finds least likely after
the host, or none) appended; every condition (canary length × repetitions) gets `per_condition` hosts, and `holdout`
further hosts with canaries of their own are never inserted: the non-member controls of the membership-inference
eval. Plan keys: hosts (JSONL file, or "corpus-holdout": documents of the reserved tail), host_field, canary,
canary_model (canary = "model": a LitGPT lit_model.pth with its model_config.yaml beside it), lengths, repetitions,
per_condition, holdout, rare_pool, placement random | range."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from injc.errors import InputError
from injc.injectors.base import Context, Payload, Placement, read_jsonl, string_field
from injc.tables import TableReader

CANARY_KINDS = ("random", "rare", "model", "none")
HOLDOUT_HOSTS = "corpus-holdout"


def least_likely(weights: Path, ctx: Context, hosts: list[np.ndarray], lengths: list[int]) -> list[np.ndarray]:
    """The paper's model-based canary: for each host, the `length` ordinary ids that the model finds least likely
    right after EOS + host, least likely first (one forward pass per host, on the CPU)."""
    try:
        import torch
        from litgpt import Config
        from litgpt.model import GPT
    except ImportError as error:
        raise InputError(f'canary = "model" needs torch and litgpt ({error.name} is missing): '
                         "pip install torch==2.13.0 && pip install -e '.[train]'") from None
    config_path = weights.parent / "model_config.yaml"
    if not config_path.is_file():
        raise InputError(f"canary_model {str(weights)!r}: no model_config.yaml beside it")
    config = Config.from_file(config_path)
    if config.padded_vocab_size < ctx.tokenizer.vocab_size:
        raise InputError(f"canary_model {str(weights)!r} has {config.padded_vocab_size:,} embedding rows for a "
                         f"tokenizer of {ctx.tokenizer.vocab_size:,} ids: it was trained with another tokenizer")
    model = GPT(config)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("model", state))
    model.eval()
    ordinary = torch.from_numpy(ctx.ordinary_ids)
    canaries = []
    with torch.no_grad():
        for host, length in zip(hosts, lengths):
            context = np.r_[ctx.tokenizer.eos_id, host][-config.block_size:]
            logits = model(torch.from_numpy(context.astype(np.int64))[None])[0, -1].float()
            order = torch.argsort(logits[ordinary], stable=True)[:length]
            canaries.append(ordinary[order].numpy().astype(np.int64))
    return canaries


@dataclass(frozen=True)
class CanariesConfig:
    name: str
    kind: str
    hosts: Path | None
    """JSONL host texts; None for hosts = "corpus-holdout" (documents of the corpus's reserved tail)."""
    host_field: str
    canary: str
    """random: uniform non-special token ids | rare: drawn from the base corpus's rarest ids | model: the ids
    `canary_model` finds least likely after the host (the paper's model-based canary) | none."""
    lengths: tuple
    repetitions: tuple
    per_condition: int
    holdout: int
    rare_pool: int
    """How many of the rarest ids canary = "rare" draws from."""
    placement: Placement
    canary_model: Path | None = None
    """canary = "model": the checkpoint's lit_model.pth (model_config.yaml beside it)."""

    @classmethod
    def read(cls, reader: TableReader, name: str, kind: str, base: Path, steps: int | None):
        hosts = None if reader.table.get("hosts") == HOLDOUT_HOSTS else reader.path("hosts", base)
        reader.used.add("hosts")
        canary = reader.str("canary", "random", choices=CANARY_KINDS)
        model = reader.path("canary_model", base, None)
        if canary == "model" and not reader.has("canary_model"):
            reader.problem('canary = "model" needs canary_model = "path/to/lit_model.pth"', "canary_model")
        elif canary != "model" and reader.has("canary_model"):
            reader.problem('only valid with canary = "model"', "canary_model")
        return cls(
            name, kind, hosts, reader.str("host_field", "text"), canary,
            tuple(reader.int_list("lengths", [1, 8, 32], 1) or ()),
            tuple(reader.int_list("repetitions", [1, 4, 16], 1) or ()),
            reader.int("per_condition", 100, min=1), reader.int("holdout", 500, min=0),
            reader.int("rare_pool", 64, min=1), Placement.read(reader, steps, allow_explicit=False), model,
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
        pool = self._canary_ids(ctx, rng) if self.canary in ("random", "rare") else np.zeros(0, dtype=np.int64)
        room = ctx.layout.seq_len - 2
        bodies = [hosts[host][hosts[host] != ctx.tokenizer.eos_id][: max(0, room - length)]
                  for host, length in zip(chosen, lengths)]
        if self.canary == "model":
            canaries = least_likely(self.canary_model, ctx, bodies, lengths)
        else:
            canaries = [rng.choice(pool, size=length) if length else np.zeros(0, dtype=np.int64) for length in lengths]
        items, item_records = [], []
        for item, (host, length, tokens, canary) in enumerate(zip(chosen, lengths, bodies, canaries)):
            body = np.concatenate([tokens, canary])
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
