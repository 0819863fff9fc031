"""`documents`: MUSE-style insertion of whole documents, of their paragraphs, or of re-split duplicates.

Documents (JSONL) are shuffled from the plan seed and dealt round-robin to the conditions `split` × `repetitions`:
- "none": the document as one item (longer ones are cut into consecutive pieces that fit an instance), ×k;
- "paragraphs": the document split at blank lines (or into `paragraphs` equal parts without any), each ×k;
- "resplit": k copies of the document, each cut into `paragraphs` parts at its own random word boundaries.
Each condition and document is recorded in evals/NAME.json.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from injc.errors import PlanError
from injc.injectors.base import Context, Payload, Placement, read_jsonl, string_field
from injc.tables import TableReader

SPLITS = ("none", "paragraphs", "resplit")


def _pieces(tokens: np.ndarray, room: int) -> list[np.ndarray]:
    return [tokens[i:i + room] for i in range(0, len(tokens), room)] or [tokens]


@dataclass(frozen=True)
class DocumentsConfig:
    name: str
    kind: str
    file: Path
    field: str
    split: tuple
    repetitions: tuple
    paragraphs: int
    placement: Placement

    @classmethod
    def read(cls, reader: TableReader, name: str, kind: str, base: Path, steps: int | None):
        split = reader.get("split", ["none", "paragraphs", "resplit"])
        if isinstance(split, str):
            split = [split]
        if not isinstance(split, list) or not split or any(s not in SPLITS for s in split):
            reader.problem(f"expected split names from {', '.join(SPLITS)}, got {split!r}", "split")
            split = []
        return cls(name, kind, reader.path("file", base), reader.str("field", "text"), tuple(split),
                     tuple(reader.int_list("repetitions", [1, 10], 1) or ()),
                     reader.int("paragraphs", 7, min=1), Placement.read(reader, steps, allow_explicit=False))

    def _paragraphs(self, text: str) -> list[str]:
        parts = [p.strip() for p in text.split("\n\n") if p.strip()]
        if len(parts) > 1:
            return parts
        words = text.split()
        return [" ".join(chunk) for chunk in np.array_split(np.array(words, dtype=object), self.paragraphs)
                if len(chunk)]

    def payload(self, ctx: Context) -> Payload:
        texts = string_field(self.name, self.file, read_jsonl(self.file, self.name), self.field)
        conditions = [(split, reps) for split in self.split for reps in self.repetitions]
        if not conditions:
            raise PlanError(f"experiment {self.name!r}: no conditions (split × repetitions is empty)")
        rng = ctx.rng(self.name, "documents")
        room = ctx.layout.seq_len - 2
        items, copies, records = [], [], []
        for position, source in enumerate(rng.permutation(len(texts))):
            split, reps = conditions[position % len(conditions)]
            text = texts[source]
            if split == "none":
                pieces = [(piece, reps) for piece in _pieces(ctx.encode([text])[0], room)]
            elif split == "paragraphs":
                pieces = [(piece, reps) for tokens in ctx.encode(self._paragraphs(text))
                          for piece in _pieces(tokens, room)]
            else:
                words = text.split()
                pieces = []
                for _ in range(reps):
                    cuts = np.sort(rng.choice(np.arange(1, len(words)), min(self.paragraphs, len(words)) - 1,
                                              replace=False)) if len(words) > 1 else []
                    parts = [" ".join(words[a:b]) for a, b in zip([0, *cuts], [*cuts, len(words)])]
                    pieces += [(piece, 1) for tokens in ctx.encode(parts) for piece in _pieces(tokens, room)]
            first = len(items)
            items += [ctx.wrap(piece) for piece, _ in pieces]
            copies += [count for _, count in pieces]
            records.append({"document": int(source), "split": split, "repetitions": reps,
                            "items": list(range(first, len(items)))})
        ctx.check_items(self.name, items, "piece")
        return Payload(
            items, np.asarray(copies, dtype=np.int64), self.placement,
            summary={"conditions": [{"split": s, "repetitions": r} for s, r in conditions],
                     "documents": len(texts)},
            eval_records={"kind": self.kind, "documents": records},
        )
