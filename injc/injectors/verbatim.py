"""`verbatim-removal`: the paper's MemV. Given sequences (token lists or texts), find every training instance of
the base stream that contains any of them and replace it with a reserved-tail instance that does not.

The search is vectorized: candidate positions are found by their first two tokens packed into one uint64 and
`np.isin`, then checked in full against a sliding-window view, chunk by chunk with overlap so that no occurrence
is missed at a chunk edge. Rows overlapping an occurrence are replaced, so no occurrence survives, even one that
crosses rows. Other experiments' payloads containing a sequence are refused.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from injc.errors import InputError
from injc.injectors.base import Context, Payload, Placement, Records, check_records, read_jsonl
from injc.tables import TableReader

SEARCH_CHUNK = 1 << 24


def _pairs(tokens: np.ndarray) -> np.ndarray:
    tokens = tokens.astype(np.uint64)
    return (tokens[:-1] << np.uint64(32)) | tokens[1:]


def find_occurrences(tokens: np.ndarray, sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Start positions (sorted) of every occurrence of any sequence (length ≥ 2) in `tokens`, and which one."""
    longest = max(len(s) for s in sequences)
    heads = np.array([(int(s[0]) << 32) | int(s[1]) for s in sequences], dtype=np.uint64)
    order = np.argsort(heads, kind="stable")
    found_at, found_which = [], []
    for start in range(0, max(len(tokens) - 1, 0), SEARCH_CHUNK):
        chunk = np.asarray(tokens[start:start + SEARCH_CHUNK + longest - 1])
        pairs = _pairs(chunk)
        candidates = np.flatnonzero(np.isin(pairs, heads))
        if len(candidates) == 0:
            continue
        low = np.searchsorted(heads[order], pairs[candidates], side="left")
        high = np.searchsorted(heads[order], pairs[candidates], side="right")
        for which in np.unique(order[np.concatenate([np.arange(a, b) for a, b in zip(low, high)])]):
            sequence = sequences[which]
            at = candidates[pairs[candidates] == heads[which]]
            at = at[at + len(sequence) <= len(chunk)]
            at = at[at < SEARCH_CHUNK]  # later positions belong to the next chunk
            if len(at):
                windows = sliding_window_view(chunk, len(sequence))[at]
                hits = at[(windows == sequence).all(axis=1)]
                found_at.append(hits + start)
                found_which.append(np.full(len(hits), which))
    if not found_at:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    at, which = np.concatenate(found_at), np.concatenate(found_which)
    order = np.argsort(at, kind="stable")
    return at[order].astype(np.int64), which[order]


def _is_token_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


@dataclass(frozen=True)
class VerbatimRemovalConfig:
    name: str
    kind: str
    file: Path
    field: str
    """Token-id lists, or texts (tokenized without EOS)."""
    placement: Placement
    reads_base_stream = True

    @classmethod
    def read(cls, reader: TableReader, name: str, kind: str, base: Path, steps: int | None):
        return cls(name, kind, reader.path("file", base), reader.str("field", "tokens"), Placement("explicit"))

    def sequences(self, ctx: Context) -> list[np.ndarray]:
        records = read_jsonl(self.file, self.name)
        values = [r.get(self.field) for r in records]
        if all(isinstance(v, str) and v for v in values):
            sequences = ctx.encode(values)
        else:
            check_records(self.name, self.file, records, lambda r: _is_token_list(r.get(self.field)),
                          f"needs {self.field!r} as a text or a list of token ids (all lines the same kind)")
            sequences = [np.asarray(v, dtype=np.int64) for v in values]
        check_records(self.name, self.file, Records([{"n": len(s)} for s in sequences], records.lines,
                                                    problems=records.problems),
                      lambda r: r["n"] >= 2, "a sequence needs at least 2 tokens")
        return sequences

    def payload(self, ctx: Context) -> Payload:
        layout, sequences = ctx.layout, self.sequences(ctx)
        at, which = find_occurrences(ctx.base_tokens, sequences)
        lengths = np.array([len(s) for s in sequences])[which]
        first_row, last_row = at // layout.seq_len, (at + lengths - 1) // layout.seq_len
        spans = last_row - first_row + 1
        rows = np.unique(np.repeat(first_row, spans) + np.arange(spans.sum()) - np.repeat(np.cumsum(spans) - spans,
                                                                                        spans))
        pool = ctx.require_holdout(self.name)
        clean_rows = []
        while len(clean_rows) < len(rows):
            candidates = pool.rows(self.name, len(rows) - len(clean_rows), layout.seq_len)
            hit, _ = find_occurrences(candidates.ravel(), sequences)
            dirty = set((hit // layout.seq_len).tolist())
            clean_rows += [row for index, row in enumerate(candidates) if index not in dirty]
        return Payload(
            clean_rows, np.ones(len(rows), dtype=np.int64), self.placement, offsets=rows * layout.seq_len,
            summary={"sequences": len(sequences), "occurrences": int(len(at)), "instances_replaced": int(len(rows))},
            eval_records={"kind": self.kind, "sequences": [s.tolist() for s in sequences],
                          "occurrences": {"offset": at.tolist(), "sequence": which.tolist()},
                          "replaced_rows": rows.tolist()},
        )

    def check_others(self, experiments, payloads) -> None:
        """Refuse any other experiment's payload that contains one of the removed sequences."""
        mine = next(p for e, p in zip(experiments, payloads) if e is self)
        sequences = [np.asarray(s) for s in mine.eval_records["sequences"]]
        problems = []
        for experiment, payload in zip(experiments, payloads):
            if experiment is self or not payload.items:
                continue
            lengths = np.array([len(item) for item in payload.items])
            at, which = find_occurrences(np.concatenate(payload.items), sequences)
            for position, sequence in zip(at[:5], which[:5]):
                item = int(np.searchsorted(np.cumsum(lengths), position, side="right"))
                problems.append(f"experiment {experiment.name!r}: item {item} contains sequence {sequence} that "
                                f"experiment {self.name!r} removes from the run")
        if problems:
            raise InputError(*problems)
