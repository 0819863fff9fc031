"""Placement inside one window of steps (rules 3 and the in-step rules of injc.compiler.schedule): every copy
is placed in its step, pass after pass, what does not fit moving one step on; inside a step, copies go in length
classes, longest first, each drawing a free segment with probability proportional to its free tokens, then an exact
pass for stragglers; `arrange` lays a segment's copies out in random order with uniformly random gaps.

Everything works on a window's copies (`injc.compiler.schedule._Copies`: per-copy columns and their ranges),
vectorized over copies.
"""

import numpy as np

from injc.compiler.draws import ACCEPT, EXACT, GAP, ORDER, ROUND, draw_uniform, random_order_within, running_totals

MAX_ROUNDS = 32
"""Drawing rounds of one length class before its remaining copies go to the exact pass."""


def _accept(copies, pending: np.ndarray, room: np.ndarray, *purpose: int) -> np.ndarray:
    """Among `pending` copies (with a drawn segment), keep, per segment in random order, those that fit `room`."""
    segment = copies.segment[pending]
    order = random_order_within(segment, copies.key[pending], ACCEPT, *purpose)
    segment, lengths = segment[order], copies.length[pending][order]
    fits = running_totals(segment, lengths) <= room[segment]
    accepted = pending[order[fits]]
    np.subtract.at(room, segment[fits], lengths[fits])
    return accepted


def _draw(copies, pending: np.ndarray, weight: np.ndarray, *purpose: int) -> np.ndarray:
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


def _place_class(copies, pending: np.ndarray, room: np.ndarray, shortest: int, *purpose: int) -> np.ndarray:
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


def _place_all(copies, pending: np.ndarray, room: np.ndarray, pass_: int) -> np.ndarray:
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
            failed.append(place_exactly(copies, left, room, EXACT, *purpose))
    return np.concatenate(failed) if failed else np.zeros(0, dtype=np.int64)


def place_exactly(copies, pending: np.ndarray, room: np.ndarray, *purpose: int) -> np.ndarray:
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


def place_window(copies, room: np.ndarray, end_step: int) -> tuple[np.ndarray, np.ndarray]:
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


def arrange(segment: np.ndarray, key: np.ndarray, length: np.ndarray, seg_start: np.ndarray,
             room: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets of copies (random order within each segment, the segment's slack split into sorted uniform gaps),
    and the permutation that sorts them by offset (segments are in stream order, copies in a segment ascend).
    Depends only on each segment's own copies and its final room."""
    order = random_order_within(segment, key, ORDER)
    segment_sorted, lengths = segment[order], length[order]
    before_copy = running_totals(segment_sorted, lengths)
    before_copy -= lengths
    del lengths
    # Sorted uniform gaps without a sort: the running sums of m exponentials over the sum of m + 1 are the
    # order statistics of m uniforms; the (m+1)-th draw is keyed by the segment's first token.
    spacing = draw_uniform(key[order], GAP)
    np.log1p(np.negative(spacing, out=spacing), out=spacing)
    running = running_totals(segment_sorted, np.negative(spacing, out=spacing))
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
