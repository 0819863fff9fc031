"""Explicit insertions in the schedule: each pinned at the offset its plan gives. They are checked (inside the run,
never overlapping), cut out of the rows so the rest is placed in the free segments around them, and merged back
into the schedule's columns at their offsets.
"""

import numpy as np

from injc.errors import LayoutError
from injc.shards.layout import Layout

COLUMN_TYPES = (np.int32, np.int64, np.int32, np.int64, np.int32)
"""The Schedule's columns (experiment, item, repetition, offset, length), in order."""


def check_explicit(layout: Layout, requests: list) -> tuple[np.ndarray, np.ndarray]:
    """Gather explicit intervals; refuse any outside the run or overlapping another."""
    problems, starts, ends, owners = [], [], [], []
    for index, request in enumerate(requests):
        if request.mode != "explicit":
            continue
        offsets = np.asarray(request.offsets, dtype=np.int64)
        lengths = np.asarray(request.lengths, dtype=np.int64)
        outside = np.flatnonzero((offsets < 0) | (offsets + lengths > layout.total_tokens))
        for item in outside[:5]:
            problems.append(
                f"experiment {request.name!r}: item {item} at offset {offsets[item]:,} (length {lengths[item]}) "
                f"falls outside the run of {layout.total_tokens:,} tokens"
            )
        starts.append(offsets)
        ends.append(offsets + lengths)
        owners.append(np.stack([np.full(len(offsets), index), np.arange(len(offsets))], axis=1))
    if problems:
        raise LayoutError(*problems)
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    start, end, owner = np.concatenate(starts), np.concatenate(ends), np.concatenate(owners)
    order = np.argsort(start, kind="stable")
    start, end, owner = start[order], end[order], owner[order]
    clash = np.flatnonzero(start[1:] < end[:-1])
    for i in clash[:5]:
        (a_req, a_item), (b_req, b_item) = owner[i], owner[i + 1]
        problems.append(
            f"explicit insertions overlap: experiment {requests[a_req].name!r} item {a_item} "
            f"[{start[i]:,}, {end[i]:,}) and experiment {requests[b_req].name!r} item {b_item} "
            f"[{start[i + 1]:,}, {end[i + 1]:,})"
        )
    if len(clash) > 5:
        problems.append(f"... and {len(clash) - 5} more overlapping explicit insertions")
    if problems:
        raise LayoutError(*problems)
    return start, end


def free_segments(layout: Layout, blocked_start: np.ndarray, blocked_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and capacity of the free segments: rows minus the sorted, disjoint blocked intervals."""
    seq_len = layout.seq_len
    if len(blocked_start) == 0:
        start = np.arange(layout.total_rows, dtype=np.int64) * seq_len
        return start, np.full(layout.total_rows, seq_len, dtype=np.int64)
    gap_start = np.concatenate([[0], blocked_end])
    gap_end = np.concatenate([blocked_start, [layout.total_tokens]])
    keep = gap_end > gap_start
    gap_start, gap_end = gap_start[keep], gap_end[keep]
    first_row, last_row = gap_start // seq_len, (gap_end - 1) // seq_len
    pieces = last_row - first_row + 1
    gap = np.repeat(np.arange(len(gap_start)), pieces)
    row = np.repeat(first_row, pieces) + (np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces))
    start = np.maximum(row * seq_len, gap_start[gap])
    end = np.minimum((row + 1) * seq_len, gap_end[gap])
    return start, end - start


def pinned_columns(requests: list) -> list[np.ndarray]:
    """The explicit copies as Schedule columns, sorted by offset."""
    parts = []
    for index, request in enumerate(requests):
        if request.mode == "explicit" and len(request.lengths):
            count = len(request.lengths)
            parts.append((np.full(count, index), np.arange(count), np.zeros(count),
                          np.asarray(request.offsets), np.asarray(request.lengths)))
    columns = [np.concatenate(c).astype(t) if parts else np.zeros(0, dtype=t)
               for c, t in zip(zip(*parts) if parts else [()] * 5, COLUMN_TYPES)]
    by_offset = np.argsort(columns[3], kind="stable")
    return [column[by_offset] for column in columns]


def merge_pinned(columns: list[np.ndarray], count: int, pinned: list[np.ndarray]) -> None:
    """Move the first `count` rows (sorted by offset) up to make room for the pinned rows at their places, in the
    columns' own memory (they were made long enough for both)."""
    if len(pinned[3]) == 0:
        return
    position = np.arange(count) + np.searchsorted(pinned[3], columns[3][:count])
    for_pinned = np.ones(len(columns[3]), dtype=bool)
    for_pinned[position] = False
    for column, values in zip(columns, pinned):
        column[position] = column[:count].copy()
        column[for_pinned] = values
