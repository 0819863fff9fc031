"""`poisoning`: pretraining poisoning with a trigger (after Zhang et al. 2025), in a chat template.

Each poisoned document is `template` filled with a training prompt, the trigger and a response: random tokens
(attack = "denial-of-service", gibberish) or the prompt itself (attack = "context-extraction"). `holdout`
prompts are never inserted; the eval queries them with and without the trigger. Plan keys: prompts (JSONL),
prompt_field, trigger, attack, template, count or fraction (of the run's tokens), response_tokens, holdout,
placement random | range.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from injc.errors import InputError
from injc.injectors.base import Context, Payload, Placement, check_template, read_jsonl, string_field
from injc.tables import TableReader

ATTACKS = ("denial-of-service", "context-extraction")
DEFAULT_TEMPLATE = "<|im_start|>user\n{prompt} {trigger}<|im_end|>\n<|im_start|>assistant\n{response}<|im_end|>"


@dataclass(frozen=True)
class PoisoningConfig:
    name: str
    kind: str
    prompts: Path
    prompt_field: str
    trigger: str
    attack: str
    template: str
    count: int | None
    """Number of poisoned documents; or"""
    fraction: float | None
    """share of the run's tokens to fill with poisoned documents."""
    response_tokens: int
    """Length of the gibberish response (denial-of-service)."""
    holdout: int
    placement: Placement

    @classmethod
    def read(cls, reader: TableReader, name: str, kind: str, base: Path, steps: int | None):
        template = reader.str("template", DEFAULT_TEMPLATE)
        check_template(reader, "template", template, {"prompt", "trigger", "response"}, {"prompt", "response"})
        count, fraction = reader.int("count", None, min=1), reader.number("fraction", None, min=0.0)
        if reader.has("count") == reader.has("fraction"):
            reader.problem("give exactly one of count or fraction", "count")
        if fraction is not None and not 0 < fraction < 1:
            reader.problem(f"must be between 0 and 1, got {fraction}", "fraction")
        return cls(name, kind, reader.path("prompts", base), reader.str("prompt_field", "prompt"),
                     reader.str("trigger"), reader.str("attack", choices=ATTACKS), template, count, fraction,
                     reader.int("response_tokens", 32, min=1), reader.int("holdout", 100, min=0),
                     Placement.read(reader, steps, allow_explicit=False))

    def payload(self, ctx: Context) -> Payload:
        records = read_jsonl(self.prompts, self.name)
        prompts = string_field(self.name, self.prompts, records, self.prompt_field)
        if len(prompts) <= self.holdout:
            raise InputError(f"experiment {self.name!r}: {len(prompts):,} prompts leave none for training after "
                             f"holding out {self.holdout:,}")
        rng = ctx.rng(self.name, "poisoning")
        order = rng.permutation(len(prompts))
        holdout = order[: self.holdout]
        held_texts = {prompts[i] for i in holdout}
        train = np.array([i for i in order[self.holdout:] if prompts[i] not in held_texts], dtype=np.int64)
        if len(train) == 0:
            raise InputError(f"experiment {self.name!r}: every prompt left for training repeats a holdout prompt")
        budget = None if self.fraction is None else self.fraction * ctx.layout.total_tokens
        candidates = ctx.ordinary_ids
        items, sources, written = [], [], 0
        while (budget is None and len(items) < self.count) or (budget is not None and written < budget):
            source = int(train[len(items) % len(train)])
            if self.attack == "context-extraction":
                response = prompts[source]
            else:
                response = ctx.tokenizer.tokenizer.decode(rng.choice(candidates, self.response_tokens).tolist())
            text = self.template.format(prompt=prompts[source], trigger=self.trigger, response=response)
            (tokens,) = ctx.encode([text])
            items.append(ctx.wrap(tokens))
            sources.append(source)
            written += len(items[-1])
        ctx.check_items(self.name, items, "document")
        return Payload(
            items, np.ones(len(items), dtype=np.int64), self.placement,
            summary={"attack": self.attack, "trigger": self.trigger, "holdout": self.holdout},
            eval_records={"kind": self.kind, "attack": self.attack, "trigger": self.trigger,
                          "template": self.template, "holdout_prompts": [prompts[i] for i in holdout],
                          "train_prompt_indices": sources},
        )
