"""Placement of every payload copy at a fixed global token offset: the schedule.

Pure and deterministic: the same requests and seed give the same schedule. Nothing is dropped: every copy is
placed or `LayoutError` says which experiment did not fit and why.

The schedule is *prefix-stable*: what is placed in step s depends only on what was asked for at steps ≤ s. So a
plan changed at or after step k (a window's count, a range that starts at k) gives the same placements before k,
which is what lets a build grow window by window (staged builds, `injc run`). Three rules make it so:

1. *Apportionment by capacity.* Each copy is given a step before anything is placed, from its own experiment
   only: the copies of one range (the whole run, a `range`, a window) are put in a random order drawn from the
   seed, the experiment's name and the range, and spread evenly over the range's steps (systematic sampling with
   a random start), since every step has the same capacity. Copies therefore spread uniformly, and no
   experiment's steps depend on another's.
2. *Counter-based randomness.* Every random draw is a hash of the copy's key and what the draw is for, never a
   shared generator's next number, so a draw cannot shift because another step has more or fewer copies.
3. *Overflow moves forward.* A copy that finds no room in its step moves to the next step of its range and is
   placed there after that step's own copies. A step's contents thus depend on earlier steps only. A copy that
   runs past the end of its range is placed wherever its range still has room (counted as `backfilled`; only
   such a copy can make an earlier step depend on a later one, and at the fill of real plans there is none).
   Within a step, copies whose range ends there are placed before those that could still move on.

Inside a step, copies go in length classes, longest first: each draws a free segment of its step (a row cut
around explicit insertions) with probability proportional to the segment's free tokens; a segment takes its
copies in random order while they fit; the rest draw again; a last exact pass places stragglers one by one. The
copies of a segment are then laid out in random order with the slack split into uniformly random gaps.
Everything is vectorized over copies; a run filled to 30% needs a handful of rounds.
"""

import hashlib
from dataclasses import dataclass

import numpy as np

from injc.errors import LayoutError
from injc.shards.layout import Layout

MAX_ROUNDS = 32
ROUND, ACCEPT, EXACT, ORDER, GAP = range(5)
"""What a draw is for: part of its hash, so that draws for different purposes are independent."""


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
    backfilled: int = 0
    """Copies that found no room before the end of their range and were placed earlier in it (see rule 3)."""

    def __len__(self) -> int:
        return len(self.offset)


@dataclass
class _Copies:
    """The flat list of random/range copies being placed. Per copy only what differs between copies is stored;
    the (experiment, step range) of each copy is an int32 index into the small `ranges` table."""

    range_id: np.ndarray
    length: np.ndarray
    key: np.ndarray
    """uint64 hash of (seed, experiment name, item, repetition): the source of every draw for this copy."""
    step: np.ndarray
    """The step each copy is being placed in (rule 1, then moved on by rule 3)."""
    segment: np.ndarray
    spans: dict
    """Request index → slice of its copies (each request's copies are contiguous)."""
    step_segments: np.ndarray
    """Index of each step's first segment (and one past the last): a copy draws from its step's segments."""
    ranges: dict
    """Per range: request, start_step, end_step, and first/end segment of its steps (arrays)."""
    backfilling: bool = False
    """Set for the last pass (rule 3): copies then draw from their whole range's segments."""

    def of_range(self, field: str, index) -> np.ndarray:
        """A range field (request, start_step, end_step, first, end) for the copies at `index`."""
        return self.ranges[field][self.range_id[index]]

    def bounds(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The segments [low, high) each copy may draw from: its step's, or its range's when backfilling."""
        if self.backfilling:
            return self.of_range("first", index), self.of_range("end", index)
        step = self.step[index]
        return self.step_segments[step], self.step_segments[step + 1]


def mix(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a bijective, well-mixed hash of uint64 values (a new array; updated in place)."""
    values = np.array(values, dtype=np.uint64)
    with np.errstate(over="ignore"):
        values ^= values >> np.uint64(30)
        values *= np.uint64(0xBF58476D1CE4E5B9)
        values ^= values >> np.uint64(27)
        values *= np.uint64(0x94D049BB133111EB)
        values ^= values >> np.uint64(31)
    return values


def draw_bits(keys: np.ndarray, *purpose: int) -> np.ndarray:
    """63 random bits per key for one purpose (a tuple of small ints), as int64."""
    salt = np.uint64(0)
    for part in purpose:
        salt = mix(np.uint64(salt) ^ np.uint64(part + 1))
    bits = mix(keys ^ salt)
    bits >>= np.uint64(1)
    return bits.view(np.int64)


def draw_uniform(keys: np.ndarray, *purpose: int) -> np.ndarray:
    """A uniform float in [0, 1) per key for one purpose."""
    return (draw_bits(keys, *purpose) >> 10).astype(np.float64) * 2.0 ** -53


def experiment_key(seed: int, name: str) -> np.uint64:
    """The hash every copy key of an experiment starts from: its name, not its place in the plan."""
    return np.uint64(int.from_bytes(hashlib.blake2b(f"{seed}\0{name}".encode(), digest_size=8).digest(), "little"))


def copy_keys(seed: int, name: str, item: np.ndarray, repetition: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        inner = mix(item.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + repetition.astype(np.uint64))
        return mix(inner ^ experiment_key(seed, name))


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


def _random_order_within(segment: np.ndarray, keys: np.ndarray, *purpose: int) -> np.ndarray:
    """A permutation sorting by segment, in a hashed random order within each segment (one int64 sort key)."""
    return np.argsort((segment << 32) | (draw_bits(keys, *purpose) >> 31))


def _running_totals(segment_sorted: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """For copies grouped by segment: the total length of each copy and those before it in its segment."""
    total = np.cumsum(lengths)
    group_start = np.flatnonzero(np.r_[True, segment_sorted[1:] != segment_sorted[:-1]])
    group_size = np.diff(np.r_[group_start, len(segment_sorted)])
    return total - np.repeat(total[group_start] - lengths[group_start], group_size)


def _apportion(copies: _Copies, requests: list[Request], seed: int) -> None:
    """Rule 1: give every copy a step. The copies of one (experiment, range) are put in a random order, from a
    generator seeded by the seed, the experiment's name and the range only, and spread evenly over the range's
    steps from a random start: step = start + ⌊(rank + u) · steps / copies⌋."""
    for index, span in copies.spans.items():
        start, end = copies.of_range("start_step", span), copies.of_range("end_step", span)
        if requests[index].item_steps is None:
            groups = [np.arange(len(start))]
        else:
            order = np.lexsort((end, start))
            cuts = np.flatnonzero((start[order][1:] != start[order][:-1]) | (end[order][1:] != end[order][:-1])) + 1
            groups = np.split(order, cuts)
        name_key = int(experiment_key(seed, requests[index].name))
        for members in groups:
            first, last = int(start[members[0]]), int(end[members[0]])
            rng = np.random.default_rng([name_key, first, last])
            rank = rng.permutation(len(members))
            steps = np.floor((rank + rng.random()) * ((last - first) / len(members))).astype(np.int64)
            copies.step[span.start + members] = np.minimum(first + steps, last - 1)


def _accept(copies: _Copies, pending: np.ndarray, room: np.ndarray, *purpose: int) -> np.ndarray:
    """Among `pending` copies (with a drawn segment), keep, per segment in random order, those that fit `room`."""
    segment = copies.segment[pending]
    order = _random_order_within(segment, copies.key[pending], ACCEPT, *purpose)
    segment, lengths = segment[order], copies.length[pending][order]
    fits = _running_totals(segment, lengths) <= room[segment]
    accepted = pending[order[fits]]
    np.subtract.at(room, segment[fits], lengths[fits])
    return accepted


def _draw(copies: _Copies, pending: np.ndarray, weight: np.ndarray, *purpose: int) -> np.ndarray:
    """Draw a segment for each pending copy among those it may use, proportional to `weight`; -1 where all are
    zero.

    Where a copy's step has equal weights (most steps of a fresh run) the draw takes a shortcut that gives exactly
    the searched result: with weight w over n segments, the segment is lo + ⌊u·n·w⌋ // w (the same floating-point
    product as the search's target). Only the other copies search the cumulative weights, which is the slow part
    at scale (random reads over every segment)."""
    low_segment, high_segment = copies.bounds(pending)
    draw = draw_uniform(copies.key[pending], ROUND, *purpose)
    segment = np.full(len(pending), -1, dtype=np.int64)
    searched = high_segment > low_segment
    if not copies.backfilling and len(weight):
        starts = np.minimum(copies.step_segments[:-1], len(weight) - 1)
        lowest, highest = np.minimum.reduceat(weight, starts), np.maximum.reduceat(weight, starts)
        step = copies.step[pending]
        equal = lowest[step] == highest[step]
        fast = np.flatnonzero(equal)
        width, low, high = lowest[step[fast]], low_segment[fast], high_segment[fast]
        usable = (width > 0) & (high > low)
        fast, width, low, high = fast[usable], width[usable], low[usable], high[usable]
        segment[fast] = low + np.floor(draw[fast] * ((high - low) * width)).astype(np.int64) // width
        searched &= ~equal
    if searched.any():
        cumulative = np.concatenate([[0], np.cumsum(weight)])
        low, high = cumulative[low_segment[searched]], cumulative[high_segment[searched]]
        target = low + np.floor(draw[searched] * (high - low)).astype(np.int64)
        by_target = np.argsort(target)  # searching sorted targets reads the cumulative weights in order: 3× faster
        found = np.empty_like(target)
        found[by_target] = np.searchsorted(cumulative, target[by_target], side="right") - 1
        segment[searched] = np.where(high > low, found, -1)
    return segment


def _place_class(copies: _Copies, pending: np.ndarray, room: np.ndarray, shortest: int, *purpose: int) -> np.ndarray:
    """Assign segments to one length class (lengths ≥ `shortest`) in vectorized rounds; returns those unplaced."""
    for round_ in range(MAX_ROUNDS):
        if len(pending) == 0:
            break
        copies.segment[pending] = _draw(copies, pending, np.where(room >= shortest, room, 0), *purpose, round_)
        drawn = pending[copies.segment[pending] >= 0]
        accepted = _accept(copies, drawn, room, *purpose, round_) if len(drawn) else drawn
        if len(accepted) == 0:
            break
        pending = np.setdiff1d(pending, accepted, assume_unique=True)
    return pending


def _place_all(copies: _Copies, pending: np.ndarray, room: np.ndarray, pass_: int) -> np.ndarray:
    """Place the copies whose range ends at this step first (they cannot move on), then the rest; each group in
    length classes (powers of two), longest first, like first-fit-decreasing, so long copies are not crowded out
    of a dense step by short ones. Returns the copies that fit nowhere in their step."""
    last_chance = copies.step[pending] == copies.of_range("end_step", pending) - 1
    failed = []
    for group, members in enumerate((pending[last_chance], pending[~last_chance])):
        classes = np.floor(np.log2(copies.length[members])).astype(np.int64)
        for length_class in np.unique(classes)[::-1]:
            purpose = (pass_, group, int(length_class))
            left = _place_class(copies, members[classes == length_class], room, 1 << int(length_class), *purpose)
            failed.append(_place_exactly(copies, left, room, EXACT, *purpose))
    return np.concatenate(failed) if failed else np.zeros(0, dtype=np.int64)


def _place_exactly(copies: _Copies, pending: np.ndarray, room: np.ndarray, *purpose: int) -> np.ndarray:
    """Place stragglers one at a time, longest first (ties by key); returns those that fit nowhere."""
    failed = []
    pending = pending[np.lexsort((copies.key[pending], -copies.length[pending]))]
    draws = draw_uniform(copies.key[pending], *purpose)
    lows, highs = copies.bounds(pending)
    for index, draw, low, high in zip(pending.tolist(), draws.tolist(), lows.tolist(), highs.tolist()):
        length = copies.length[index]
        candidates = low + np.flatnonzero(room[low:high] >= length)
        if len(candidates) == 0:
            failed.append(index)
            continue
        weight = room[candidates]
        chosen = candidates[np.searchsorted(np.cumsum(weight), draw * weight.sum(), side="right")]
        copies.segment[index] = chosen
        room[chosen] -= length
    return np.asarray(failed, dtype=np.int64)


def _place(copies: _Copies, room: np.ndarray) -> tuple[np.ndarray, int]:
    """Rules 2 and 3: place every copy in its step; move what does not fit one step on, pass after pass; place
    what runs past its range anywhere in the range. Returns (copies placed nowhere, copies backfilled)."""
    pending, overrun, pass_ = np.arange(len(copies.length)), [], 0
    while len(pending):
        failed = _place_all(copies, pending, room, pass_)
        copies.step[failed] += 1
        ended = copies.step[failed] >= copies.of_range("end_step", failed)
        overrun.append(failed[ended])
        pending, pass_ = failed[~ended], pass_ + 1
    overrun = np.concatenate(overrun) if overrun else np.zeros(0, dtype=np.int64)
    if len(overrun) == 0:
        return overrun, 0
    copies.backfilling = True
    failed = _place_exactly(copies, overrun, room, EXACT, -1)
    return failed, len(overrun) - len(failed)


def _arrange(copies: _Copies, seg_start: np.ndarray, room: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets of all copies (random order within each segment, slack split into sorted uniform gaps), and the
    permutation that sorts the copies by offset (segments are in stream order, copies in a segment ascend)."""
    segment = copies.segment
    order = _random_order_within(segment, copies.key, ORDER)
    segment_sorted, lengths = segment[order], copies.length[order]
    before_copy = _running_totals(segment_sorted, lengths)
    before_copy -= lengths
    del lengths
    # Sorted uniform gaps without a sort: the running sums of m exponentials over the sum of m + 1 are the
    # order statistics of m uniforms; the (m+1)-th draw is keyed by the segment's first token.
    spacing = draw_uniform(copies.key[order], GAP)
    np.log1p(np.negative(spacing, out=spacing), out=spacing)
    running = _running_totals(segment_sorted, np.negative(spacing, out=spacing))
    del spacing
    last = np.r_[segment_sorted[1:] != segment_sorted[:-1], True]
    closing = -np.log1p(-draw_uniform(seg_start[segment_sorted[last]].astype(np.uint64), GAP))
    running /= np.repeat(running[last] + closing, np.diff(np.r_[0, np.flatnonzero(last) + 1]))
    del last, closing
    slack = room[segment_sorted]
    running *= slack + 1
    gaps = np.minimum(running.astype(np.int64), slack)
    del running, slack
    offsets = np.empty(len(segment), dtype=np.int64)
    offsets[order] = seg_start[segment_sorted] + gaps + before_copy
    return offsets, order


def _unplaced_problems(requests, copies, failed, room) -> list[str]:
    """Explain, per experiment, which copies found no room and how much room is left where they may go."""
    problems = []
    owners = copies.of_range("request", failed)
    for index in np.unique(owners):
        mine = failed[owners == index]
        rid = copies.range_id[mine[0]]
        low, high = copies.ranges["first"][rid], copies.ranges["end"][rid]
        largest = int(room[low:high].max()) if high > low else 0
        problems.append(
            f"experiment {requests[index].name!r}: {len(mine):,} copies ({int(copies.length[mine].sum()):,} tokens, "
            f"longest {int(copies.length[mine].max()):,}) found no room; in steps [{copies.ranges['start_step'][rid]}, "
            f"{copies.ranges['end_step'][rid]}) {int(room[low:high].sum()):,} tokens are still free, the largest free "
            f"gap is {largest:,}"
        )
    return problems


def _capacity_problems(requests, copies, room) -> list[str]:
    """Step ranges asked for more tokens than they have free, before any random placement."""
    free = np.concatenate([[0], np.cumsum(room)])
    ranges = copies.ranges
    need = np.bincount(copies.range_id, weights=copies.length, minlength=len(ranges["request"]))
    available = free[ranges["end"]] - free[ranges["first"]]
    problems = []
    for rid in np.flatnonzero(need > available)[:10]:
        problems.append(
            f"experiment {requests[ranges['request'][rid]].name!r} needs {int(need[rid]):,} tokens in steps "
            f"[{ranges['start_step'][rid]}, {ranges['end_step'][rid]}) but only {int(available[rid]):,} are free "
            f"there"
        )
    return problems


def compile_schedule(layout: Layout, requests: list[Request], seed: int) -> Schedule:
    """Place every copy of every request; deterministic in `seed`. Raises LayoutError if anything does not fit."""
    blocked_start, blocked_end = _check_explicit(layout, requests)
    seg_start, room = free_segments(layout, blocked_start, blocked_end)

    explicit = [[] for _ in range(5)]
    parts = {key: [] for key in ("range_id", "length", "item", "repetition", "key")}
    ranges = {key: [] for key in ("request", "start_step", "end_step")}
    spans, copied, range_count = {}, 0, 0
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
        if request.item_steps is not None:  # a range per item: one table row per distinct range
            pairs = np.stack([np.asarray(a, dtype=np.int64) for a in request.item_steps], axis=1)
            unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
            range_of_copy = inverse.ravel()[item]
        else:
            end = layout.steps if request.end_step is None else request.end_step
            unique, range_of_copy = np.array([[request.start_step, end]]), np.zeros(len(item), dtype=np.int64)
        ranges["request"].append(np.full(len(unique), index))
        ranges["start_step"].append(unique[:, 0])
        ranges["end_step"].append(unique[:, 1])
        parts["range_id"].append((range_of_copy + range_count).astype(np.int32))
        range_count += len(unique)
        parts["length"].append(lengths[item])
        parts["item"].append(item)
        parts["repetition"].append(repetition)
        parts["key"].append(copy_keys(seed, request.name, item, repetition))
        spans[index] = slice(copied, copied + len(item))
        copied += len(item)

    if parts["length"]:
        joined = {key: value[0] if len(value) == 1 else np.concatenate(value) for key, value in parts.items()}
        table = {key: np.concatenate(value).astype(np.int64) for key, value in ranges.items()}
        table["first"] = np.searchsorted(seg_start, table["start_step"] * layout.tokens_per_step)
        table["end"] = np.searchsorted(seg_start, table["end_step"] * layout.tokens_per_step)
        count = len(joined["length"])
        step_segments = np.searchsorted(seg_start, np.arange(layout.steps + 1) * layout.tokens_per_step)
        copies = _Copies(joined["range_id"], joined["length"].astype(np.int64, copy=False), joined["key"],
                         np.zeros(count, dtype=np.int64), np.full(count, -1, dtype=np.int64), spans, step_segments,
                         table)
        capacity_problems = _capacity_problems(requests, copies, room)
        if capacity_problems:
            raise LayoutError(*capacity_problems)
        _apportion(copies, requests, seed)
        failed, backfilled = _place(copies, room)
        if len(failed):
            raise LayoutError(*_unplaced_problems(requests, copies, failed, room))
        offsets, order = _arrange(copies, seg_start, room)
        columns = [copies.of_range("request", order), joined["item"][order], joined["repetition"][order],
                   offsets[order], copies.length[order]]
    else:
        columns, backfilled = [np.zeros(0, dtype=np.int64) for _ in range(5)], 0
    if explicit[0]:
        pinned = [np.concatenate(c).astype(np.int64, copy=False) for c in explicit]
        by_offset = np.argsort(pinned[3], kind="stable")
        pinned = [column[by_offset] for column in pinned]
        slots = np.searchsorted(columns[3], pinned[3])  # merge two offset-sorted lists
        columns = [np.insert(column, slots, values) for column, values in zip(columns, pinned)]
    return Schedule(*columns, backfilled=backfilled)
