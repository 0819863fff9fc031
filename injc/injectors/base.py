"""What every injector shares: placement keys, the payload it hands the compiler, and JSONL payload reading."""

import json
import string
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from injc.errors import InputError, LayoutError, PlanError, some_of
from injc.shards.layout import Layout
from injc.tables import TableReader
from injc.tokenizer import LoadedTokenizer, ordinary_token_ids

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
    def read(cls, reader: TableReader, steps: int | None, allow_explicit: bool = True) -> "Placement":
        """Read placement (+ start_step/end_step); kinds that generate their items pass allow_explicit=False."""
        mode = reader.str("placement", "random", choices=PLACEMENTS)
        if mode == "explicit" and not allow_explicit:
            reader.problem("this kind places its items at random: use placement = \"random\" or \"range\"",
                           "placement")
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
    """An experiment's items, tokenized as they will be written, and how often and where to place them.

    Items with 0 copies are controls: recorded for evals, never written.
    """

    items: list[np.ndarray]
    copies: np.ndarray
    placement: Placement
    offsets: np.ndarray | None = None
    item_steps: tuple[np.ndarray, np.ndarray] | None = None
    """Per-item [start_step, end_step) ranges, overriding the placement's range (e.g. per-window knowledge)."""
    summary: dict = field(default_factory=dict)
    """Small JSON facts shown in the manifest's experiment entry (tiers, conditions, ...)."""
    eval_records: dict | None = None
    """What the experiment's eval needs (controls, probes, answers): written to evals/NAME.json, hashed."""
    directive: dict | None = None
    """An instruction for the trainer that changes no token (e.g. embedding noise), copied to the manifest."""


class HoldoutPool:
    """The reserved tail of the corpus, handed out in order so that no two experiments share tokens."""

    def __init__(self, tokens: np.ndarray, eos_id: int):
        self.tokens = tokens
        self.eos_id = eos_id
        self.cursor = 0
        self.allocations: list[dict] = []

    def take(self, name: str, count: int) -> np.ndarray:
        """The next `count` tokens of the tail."""
        left = len(self.tokens) - self.cursor
        if count > left:
            raise LayoutError(f"experiment {name!r} needs {count:,} held-out tokens but only {left:,} of "
                              f"[corpus] holdout_tokens = {len(self.tokens):,} are left: set holdout_tokens to at "
                              f"least {self.cursor + count:,} (the experiments before it in the plan take "
                              f"{self.cursor:,})")
        start, self.cursor = self.cursor, self.cursor + count
        self.allocations.append({"experiment": name, "start": start, "end": self.cursor})
        return np.asarray(self.tokens[start:self.cursor], dtype=np.int64)

    def rows(self, name: str, count: int, seq_len: int) -> np.ndarray:
        """The next `count` whole instances of the tail, as a [count, seq_len] array."""
        return self.take(name, count * seq_len).reshape(count, seq_len)

    def documents(self, name: str, count: int) -> list[np.ndarray]:
        """The next `count` EOS-separated documents of the tail (the first may be a partial one)."""
        rest = np.asarray(self.tokens[self.cursor:])
        ends = np.flatnonzero(rest == self.eos_id)
        if len(ends) < count:
            raise LayoutError(f"experiment {name!r} needs {count:,} held-out documents but the reserved tail "
                              f"has {len(ends):,} left; raise [corpus] holdout_tokens")
        tokens = self.take(name, int(ends[count - 1]) + 1)
        return [doc for doc in np.split(tokens, ends[:count] + 1)[:count] if len(doc)]


@dataclass(frozen=True)
class Context:
    """What an injector may use to make its payload."""

    tokenizer: LoadedTokenizer
    layout: Layout
    seed: int
    corpus_token_counts: Callable[[], np.ndarray] | None = None
    """How often each token id occurs in the run's base stream (computed on first call, by an extra pass)."""
    holdout: HoldoutPool | None = None
    """The reserved tail ([corpus] holdout_tokens), or None."""
    base_tokens: np.ndarray | None = None
    """The run's base stream (a memmap), for experiments that must see it before placement; else None."""

    def require_holdout(self, name: str, tokens: int | None = None) -> HoldoutPool:
        """The reserved tail; `tokens` (what the experiment will take, when known) goes into the error."""
        if self.holdout is None or len(self.holdout.tokens) == 0:
            amount = f" to at least {tokens:,}" if tokens else " (tokens after the run's own)"
            raise PlanError(f"experiment {name!r} draws from the corpus's reserved tail: set [corpus] "
                            f"holdout_tokens{amount}")
        return self.holdout

    def rng(self, name: str, purpose: str = "") -> np.random.Generator:
        """A generator for one experiment: depends on the plan seed and the name, not on experiment order."""
        return np.random.default_rng([self.seed, zlib.crc32(name.encode()), zlib.crc32(purpose.encode())])

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        return self.tokenizer.encode_batch(texts)

    @property
    def ordinary_ids(self) -> np.ndarray:
        """Ids that random and rare tokens are drawn from (no EOS, no special token)."""
        return ordinary_token_ids(self.tokenizer.tokenizer, self.tokenizer.eos_id)

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


class Records(list):
    """JSONL records, with `lines`: the 1-based line number of each, so errors point at the file's own lines (a
    saved dataset's records: their row numbers, `unit` "row"); `problems`: the lines that were no record (bad
    JSON, not an object), reported by the first check together with what it finds, so one run names them all."""

    def __init__(self, records: list[dict], lines: list[int], unit: str = "line", problems: list[str] | None = None):
        super().__init__(records)
        self.lines, self.unit, self.problems = lines, unit, list(problems or [])


def read_jsonl(path: Path, experiment: str) -> Records:
    """Read a JSONL payload file: one JSON object per non-blank line; errors name the file and every bad line.
    A saved Hugging Face dataset named instead (injc.injectors.saved) gives its rows, mapped by its field map."""
    if path.is_dir():
        from injc.injectors.saved import read_saved  # datasets is imported only for a saved dataset

        return Records(*read_saved(path, experiment), unit="row")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise InputError(f"experiment {experiment!r}: cannot read {str(path)!r}: {error.strerror or error}") from None
    records, lines, problems = [], [], {}
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            problems.setdefault("not valid UTF-8", []).append(number)
            continue
        except json.JSONDecodeError:
            problems.setdefault("not valid JSON", []).append(number)
            continue
        if not isinstance(record, dict):
            problems.setdefault("not a JSON object", []).append(number)
            continue
        records.append(record)
        lines.append(number)
    unreadable = [f"experiment {experiment!r}: {str(path)!r} {_line_list(numbers)}: {what}"
                  for what, numbers in problems.items()]
    if not records:
        raise InputError(*unreadable or [f"experiment {experiment!r}: {str(path)!r} holds no records"])
    return Records(records, lines, problems=unreadable)


def _line_list(numbers: list[int], shown: int = 20, unit: str = "line") -> str:
    """'line 3' or 'lines 3, 7, 9 and 12 more': every bad line is counted, the first `shown` are named."""
    return f"{unit} {numbers[0]}" if len(numbers) == 1 else f"{unit}s " + some_of(numbers, shown)


def check_records(experiment: str, path: Path, records: Records, ok: Callable[[dict], bool], need: str) -> None:
    """Raise one InputError naming every record (by its 1-based line) that fails `ok`, not only the first, and
    every line of the file that was no record."""
    bad = [line for line, record in zip(records.lines, records) if not ok(record)]
    found = [f"experiment {experiment!r}: {str(path)!r} {_line_list(bad, unit=records.unit)}: {need}"] if bad else []
    if records.problems or found:
        raise InputError(*records.problems, *found)


def gather(*checks: Callable):
    """Run every check (callables: the reading and checking of one input each) and return their results; raise one
    InputError with every problem all of them found, so a second file's problems do not wait for the first's fix."""
    results, problems = [], []
    for check in checks:
        try:
            results.append(check())
        except InputError as error:
            problems += [problem for problem in error.problems if problem not in problems]
            results.append(None)
    if problems:
        raise InputError(*problems)
    return results


def string_field(experiment: str, path: Path, records: Records, field: str) -> list[str]:
    """The non-empty string `field` of every record; every record without one is reported."""
    check_records(experiment, path, records, lambda r: isinstance(r.get(field), str) and bool(r[field].strip()),
                  f"needs a non-empty string {field!r}")
    return [record[field] for record in records]


def template_fields(template: str) -> set[str] | None:
    """The plain {field} names of a template; None when it uses attribute/index access or conversions."""
    names = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            return None
        names.add(name)
    return names


def check_template(reader, key: str, template: str | None, allowed: set[str], required: set[str]) -> None:
    """Report a template that uses unknown fields, misses required ones, or anything beyond plain {name}."""
    if template is None:
        return
    names = template_fields(template)
    if names is None:
        reader.problem("only plain {name} fields are allowed in templates", key)
    elif names - allowed:
        reader.problem(f"unknown field(s) {', '.join(sorted(names - allowed))}; allowed: "
                       f"{', '.join(sorted(allowed))}", key)
    elif required - names:
        reader.problem(f"must contain {', '.join('{' + n + '}' for n in sorted(required - names))}", key)
