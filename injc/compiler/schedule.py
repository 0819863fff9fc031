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
copies in random order while they fit; the rest draw again until a round places nothing more in their step; a
last exact pass places stragglers one by one. The copies of a segment are then laid out in random order with the
slack split into uniformly random gaps. Everything is vectorized over copies.

Since a step depends only on earlier ones, the run is placed *window by window* (consecutive steps holding about
`WINDOW_COPIES` copies): a window's copies are made from their ranges' random orders when it is reached, and what
overflows its last step is carried into the next. Working memory is thus that of one window however long the run,
and the schedule is the same for any window size (tested).
"""

import hashlib
from dataclasses import dataclass

import numpy as np

from injc.errors import LayoutError
from injc.shards.layout import Layout

SCHEDULE_VERSION = 2
"""Names the placement rules: the same plan and seed give the same schedule within a version (docs/format.md)."""
MAX_ROUNDS = 32
WINDOW_COPIES = 1 << 20
"""About how many copies one window of steps holds while it is placed."""
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
    """Every placed copy, sorted by offset. `experiment` indexes the request list; `item` indexes its items.
    Columns are as narrow as their values allow (experiment, repetition and length int32; item, offset int64)."""

    experiment: np.ndarray
    item: np.ndarray
    repetition: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    backfilled: int = 0
    """Copies that found no room before the end of their range and were placed earlier in it (see rule 3)."""

    def __len__(self) -> int:
        return len(self.offset)


COLUMN_TYPES = (np.int32, np.int64, np.int32, np.int64, np.int32)
"""The Schedule's columns, in order."""


@dataclass
class _Ranges:
    """The groups of copies apportioned together (rule 1): one per (experiment, step range). A range keeps its
    copies only as ids (positions in the request's list of copies) in their random rank order; a window's copies
    are made from them when it is placed."""

    request: np.ndarray
    start_step: np.ndarray
    end_step: np.ndarray
    first: np.ndarray
    """The first segment of the range's steps (and `end`, one past its last)."""
    end: np.ndarray
    need: np.ndarray
    """Tokens the range's copies take."""
    ids: list
    """Per range: its copies' ids in rank order."""
    phase: np.ndarray
    """Per range: the random start u of its systematic sample."""
    handed: np.ndarray
    """Per range: ranks already given to a window."""

    def steps_of(self, rid: int, ranks: np.ndarray) -> np.ndarray:
        """Rule 1's step of each rank: start + ⌊(rank + u) · steps / copies⌋."""
        first, last, count = int(self.start_step[rid]), int(self.end_step[rid]), len(self.ids[rid])
        steps = np.floor((ranks + self.phase[rid]) * ((last - first) / count)).astype(np.int64)
        return np.minimum(first + steps, last - 1)

    def ranks_before(self, rid: int, step: int) -> int:
        """How many of the range's ranks fall before `step` (their steps never decrease with rank)."""
        low, high = int(self.handed[rid]), len(self.ids[rid])
        while low < high:
            middle = (low + high) // 2
            if self.steps_of(rid, np.array([middle]))[0] < step:
                low = middle + 1
            else:
                high = middle
        return low


@dataclass
class _Copies:
    """The copies being placed in one view of the run (a window of steps, or the whole run when backfilling).
    Segments are numbered from the view's first, so `room` is the matching slice of the run's."""

    range_id: np.ndarray
    item: np.ndarray
    repetition: np.ndarray
    length: np.ndarray
    key: np.ndarray
    """uint64 hash of (seed, experiment name, item, repetition): the source of every draw for this copy."""
    step: np.ndarray
    """The step each copy is being placed in (rule 1, then moved on by rule 3)."""
    passes: np.ndarray
    """The pass each copy is placed in next: 0, or how often a copy carried in from the last window failed."""
    segment: np.ndarray
    ranges: _Ranges
    first_step: int
    step_segments: np.ndarray
    """Index of each step's first segment in the view (and one past the last): a copy draws from its step's."""
    backfilling: bool = False
    """Set for the last pass (rule 3): copies then draw from their whole range's segments."""

    def of_range(self, field: str, index) -> np.ndarray:
        """A range field (request, start_step, end_step, first, end) for the copies at `index`."""
        return getattr(self.ranges, field)[self.range_id[index]]

    def bounds(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The segments [low, high) each copy may draw from: its step's, or its range's when backfilling."""
        if self.backfilling:
            return self.of_range("first", index), self.of_range("end", index)
        step = self.step[index] - self.first_step
        return self.step_segments[step], self.step_segments[step + 1]

    def taken(self, index: np.ndarray) -> "_Copies":
        """The copies at `index`, as a list of their own (for carrying on to the next window)."""
        return _Copies(*(getattr(self, name)[index] for name in _PER_COPY), self.ranges, self.first_step,
                       self.step_segments, self.backfilling)


_PER_COPY = ("range_id", "item", "repetition", "length", "key", "step", "passes", "segment")
"""The fields of _Copies with one value per copy, in order (the rest describe the view)."""


def _joined(parts: list[_Copies], ranges: _Ranges, first_step: int, step_segments: np.ndarray,
            backfilling: bool = False) -> _Copies:
    columns = [np.concatenate([getattr(part, name) for part in parts]) for name in _PER_COPY]
    return _Copies(*columns, ranges, first_step, step_segments, backfilling)


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
    """A permutation sorting by segment, in a hashed random order within each segment.

    One int64 sort key (segment, 32 hash bits) is fast; where two copies of a segment share those bits the order
    is made again from all 63 bits, so that it never depends on the order the copies came in."""
    bits = draw_bits(keys, *purpose)
    sort_key = (segment << 32) | (bits >> 31)
    order = np.argsort(sort_key)
    ordered = sort_key[order]
    if (ordered[1:] == ordered[:-1]).any():
        return np.lexsort((bits, segment))
    return order


def _running_totals(segment_sorted: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """For copies grouped by segment: the total length of each copy and those before it in its segment."""
    total = np.cumsum(lengths)
    group_start = np.flatnonzero(np.r_[True, segment_sorted[1:] != segment_sorted[:-1]])
    group_size = np.diff(np.r_[group_start, len(segment_sorted)])
    return total - np.repeat(total[group_start] - lengths[group_start], group_size)


def _copy_ids_to_items(copies: np.ndarray) -> np.ndarray | None:
    """What turns a request's copy ids into (item, repetition): the id of each item's first copy, or None when
    every item has one copy (then the id is the item)."""
    copies = np.asarray(copies, dtype=np.int64)
    return None if (copies == 1).all() else np.cumsum(copies) - copies


def _items_of(ids: np.ndarray, firsts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    ids = ids.astype(np.int64)
    if firsts is None:
        return ids, np.zeros(len(ids), dtype=np.int64)
    item = np.searchsorted(firsts, ids, side="right") - 1  # an item without copies shares the next one's first id
    return item, ids - firsts[item]


def _make_ranges(layout: Layout, requests: list[Request], seed: int, step_segments: np.ndarray) -> _Ranges:
    """Rule 1 for every random and range request: its copies grouped by step range, each group in a random rank
    order from a generator seeded by the seed, the experiment's name and the range only."""
    columns = {key: [] for key in ("request", "start_step", "end_step", "need", "phase")}
    ids = []
    for index, request in enumerate(requests):
        copies = np.asarray(request.copies, dtype=np.int64)
        if request.mode == "explicit" or copies.sum() == 0:
            continue
        tokens = np.asarray(request.lengths, dtype=np.int64) * copies
        if request.item_steps is None:  # one range; its members are all copies, in order
            end = layout.steps if request.end_step is None else request.end_step
            groups = [(request.start_step, end, None, int(tokens.sum()))]
        else:  # a range per item: one group per distinct range, members in copy order
            pairs = np.stack([np.asarray(a, dtype=np.int64) for a in request.item_steps], axis=1)
            unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
            inverse = inverse.ravel()
            of_copy = np.repeat(inverse, copies)
            order = np.argsort(of_copy, kind="stable")
            members = np.split(order, np.cumsum(np.bincount(of_copy, minlength=len(unique)))[:-1])
            need = np.bincount(inverse, weights=tokens, minlength=len(unique))
            groups = [(start, end, member, int(n)) for (start, end), member, n in zip(unique, members, need)
                      if len(member)]
        name_key = int(experiment_key(seed, request.name))
        for start, end, members, need in groups:
            count = int(copies.sum()) if members is None else len(members)
            rng = np.random.default_rng([name_key, int(start), int(end)])
            rank = rng.permutation(count)
            by_rank = np.empty(count, dtype=np.int32 if count < 2**31 else np.int64)
            by_rank[rank] = np.arange(count) if members is None else members
            del rank
            ids.append(by_rank)
            for key, value in zip(columns, (index, start, end, need, rng.random())):
                columns[key].append(value)
    table = {key: np.array(value, dtype=np.float64 if key == "phase" else np.int64) for key, value in columns.items()}
    return _Ranges(table["request"], table["start_step"], table["end_step"], step_segments[table["start_step"]],
                   step_segments[table["end_step"]], table["need"], ids, table["phase"],
                   np.zeros(len(ids), dtype=np.int64))


def _window_copies(ranges: _Ranges, requests: list[Request], decoders: list, seed: int, first_step: int,
                   end_step: int, step_segments: np.ndarray) -> _Copies:
    """The copies rule 1 gives to steps [first_step, end_step): the next ranks of every range that reaches them."""
    parts = []
    for rid in np.flatnonzero((ranges.start_step < end_step) & (ranges.handed < [len(i) for i in ranges.ids])):
        low, high = int(ranges.handed[rid]), ranges.ranks_before(rid, end_step)
        if high == low:
            continue
        ranges.handed[rid] = high
        request = requests[ranges.request[rid]]
        item, repetition = _items_of(ranges.ids[rid][low:high], decoders[ranges.request[rid]])
        length = np.asarray(request.lengths, dtype=np.int64)[item]
        parts.append((np.full(high - low, rid, dtype=np.int32), item, repetition, length,
                      copy_keys(seed, request.name, item, repetition), ranges.steps_of(rid, np.arange(low, high))))
    columns = [np.concatenate(c) for c in zip(*parts)] if parts else [np.zeros(0, t) for t in
                                                                      (np.int32, *[np.int64] * 3, np.uint64, np.int64)]
    count = len(columns[0])
    return _Copies(*columns, np.zeros(count, dtype=np.int64), np.full(count, -1, dtype=np.int64), ranges, first_step,
                   step_segments)


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
    product as the search's target). Only the other copies search the cumulative weights."""
    low_segment, high_segment = copies.bounds(pending)
    draw = draw_uniform(copies.key[pending], ROUND, *purpose)
    segment = np.full(len(pending), -1, dtype=np.int64)
    searched = high_segment > low_segment
    if not copies.backfilling and len(weight):
        starts = np.minimum(copies.step_segments[:-1], len(weight) - 1)
        lowest, highest = np.minimum.reduceat(weight, starts), np.maximum.reduceat(weight, starts)
        step = copies.step[pending] - copies.first_step
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
    """Assign segments to one length class (lengths ≥ `shortest`) in vectorized rounds; returns those unplaced.
    A step's copies stop drawing after a round that placed none of them there (whatever happens in other steps)."""
    stalled = []
    for round_ in range(MAX_ROUNDS):
        if len(pending) == 0:
            break
        copies.segment[pending] = _draw(copies, pending, np.where(room >= shortest, room, 0), *purpose, round_)
        drawn = pending[copies.segment[pending] >= 0]
        accepted = _accept(copies, drawn, room, *purpose, round_) if len(drawn) else drawn
        placed = np.zeros(len(copies.length), dtype=bool)
        placed[accepted] = True
        pending = pending[~placed[pending]]
        progressed = np.zeros(len(copies.step_segments), dtype=bool)
        progressed[copies.step[accepted] - copies.first_step] = True
        moving = progressed[copies.step[pending] - copies.first_step]
        stalled.append(pending[~moving])
        pending = pending[moving]
    return np.concatenate([pending, *stalled])


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


def _place_window(copies: _Copies, room: np.ndarray, end_step: int) -> tuple[np.ndarray, np.ndarray]:
    """Rules 2 and 3 in one window: place every copy in its step, pass after pass, moving what does not fit one
    step on. A copy carried in from the last window joins the pass it would have been in had the two windows been
    placed as one. Returns (copies carried past the window's end, copies run past their range's end)."""
    waiting, pending, pass_ = np.arange(len(copies.length)), np.zeros(0, dtype=np.int64), 0
    carried, overrun = [], []
    while len(waiting) or len(pending):
        if len(pending) == 0:
            pass_ = int(copies.passes[waiting].min())  # an empty pass draws nothing: skip it
        joining = copies.passes[waiting] == pass_
        failed = _place_all(copies, np.concatenate([pending, waiting[joining]]), room, pass_)
        waiting = waiting[~joining]
        copies.step[failed] += 1
        ended = copies.step[failed] >= copies.of_range("end_step", failed)
        overrun.append(failed[ended])
        failed = failed[~ended]
        beyond = copies.step[failed] >= end_step
        carried.append(failed[beyond])
        copies.passes[failed[beyond]] = pass_ + 1
        pending, pass_ = failed[~beyond], pass_ + 1
    nothing = np.zeros(0, dtype=np.int64)
    return np.concatenate([nothing, *carried]), np.concatenate([nothing, *overrun])


def _arrange(segment: np.ndarray, key: np.ndarray, length: np.ndarray, seg_start: np.ndarray,
             room: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets of copies (random order within each segment, the segment's slack split into sorted uniform gaps),
    and the permutation that sorts them by offset (segments are in stream order, copies in a segment ascend).
    Depends only on each segment's own copies and its final room."""
    order = _random_order_within(segment, key, ORDER)
    segment_sorted, lengths = segment[order], length[order]
    before_copy = _running_totals(segment_sorted, lengths)
    before_copy -= lengths
    del lengths
    # Sorted uniform gaps without a sort: the running sums of m exponentials over the sum of m + 1 are the
    # order statistics of m uniforms; the (m+1)-th draw is keyed by the segment's first token.
    spacing = draw_uniform(key[order], GAP)
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


def _unplaced_problems(requests, copies: _Copies, failed, room) -> list[str]:
    """Explain, per experiment, which copies found no room and how much room is left where they may go."""
    problems = []
    owners = copies.of_range("request", failed)
    ranges = copies.ranges
    for index in np.unique(owners):
        mine = failed[owners == index]
        rid = copies.range_id[mine[0]]
        low, high = ranges.first[rid], ranges.end[rid]
        largest = int(room[low:high].max()) if high > low else 0
        problems.append(
            f"experiment {requests[index].name!r}: {len(mine):,} copies ({int(copies.length[mine].sum()):,} tokens, "
            f"longest {int(copies.length[mine].max()):,}) found no room; in steps [{ranges.start_step[rid]}, "
            f"{ranges.end_step[rid]}) {int(room[low:high].sum()):,} tokens are still free, the largest free "
            f"gap is {largest:,}"
        )
    return problems


def _capacity_problems(requests, ranges: _Ranges, room) -> list[str]:
    """Step ranges asked for more tokens than they have free, before any random placement."""
    free = np.concatenate([[0], np.cumsum(room)])
    available = free[ranges.end] - free[ranges.first]
    problems = []
    for rid in np.flatnonzero(ranges.need > available)[:10]:
        problems.append(
            f"experiment {requests[ranges.request[rid]].name!r} needs {int(ranges.need[rid]):,} tokens in steps "
            f"[{ranges.start_step[rid]}, {ranges.end_step[rid]}) but only {int(available[rid]):,} are free there"
        )
    return problems


def _pinned_columns(requests: list[Request]) -> list[np.ndarray]:
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


def _merge_pinned(columns: list[np.ndarray], count: int, pinned: list[np.ndarray]) -> None:
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


def _with_backfilled(columns: list[np.ndarray], count: int, copies: _Copies, requests: list[Request], seed: int,
                     seg_start: np.ndarray, room: np.ndarray) -> list[np.ndarray]:
    """The placed rows with the backfilled copies added: the segments these went to are laid out again, whole."""
    columns = [column[:count] for column in columns]
    experiment, item, repetition, offset, length = columns
    row_segment = np.searchsorted(seg_start, offset, side="right") - 1
    touched = np.isin(row_segment, copies.segment)
    keys = np.zeros(int(touched.sum()), dtype=np.uint64)
    owner, rows = experiment[touched], np.flatnonzero(touched)
    for index in np.unique(owner):
        mine = owner == index
        keys[mine] = copy_keys(seed, requests[index].name, item[rows[mine]], repetition[rows[mine]])
    segment = np.concatenate([row_segment[touched], copies.segment])
    offsets, order = _arrange(segment, np.concatenate([keys, copies.key]),
                              np.concatenate([length[touched], copies.length]), seg_start, room)
    moved = [np.concatenate([column[touched], added]) for column, added in
             zip((experiment, item, repetition), (copies.of_range("request", slice(None)), copies.item,
                                                  copies.repetition))]
    moved += [offsets, np.concatenate([length[touched], copies.length])]
    joined = [np.concatenate([column[~touched], extra]) for column, extra in zip(columns, moved)]
    by_offset = np.argsort(joined[3], kind="stable")
    return [column[by_offset].astype(t) for column, t in zip(joined, COLUMN_TYPES)]


def compile_schedule(layout: Layout, requests: list[Request], seed: int, window_steps: int | None = None) -> Schedule:
    """Place every copy of every request; deterministic in `seed`. Raises LayoutError if anything does not fit.

    `window_steps`: steps placed at a time (default: about WINDOW_COPIES copies a window); the schedule does not
    depend on it, only the memory and time it takes."""
    blocked_start, blocked_end = _check_explicit(layout, requests)
    seg_start, room = free_segments(layout, blocked_start, blocked_end)
    step_segments = np.searchsorted(seg_start, np.arange(layout.steps + 1) * layout.tokens_per_step)
    ranges = _make_ranges(layout, requests, seed, step_segments)
    problems = _capacity_problems(requests, ranges, room)
    if problems:
        raise LayoutError(*problems)
    decoders = [None if request.mode == "explicit" else _copy_ids_to_items(request.copies) for request in requests]
    total = sum(len(ids) for ids in ranges.ids)
    pinned = _pinned_columns(requests)
    columns = [np.empty(total + len(pinned[3]), dtype=t) for t in COLUMN_TYPES]
    window_steps = window_steps or max(1, layout.steps * WINDOW_COPIES // max(total, 1))
    filled, carried, overrun = 0, [], []
    for first in range(0, layout.steps if total else 0, window_steps):
        end = min(first + window_steps, layout.steps)
        base, view = step_segments[first], step_segments[first:end + 1] - step_segments[first]
        own = _window_copies(ranges, requests, decoders, seed, first, end, view)
        copies = _joined([*carried, own], ranges, first, view)
        window_room = room[base:step_segments[end]]
        carry, over = _place_window(copies, window_room, end)
        carried, done = [copies.taken(carry)], np.ones(len(copies.length), dtype=bool)
        overrun.append(copies.taken(over))
        done[carry] = done[over] = False
        placed = copies.taken(np.flatnonzero(done))
        offsets, order = _arrange(placed.segment, placed.key, placed.length, seg_start[base:], window_room)
        rows = slice(filled, filled + len(order))
        for column, values in zip(columns, (placed.of_range("request", order), placed.item[order],
                                            placed.repetition[order], offsets[order], placed.length[order])):
            column[rows] = values
        filled += len(order)
    backfilled = 0
    if overrun:
        late = _joined(overrun, ranges, 0, step_segments, backfilling=True)
        if len(late.length):
            late.segment[:] = -1
            failed = _place_exactly(late, np.arange(len(late.length)), room, EXACT, -1)
            if len(failed):
                raise LayoutError(*_unplaced_problems(requests, late, failed, room))
            backfilled = len(late.length)
            placed = _with_backfilled(columns, filled, late, requests, seed, seg_start, room)
            columns = [np.empty(total + len(pinned[3]), dtype=t) for t in COLUMN_TYPES]
            for column, values in zip(columns, placed):
                column[:total] = values
            filled = total
    _merge_pinned(columns, filled, pinned)
    return Schedule(*columns, backfilled=backfilled)
