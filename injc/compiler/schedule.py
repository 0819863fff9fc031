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

from dataclasses import dataclass

import numpy as np

from injc.compiler.draws import EXACT, copy_keys, experiment_key
from injc.compiler.explicit import COLUMN_TYPES, check_explicit, free_segments, merge_pinned, pinned_columns
from injc.compiler.placement import arrange, place_exactly, place_window
from injc.errors import LayoutError
from injc.shards.layout import Layout

SCHEDULE_VERSION = 2
"""Names the placement rules: the same plan and seed give the same schedule within a version (docs/format.md)."""
WINDOW_COPIES = 1 << 20
"""About how many copies one window of steps holds while it is placed."""


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
    offsets, order = arrange(segment, np.concatenate([keys, copies.key]),
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
    blocked_start, blocked_end = check_explicit(layout, requests)
    seg_start, room = free_segments(layout, blocked_start, blocked_end)
    step_segments = np.searchsorted(seg_start, np.arange(layout.steps + 1) * layout.tokens_per_step)
    ranges = _make_ranges(layout, requests, seed, step_segments)
    problems = _capacity_problems(requests, ranges, room)
    if problems:
        raise LayoutError(*problems)
    decoders = [None if request.mode == "explicit" else _copy_ids_to_items(request.copies) for request in requests]
    total = sum(len(ids) for ids in ranges.ids)
    pinned = pinned_columns(requests)
    columns = [np.empty(total + len(pinned[3]), dtype=t) for t in COLUMN_TYPES]
    window_steps = window_steps or max(1, layout.steps * WINDOW_COPIES // max(total, 1))
    filled, carried, overrun = 0, [], []
    for first in range(0, layout.steps if total else 0, window_steps):
        end = min(first + window_steps, layout.steps)
        base, view = step_segments[first], step_segments[first:end + 1] - step_segments[first]
        own = _window_copies(ranges, requests, decoders, seed, first, end, view)
        copies = _joined([*carried, own], ranges, first, view)
        window_room = room[base:step_segments[end]]
        carry, over = place_window(copies, window_room, end)
        carried, done = [copies.taken(carry)], np.ones(len(copies.length), dtype=bool)
        overrun.append(copies.taken(over))
        done[carry] = done[over] = False
        placed = copies.taken(np.flatnonzero(done))
        offsets, order = arrange(placed.segment, placed.key, placed.length, seg_start[base:], window_room)
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
            failed = place_exactly(late, np.arange(len(late.length)), room, EXACT, -1)
            if len(failed):
                raise LayoutError(*_unplaced_problems(requests, late, failed, room))
            backfilled = len(late.length)
            placed = _with_backfilled(columns, filled, late, requests, seed, seg_start, room)
            columns = [np.empty(total + len(pinned[3]), dtype=t) for t in COLUMN_TYPES]
            for column, values in zip(columns, placed):
                column[:total] = values
            filled = total
    merge_pinned(columns, filled, pinned)
    return Schedule(*columns, backfilled=backfilled)
