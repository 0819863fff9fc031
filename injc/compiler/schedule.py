"""Placement of every payload copy at a fixed global token offset: the schedule.

Pure and deterministic: the same requests and seed give the same schedule. Nothing is dropped: every copy is
placed or `LayoutError` says which experiment did not fit and why.

How random and range copies are placed (all steps are vectorized over copies):

1. *Free segments.* Every instance (row) is a segment ``[row*seq_len, (row+1)*seq_len)``, cut around explicit
   insertions, so a segment never crosses an instance boundary and never overlaps an explicit copy.
2. *Assignment.* Copies go in length classes, longest first. Each copy draws a segment inside its step range
   with probability proportional to the segment's free tokens (among segments with room for the class), so
   copies spread uniformly over the tokens of the run. Inside a segment, copies are taken in a random order
   while their total length fits; the rest retry in further rounds. A last exact pass places any stragglers
   one by one, before the next class.
3. *Arrangement.* The copies of a segment are laid out in random order with the segment's slack split into
   uniformly random gaps (sorted uniform draws), which gives non-overlapping, uniformly spread positions.

Cost is O(copies · log(segments)) per round; a run filled to 30% needs a handful of rounds.
"""

from dataclasses import dataclass

import numpy as np

from injc.errors import LayoutError
from injc.shards.layout import Layout

MAX_ROUNDS = 32


@dataclass(frozen=True)
class Request:
    """One experiment's copies to place: item lengths, copies per item, and where they may go."""

    name: str
    lengths: np.ndarray
    """Tokens of each item, as written."""
    copies: np.ndarray
    """Copies of each item (explicit: always 1)."""
    mode: str
    """'random' (whole run), 'range' (start_step ≤ step < end_step) or 'explicit'."""
    start_step: int = 0
    end_step: int | None = None
    offsets: np.ndarray | None = None
    """Explicit mode: the global offset of each item."""
    item_steps: tuple[np.ndarray, np.ndarray] | None = None
    """Per-item [start_step, end_step) ranges, overriding start_step/end_step."""


@dataclass(frozen=True)
class Schedule:
    """Every placed copy, sorted by offset. `experiment` indexes the request list; `item` indexes its items."""

    experiment: np.ndarray
    item: np.ndarray
    repetition: np.ndarray
    offset: np.ndarray
    length: np.ndarray

    def __len__(self) -> int:
        return len(self.offset)


@dataclass
class _Copies:
    """The flat list of random/range copies being placed."""

    request: np.ndarray
    length: np.ndarray
    start_step: np.ndarray
    end_step: np.ndarray
    first_segment: np.ndarray
    end_segment: np.ndarray
    segment: np.ndarray
    spans: dict
    """Request index → slice of its copies (each request's copies are contiguous)."""


def expand_copies(copies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copies per item -> (item index, repetition index) of every copy, in item order."""
    copies = np.asarray(copies, dtype=np.int64)
    item = np.repeat(np.arange(len(copies), dtype=np.int64), copies)
    starts = np.cumsum(copies) - copies
    repetition = np.arange(len(item), dtype=np.int64) - np.repeat(starts, copies)
    return item, repetition


def _check_explicit(layout: Layout, requests: list[Request]) -> tuple[np.ndarray, np.ndarray]:
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


def _random_order_within(segment: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation sorting by segment, in random order within each segment (one int64 sort key, no lexsort)."""
    key = (segment << 31) | rng.integers(0, 1 << 31, size=len(segment))
    return np.argsort(key)


def _running_totals(segment_sorted: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """For copies grouped by segment: the total length of each copy and those before it in its segment."""
    total = np.cumsum(lengths)
    group_start = np.flatnonzero(np.r_[True, segment_sorted[1:] != segment_sorted[:-1]])
    group_size = np.diff(np.r_[group_start, len(segment_sorted)])
    return total - np.repeat(total[group_start] - lengths[group_start], group_size)


def _accept(copies: _Copies, pending: np.ndarray, room: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Among `pending` copies (with a drawn segment), keep, per segment in random order, those that fit `room`."""
    segment = copies.segment[pending]
    order = _random_order_within(segment, rng)
    segment, lengths = segment[order], copies.length[pending][order]
    fits = _running_totals(segment, lengths) <= room[segment]
    accepted = pending[order[fits]]
    np.subtract.at(room, segment[fits], lengths[fits])
    return accepted


def _draw(copies: _Copies, pending: np.ndarray, weight: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw a segment for each pending copy within its range, proportional to `weight`; -1 where all are zero."""
    first, end = copies.first_segment[pending], copies.end_segment[pending]
    if len(weight) and weight.min() == weight.max():  # equal weights (a fresh run): a uniform index, no search
        if weight[0] == 0:
            return np.full(len(pending), -1, dtype=np.int64)
        segment = first + np.floor(rng.random(len(pending)) * (end - first)).astype(np.int64)
        return np.where(end > first, segment, -1)
    cumulative = np.concatenate([[0], np.cumsum(weight)])
    low, high = cumulative[first], cumulative[end]
    target = low + np.floor(rng.random(len(pending)) * (high - low)).astype(np.int64)
    segment = np.searchsorted(cumulative, target, side="right") - 1
    return np.where(high > low, segment, -1)


def _place_class(copies: _Copies, pending: np.ndarray, room: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Assign segments to one length class in vectorized rounds; returns the copies still unplaced."""
    for _ in range(MAX_ROUNDS):
        if len(pending) == 0:
            break
        shortest = copies.length[pending].min()
        copies.segment[pending] = _draw(copies, pending, np.where(room >= shortest, room, 0), rng)
        drawn = pending[copies.segment[pending] >= 0]
        accepted = _accept(copies, drawn, room, rng) if len(drawn) else drawn
        if len(accepted) == 0:
            break
        pending = np.setdiff1d(pending, accepted, assume_unique=True)
    return pending


def _place_all(copies: _Copies, room: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Place length classes (powers of two) longest first, like first-fit-decreasing, so long copies are not
    crowded out of a dense run by short ones. Returns the copies that fit nowhere."""
    classes = np.floor(np.log2(copies.length)).astype(np.int64)
    failed = []
    for length_class in np.unique(classes)[::-1]:
        pending = _place_class(copies, np.flatnonzero(classes == length_class), room, rng)
        failed.append(_place_exactly(copies, pending, room, rng))
    return np.concatenate(failed) if failed else np.zeros(0, dtype=np.int64)


def _place_exactly(copies: _Copies, pending: np.ndarray, room: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Place stragglers one at a time, longest first; returns those that fit nowhere."""
    failed = []
    for index in pending[np.argsort(-copies.length[pending], kind="stable")]:
        low, high, length = copies.first_segment[index], copies.end_segment[index], copies.length[index]
        candidates = low + np.flatnonzero(room[low:high] >= length)
        if len(candidates) == 0:
            failed.append(index)
            continue
        weight = room[candidates].astype(np.float64)
        chosen = candidates[np.searchsorted(np.cumsum(weight), rng.random() * weight.sum(), side="right")]
        copies.segment[index] = chosen
        room[chosen] -= length
    return np.asarray(failed, dtype=np.int64)


def _arrange(copies: _Copies, seg_start: np.ndarray, room: np.ndarray,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Offsets of all copies (random order within each segment, slack split into sorted uniform gaps), and the
    permutation that sorts the copies by offset (segments are in stream order, copies in a segment ascend)."""
    segment = copies.segment
    order = _random_order_within(segment, rng)
    segment_sorted, lengths = segment[order], copies.length[order]
    before_copy = _running_totals(segment_sorted, lengths) - lengths
    span = np.int64(room.max()) + 1
    gaps = np.sort(segment_sorted * span + rng.integers(0, room[segment_sorted] + 1)) % span
    offsets = np.empty(len(segment), dtype=np.int64)
    offsets[order] = seg_start[segment_sorted] + gaps + before_copy
    return offsets, order


def _unplaced_problems(requests, copies, failed, room) -> list[str]:
    """Explain, per experiment, which copies found no room and how much room is left where they may go."""
    problems = []
    for index in np.unique(copies.request[failed]):
        mine = failed[copies.request[failed] == index]
        first = mine[0]
        low, high = copies.first_segment[first], copies.end_segment[first]
        largest = int(room[low:high].max()) if high > low else 0
        problems.append(
            f"experiment {requests[index].name!r}: {len(mine):,} copies ({int(copies.length[mine].sum()):,} tokens, "
            f"longest {int(copies.length[mine].max()):,}) found no room; in steps [{copies.start_step[first]}, "
            f"{copies.end_step[first]}) {int(room[low:high].sum()):,} tokens are still free, the largest free gap "
            f"is {largest:,}"
        )
    return problems


def _capacity_problems(requests, copies, room) -> list[str]:
    """Step ranges asked for more tokens than they have free, before any random placement."""
    problems = []
    free = np.concatenate([[0], np.cumsum(room)])
    span = np.int64(len(room) + 1)
    for index, span_of_copies in copies.spans.items():
        mine = np.arange(span_of_copies.start, span_of_copies.stop)
        first, end = copies.first_segment[span_of_copies], copies.end_segment[span_of_copies]
        if first.min() == first.max() and end.min() == end.max():  # one range for the whole experiment
            keys, examples, need = first[:1] * span + end[:1], mine[:1], [copies.length[mine].sum()]
        else:
            keys, where, inverse = np.unique(first * span + end, return_index=True, return_inverse=True)
            examples = mine[where]
            need = np.bincount(inverse.ravel(), weights=copies.length[mine], minlength=len(keys))
        for key, tokens, example in zip(keys, need, examples):
            low, high = divmod(int(key), int(span))
            available = int(free[high] - free[low])
            if tokens > available:
                problems.append(
                    f"experiment {requests[index].name!r} needs {int(tokens):,} tokens in steps "
                    f"[{copies.start_step[example]}, {copies.end_step[example]}) but only {available:,} are free "
                    f"there"
                )
    return problems[:10]


def compile_schedule(layout: Layout, requests: list[Request], seed: int) -> Schedule:
    """Place every copy of every request; deterministic in `seed`. Raises LayoutError if anything does not fit."""
    rng = np.random.default_rng(seed)
    blocked_start, blocked_end = _check_explicit(layout, requests)
    seg_start, room = free_segments(layout, blocked_start, blocked_end)

    explicit = [[] for _ in range(5)]
    parts = {key: [] for key in ("request", "length", "start_step", "end_step", "first", "end", "item", "repetition")}
    spans, copied = {}, 0
    for index, request in enumerate(requests):
        lengths = np.asarray(request.lengths, dtype=np.int64)
        item, repetition = expand_copies(request.copies)
        if len(item) == 0:
            continue
        if request.mode == "explicit":
            for column, values in zip(explicit, (np.full(len(item), index), item, repetition,
                                               np.asarray(request.offsets, dtype=np.int64)[item], lengths[item])):
                column.append(values)
            continue
        if request.item_steps is not None:
            item_start, item_end = (np.asarray(a, dtype=np.int64) for a in request.item_steps)
        else:  # one range: look it up once
            item_start = np.array([request.start_step])
            item_end = np.array([layout.steps if request.end_step is None else request.end_step])
        ranges = [item_start, item_end, np.searchsorted(seg_start, item_start * layout.tokens_per_step),
                  np.searchsorted(seg_start, item_end * layout.tokens_per_step)]
        which = item if request.item_steps is not None else np.zeros(len(item), dtype=np.int64)
        for key, values in zip(("start_step", "end_step", "first", "end"), ranges):
            parts[key].append(values[which])
        parts["request"].append(np.full(len(item), index))
        parts["length"].append(lengths[item])
        parts["item"].append(item)
        parts["repetition"].append(repetition)
        spans[index] = slice(copied, copied + len(item))
        copied += len(item)

    if parts["request"]:
        joined = {key: (value[0] if len(value) == 1 else np.concatenate(value)).astype(np.int64, copy=False)
                  for key, value in parts.items()}
        copies = _Copies(joined["request"], joined["length"], joined["start_step"], joined["end_step"],
                         joined["first"], joined["end"], np.full(len(joined["length"]), -1, dtype=np.int64), spans)
        capacity_problems = _capacity_problems(requests, copies, room)
        if capacity_problems:
            raise LayoutError(*capacity_problems)
        failed = _place_all(copies, room, rng)
        if len(failed):
            raise LayoutError(*_unplaced_problems(requests, copies, failed, room))
        offsets, order = _arrange(copies, seg_start, room, rng)
        columns = [column[order] for column in (copies.request, joined["item"], joined["repetition"], offsets,
                                                copies.length)]
    else:
        columns = [np.zeros(0, dtype=np.int64) for _ in range(5)]
    if explicit[0]:
        pinned = [np.concatenate(c).astype(np.int64, copy=False) for c in explicit]
        by_offset = np.argsort(pinned[3], kind="stable")
        pinned = [column[by_offset] for column in pinned]
        slots = np.searchsorted(columns[3], pinned[3])  # merge two offset-sorted lists
        columns = [np.insert(column, slots, values) for column, values in zip(columns, pinned)]
    return Schedule(*columns)
