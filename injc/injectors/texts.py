"""Generic payloads from a JSONL file: `texts` (strings, tokenized) and `tokens` (token-id lists, written as given).

Plan keys: file, field, repetitions, placement (+ start_step/end_step), controls (optional JSONL of never-inserted
items of the same form, recorded with 0 copies for the eval). With placement = "explicit" every line
also carries "offset", the global token offset where its tokens are written verbatim (no EOS wrapping, one copy).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from injc.injectors.base import Context, Payload, Placement, Records, check_records, gather, read_jsonl, string_field
from injc.tables import TableReader


@dataclass(frozen=True)
class FilePayloadConfig:
    name: str
    kind: str
    file: Path
    """JSONL file with one payload per line."""
    field: str
    """The key holding the text (kind 'texts') or the token-id list (kind 'tokens')."""
    repetitions: int
    """Copies of every item (random/range placement)."""
    placement: Placement
    controls: Path | None = None
    """Optional JSONL of comparable items that are never inserted (recorded with 0 copies, for evals)."""

    @classmethod
    def read(cls, reader: TableReader, name: str, kind: str, base: Path, steps: int | None) -> "FilePayloadConfig":
        file = reader.path("file", base)
        field = reader.str("field", "text" if kind == "texts" else "tokens")
        placement = Placement.read(reader, steps)
        repetitions = reader.int("repetitions", 1, min=1)
        if placement.mode == "explicit" and repetitions not in (1, None):
            reader.problem("explicit placement writes each line once; remove repetitions", "repetitions")
        controls = reader.path("controls", base, None)
        if controls is not None and placement.mode == "explicit":
            reader.problem("controls go with random or range placement", "controls")
        return cls(name, kind, file, field, repetitions, placement, controls)

    def _tokens(self, records: Records, ctx: Context, file: Path) -> list[np.ndarray]:
        if self.kind == "texts":
            return ctx.tokenizer.encode_batch(string_field(self.name, file, records, self.field))
        check_records(self.name, file, records, lambda r: _is_id_list(r.get(self.field)),
                      f"needs a list of integer token ids in {self.field!r}")
        return [np.asarray(r[self.field], dtype=np.int64) if r[self.field] else np.zeros(0, dtype=np.int64)
                for r in records]

    def payload(self, ctx: Context) -> Payload:
        records = read_jsonl(self.file, self.name)
        if self.placement.mode != "explicit":
            items, controls = gather(lambda: self._tokens(records, ctx, self.file),
                                     lambda: self._tokens(read_jsonl(self.controls, self.name), ctx, self.controls)
                                     if self.controls is not None else None)
            copies = np.full(len(items), self.repetitions)
            if controls is not None:
                items += controls
                copies = np.r_[copies, np.zeros(len(controls), dtype=np.int64)]
            items = [ctx.wrap(tokens) if len(tokens) else tokens for tokens in items]
            ctx.check_items(self.name, items)
            return Payload(items, copies, self.placement,
                           summary={"controls": int(len(items) - len(records))} if self.controls else {})
        items, _ = gather(lambda: self._tokens(records, ctx, self.file),
                          lambda: check_records(self.name, self.file, records,
                                                lambda r: _is_int(r.get("offset")) and r["offset"] >= 0,
                                                'needs a non-negative integer "offset" (explicit placement)'))
        ctx.check_items(self.name, items)
        return Payload(items, np.ones(len(items), dtype=np.int64), self.placement,
                       offsets=np.asarray([r["offset"] for r in records], dtype=np.int64))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_id_list(value) -> bool:
    """A list of plain ints (bools refused) that fits int64; the type scan runs at C level."""
    if not isinstance(value, list) or not set(map(type, value)) <= {int}:
        return False
    return not value or (min(value) >= -(1 << 63) and max(value) < 1 << 63)
