"""What every injector shares: placement keys, the payload it hands the compiler, and JSONL payload reading."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from injc.compiler.layout import Layout
from injc.compiler.tables import TableReader
from injc.compiler.tokenizer import LoadedTokenizer
from injc.errors import InputError

PLACEMENTS = ("random", "range", "explicit")


@dataclass(frozen=True)
class Placement:
    """Where an experiment's copies may go."""

    mode: str
    """'random': anywhere in the run; 'range': start_step ≤ step < end_step; 'explicit': offsets from the file."""
    start_step: int = 0
    end_step: int | None = None
    """Exclusive; None means the end of the run."""

    @classmethod
    def read(cls, reader: TableReader, steps: int | None) -> "Placement":
        mode = reader.str("placement", "random", choices=PLACEMENTS)
        if mode == "range":
            start = reader.int("start_step", min=0)
            end = reader.int("end_step", min=1, max=steps)
            if isinstance(start, int) and isinstance(end, int) and start >= end:
                reader.problem(f"must be greater than start_step ({start}), got {end}", "end_step")
            return cls("range", start if isinstance(start, int) else 0, end)
        for key in ("start_step", "end_step"):
            if reader.has(key):
                reader.int(key)
                reader.problem(f"only valid with placement = \"range\" (placement is {mode!r})", key)
        return cls(mode or "random")


@dataclass
class Payload:
    """An experiment's items, tokenized as they will be written, and how often and where to place them."""

    items: list[np.ndarray]
    copies: np.ndarray
    placement: Placement
    offsets: np.ndarray | None = None
    records: dict = field(default_factory=dict)
    """Extra, JSON-serializable facts for the manifest (what evals need later)."""


@dataclass(frozen=True)
class Context:
    """What an injector may use to make its payload."""

    tokenizer: LoadedTokenizer
    layout: Layout
    seed: int

    def wrap(self, tokens: np.ndarray) -> np.ndarray:
        """EOS-wrap a random/range payload so it reads as a document of its own (the paper's rule).

        A payload of exactly seq_len tokens stays as is; otherwise EOS is appended unless already last, then
        prepended unless already first and there is room.
        """
        eos, seq_len = self.tokenizer.eos_id, self.layout.seq_len
        if len(tokens) == seq_len:
            return tokens
        if len(tokens) == 0 or tokens[-1] != eos:
            tokens = np.append(tokens, eos)
        if len(tokens) < seq_len and tokens[0] != eos:
            tokens = np.insert(tokens, 0, eos)
        return tokens

    def check_items(self, name: str, items: list[np.ndarray], what: str = "item") -> None:
        """Refuse empty items, items longer than seq_len and token ids outside the vocabulary."""
        problems = []
        vocab = self.tokenizer.vocab_size
        for index, tokens in enumerate(items):
            if len(tokens) == 0:
                problems.append(f"experiment {name!r}: {what} {index} is empty")
            elif len(tokens) > self.layout.seq_len:
                problems.append(f"experiment {name!r}: {what} {index} has {len(tokens):,} tokens, more than "
                                f"seq_len = {self.layout.seq_len:,}")
            elif tokens.min() < 0 or tokens.max() >= vocab:
                bad = int(tokens[(tokens < 0) | (tokens >= vocab)][0])
                problems.append(f"experiment {name!r}: {what} {index} has token id {bad} outside "
                                f"the vocabulary [0, {vocab})")
            if len(problems) >= 10:
                problems.append(f"experiment {name!r}: stopped checking after 10 problems")
                break
        if problems:
            raise InputError(*problems)


def read_jsonl(path: Path, experiment: str) -> list[dict]:
    """Read a JSONL payload file: one JSON object per non-blank line; errors name the file and line."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise InputError(f"experiment {experiment!r}: cannot read {str(path)!r}: {error.strerror or error}") from None
    records = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError(f"experiment {experiment!r}: {str(path)!r} line {number} is not valid UTF-8") from None
        except json.JSONDecodeError as error:
            raise InputError(f"experiment {experiment!r}: {str(path)!r} line {number} is not valid JSON: "
                             f"{error.msg}") from None
        if not isinstance(record, dict):
            raise InputError(f"experiment {experiment!r}: {str(path)!r} line {number} is not a JSON object")
        records.append(record)
    if not records:
        raise InputError(f"experiment {experiment!r}: {str(path)!r} holds no records")
    return records
