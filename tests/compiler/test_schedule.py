import numpy as np
import pytest

from injc.compiler.draws import ORDER, draw_bits, random_order_within
from injc.compiler.explicit import free_segments
from injc.compiler.schedule import Request, compile_schedule
from injc.errors import LayoutError
from injc.shards.layout import Layout

LAYOUT = Layout(seq_len=128, batch_size=8, steps=100)


def random_request(name="a", items=50, copies=4, low=5, high=40, seed=0, **kwargs):
    lengths = np.random.default_rng(seed).integers(low, high, items)
    return Request(name, lengths, np.full(items, copies), kwargs.pop("mode", "random"), **kwargs)


def expand_copies(copies) -> tuple[list[int], list[int]]:
    """(item, repetition) of every copy, item by item: what a schedule must place, each exactly once."""
    counts = np.asarray(copies).tolist()
    pairs = [(item, repetition) for item, count in enumerate(counts) for repetition in range(count)]
    return [item for item, _ in pairs], [repetition for _, repetition in pairs]


def assert_valid(layout, schedule, requests):
    end = schedule.offset + schedule.length
    assert (np.diff(schedule.offset) > 0).all(), "sorted by offset"
    assert (schedule.offset[1:] >= end[:-1]).all(), "no overlaps"
    assert schedule.offset.min() >= 0 and end.max() <= layout.total_tokens
    for index, request in enumerate(requests):
        mine = schedule.experiment == index
        # every copy of every item placed exactly once
        item, repetition = expand_copies(request.copies)
        placed = sorted(zip(schedule.item[mine], schedule.repetition[mine]))
        assert placed == sorted(zip(item, repetition))
        assert (schedule.length[mine] == np.asarray(request.lengths)[schedule.item[mine]]).all()
        if request.mode != "explicit":
            step, _, col = layout.locate(schedule.offset[mine])
            assert (col + schedule.length[mine] <= layout.seq_len).all(), "inside one instance"
            assert (step >= request.start_step).all()
            assert (step < (request.end_step or layout.steps)).all()


def test_random_copies_are_all_placed_disjoint_and_inside_instances():
    requests = [random_request("a"), random_request("b", items=30, copies=2, seed=1)]
    schedule = compile_schedule(LAYOUT, requests, seed=3)
    assert len(schedule) == 50 * 4 + 30 * 2
    assert_valid(LAYOUT, schedule, requests)


def test_items_without_copies_and_with_several_are_placed_as_asked():
    copies = np.array([2, 0, 3, 0, 0, 1, 4, 0])
    requests = [Request("mixed", np.arange(5, 13), copies, "random"), random_request("b", items=30, copies=1)]
    schedule = compile_schedule(LAYOUT, requests, seed=2, window_steps=7)
    assert len(schedule) == 10 + 30
    assert_valid(LAYOUT, schedule, requests)


def test_same_seed_same_schedule_other_seed_other_schedule():
    requests = [random_request()]
    a, b = compile_schedule(LAYOUT, requests, seed=3), compile_schedule(LAYOUT, requests, seed=3)
    c = compile_schedule(LAYOUT, requests, seed=4)
    for field in ("experiment", "item", "repetition", "offset", "length"):
        assert (getattr(a, field) == getattr(b, field)).all()
    assert not np.array_equal(a.offset, c.offset)


def test_random_copies_spread_over_the_whole_run():
    layout = Layout(seq_len=256, batch_size=16, steps=1000)
    requests = [random_request(items=2000, copies=5, low=4, high=30)]
    schedule = compile_schedule(layout, requests, seed=0)
    deciles = np.bincount(layout.locate(schedule.offset)[0] * 10 // layout.steps, minlength=10)
    expected = len(schedule) / 10
    assert (np.abs(deciles - expected) < 5 * np.sqrt(expected)).all(), deciles
    columns = layout.locate(schedule.offset)[2]
    assert columns.min() < 5 and columns.max() > layout.seq_len - 40, "positions cover the whole row"


def test_range_copies_stay_inside_their_steps():
    requests = [random_request(mode="range", start_step=40, end_step=45), random_request("b", seed=2)]
    schedule = compile_schedule(LAYOUT, requests, seed=1)
    assert_valid(LAYOUT, schedule, requests)
    steps = LAYOUT.locate(schedule.offset[schedule.experiment == 0])[0]
    assert set(np.unique(steps)) == set(range(40, 45))


def test_explicit_copies_land_exactly_and_random_ones_avoid_them():
    offsets = np.array([0, 130, 5000, 128 * 8 * 50 - 10])  # the last one crosses a step boundary
    explicit = Request("pinned", np.array([50, 60, 128, 30]), np.ones(4, int), "explicit", offsets=offsets)
    requests = [explicit, random_request(items=200, copies=4)]
    schedule = compile_schedule(LAYOUT, requests, seed=0)
    assert_valid(LAYOUT, schedule, requests)
    mine = schedule.experiment == 0
    assert schedule.offset[mine].tolist() == sorted(offsets.tolist())


def test_dense_run_is_filled_correctly_without_drops():
    layout = Layout(seq_len=512, batch_size=8, steps=200)
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 300, 3000)
    copies = np.ones(3000, int)
    target = 0.6 * layout.total_tokens
    copies[:] = max(1, int(target / lengths.sum()))
    requests = [Request("dense", lengths, copies, "random")]
    schedule = compile_schedule(layout, requests, seed=5)
    assert schedule.length.sum() / layout.total_tokens > 0.5
    assert_valid(layout, schedule, requests)


def test_full_rows_fit_when_the_run_is_almost_full():
    layout = Layout(seq_len=64, batch_size=4, steps=10)
    requests = [Request("rows", np.full(39, 64), np.ones(39, int), "random"),
                Request("small", np.full(10, 6), np.ones(10, int), "random")]
    schedule = compile_schedule(layout, requests, seed=0)
    assert_valid(layout, schedule, requests)


def test_too_many_tokens_fail_loudly_with_numbers():
    layout = Layout(seq_len=64, batch_size=4, steps=10)
    requests = [Request("huge", np.full(100, 30), np.full(100, 1), "range", start_step=0, end_step=2)]
    with pytest.raises(LayoutError, match=r"'huge' needs 3,000 tokens in steps \[0, 2\) but only 512 are free"):
        compile_schedule(layout, requests, seed=0)


def test_fragmented_space_fails_loudly_instead_of_dropping():
    layout = Layout(seq_len=64, batch_size=4, steps=10)
    # 40 rows of 64; 40 copies of 40 tokens use every row, leaving 24 free in each: 960 free tokens,
    # but a 30-token copy fits nowhere.
    requests = [Request("a", np.full(40, 40), np.ones(40, int), "random"),
                Request("b", np.array([30]), np.array([1]), "random")]
    with pytest.raises(LayoutError, match=r"'b': 1 copies \(30 tokens.*largest free gap is 24"):
        compile_schedule(layout, requests, seed=0)


def test_explicit_overlap_and_out_of_run_are_refused():
    overlap = [Request("x", np.array([10]), np.ones(1, int), "explicit", offsets=np.array([100])),
               Request("y", np.array([10]), np.ones(1, int), "explicit", offsets=np.array([105]))]
    with pytest.raises(LayoutError, match="explicit insertions overlap: experiment 'x' item 0"):
        compile_schedule(LAYOUT, overlap, seed=0)
    outside = [Request("z", np.array([10]), np.ones(1, int), "explicit", offsets=np.array([LAYOUT.total_tokens - 5]))]
    with pytest.raises(LayoutError, match="'z': item 0 at offset 102,395 .* falls outside the run"):
        compile_schedule(LAYOUT, outside, seed=0)


def test_free_segments_cut_rows_around_blocked_intervals():
    layout = Layout(seq_len=10, batch_size=2, steps=2)
    start, capacity = free_segments(layout, np.array([5, 18]), np.array([7, 23]))
    assert list(zip(start.tolist(), (start + capacity).tolist())) == [(0, 5), (7, 10), (10, 18), (23, 30), (30, 40)]


def test_empty_request_list_gives_an_empty_schedule():
    assert len(compile_schedule(LAYOUT, [], seed=0)) == 0


def windowed(name, counts, window=10, seed=0, layout=LAYOUT):
    """A knowledge-like request: `counts[w]` one-copy items in window w, items in window order."""
    lengths = np.random.default_rng(seed).integers(5, 40, sum(counts))
    window_of = np.repeat(np.arange(len(counts)), counts)
    ranges = (window_of * window, np.minimum((window_of + 1) * window, layout.steps))
    return Request(name, lengths, np.ones(len(lengths), int), "range", 0, layout.steps, item_steps=ranges)


def placed_before(schedule, requests, layout, step):
    """The placements before `step`'s first token, named by experiment (so request order does not matter)."""
    before = schedule.offset < step * layout.tokens_per_step
    names = [requests[i].name for i in schedule.experiment[before]]
    return sorted(zip(names, *(getattr(schedule, f)[before].tolist() for f in ("item", "repetition", "offset",
                                                                                "length"))))


@pytest.mark.parametrize("k", [10, 37, 60, 99])
def test_what_is_asked_at_or_after_step_k_changes_nothing_before_k(k):
    windows = 10
    counts = [40] * windows
    # about 65% full (systematic apportionment leaves no step overfull here: crowded_plans() below tests
    # copies that move on to later steps)
    common = [random_request("whole", items=200, copies=3), random_request("filler", items=1000, copies=2, seed=5)]
    first_changed = -(-k // windows)  # the first window that starts at or after k
    later = counts[:first_changed] + [c * 2 + 7 for c in counts[first_changed:]]
    a = common + [windowed("knowledge", counts)]
    b = [Request("new-range", np.full(10, 12), np.ones(10, int), "range", start_step=k, end_step=min(k + 3, 100)),
         *common, windowed("knowledge", later),
         Request("pinned", np.array([20]), np.ones(1, int), "explicit", offsets=np.array([k * 1024 + 50]))]
    first, second = compile_schedule(LAYOUT, a, seed=7), compile_schedule(LAYOUT, b, seed=7)
    assert_valid(LAYOUT, first, a)
    assert_valid(LAYOUT, second, b)
    assert first.backfilled == second.backfilled == 0
    assert placed_before(first, a, LAYOUT, k) == placed_before(second, b, LAYOUT, k)
    assert placed_before(first, a, LAYOUT, k + 1) != placed_before(second, b, LAYOUT, k + 1)


def test_a_step_that_overflows_sends_copies_forward_never_back():
    layout = Layout(seq_len=64, batch_size=2, steps=6)
    # step 2 is asked for 3 full rows but has 2; the third must land in step 3, and steps 0-1 stay empty
    requests = [Request("burst", np.full(3, 64), np.ones(3, int), "range", start_step=2, end_step=5,
                        item_steps=(np.full(3, 2), np.full(3, 3)))]
    with pytest.raises(LayoutError, match="needs 192 tokens in steps \\[2, 3\\) but only 128 are free"):
        compile_schedule(layout, requests, seed=0)
    requests = [Request("early", np.full(6, 64), np.ones(6, int), "range", start_step=0, end_step=3),
                Request("late", np.full(4, 64), np.ones(4, int), "range", start_step=2, end_step=6)]
    # rows: 6 early ones fill steps 0-2 exactly; late has one per step 2-5 and, finding step 2 full (early's
    # copies cannot move on, so they go first), moves its copy on to step 3, never back
    schedule = compile_schedule(layout, requests, seed=0)
    assert_valid(layout, schedule, requests)
    steps = layout.locate(schedule.offset)[0]
    assert sorted(steps[schedule.experiment == 0].tolist()) == [0, 0, 1, 1, 2, 2]
    assert sorted(steps[schedule.experiment == 1].tolist()) == [3, 3, 4, 5]
    assert schedule.backfilled == 0


def crowded_plans():
    """Plans whose copies overflow into later steps (rows of whole-row copies), one of them past its range's end
    (backfilled), with ranges, windows and explicit insertions."""
    rows = Layout(seq_len=64, batch_size=4, steps=30)
    yield rows, [Request("rows", np.full(110, 64), np.ones(110, int), "random"),
                 Request("small", np.full(40, 6), np.ones(40, int), "range", start_step=3, end_step=27),
                 Request("pinned", np.array([30]), np.ones(1, int), "explicit", offsets=np.array([9 * 256 + 10]))]
    almost_full = Layout(seq_len=64, batch_size=4, steps=10)
    yield almost_full, [Request("rows", np.full(39, 64), np.ones(39, int), "random"),
                        Request("small", np.full(10, 6), np.ones(10, int), "random")]
    layout = Layout(seq_len=128, batch_size=8, steps=60)
    rng = np.random.default_rng(1)
    yield layout, [Request("background", rng.integers(5, 30, 1000), np.ones(1000, int), "random"),
                   Request("burst", rng.integers(5, 30, 200), np.ones(200, int), "range", start_step=10, end_step=20),
                   Request("wide", rng.integers(5, 30, 600), np.ones(600, int), "range", 0, 60,
                           item_steps=(np.repeat([10, 0], 300), np.repeat([40, 60], 300))),
                   windowed("knowledge", [30] * 6, layout=layout)]


@pytest.mark.parametrize("plan", range(3))
def test_the_schedule_is_the_same_whatever_the_window_of_steps_placed_at_once(plan):
    layout, requests = list(crowded_plans())[plan]
    whole = compile_schedule(layout, requests, seed=3, window_steps=layout.steps)
    assert_valid(layout, whole, requests)
    for window_steps in (1, 2, 7):
        windowed_schedule = compile_schedule(layout, requests, seed=3, window_steps=window_steps)
        for field in ("experiment", "item", "repetition", "offset", "length", "backfilled"):
            assert np.array_equal(getattr(whole, field), getattr(windowed_schedule, field)), (window_steps, field)


def test_the_random_order_in_a_segment_does_not_depend_on_the_order_copies_come_in():
    # two keys whose draws agree in the 32 bits of the fast sort key (found by a birthday search)
    keys = np.arange(300_000, dtype=np.uint64)
    fast_bits = draw_bits(keys, ORDER) >> 31
    values, first, counts = np.unique(fast_bits, return_index=True, return_counts=True)
    tied = keys[first[counts > 1][0]], keys[np.flatnonzero(fast_bits == values[counts > 1][0])[1]]
    pair = np.array(tied, dtype=np.uint64)
    segment = np.zeros(2, dtype=np.int64)
    forward, backward = random_order_within(segment, pair, ORDER), random_order_within(segment, pair[::-1], ORDER)
    assert pair[forward].tolist() == pair[::-1][backward].tolist()


@pytest.mark.parametrize("k", [5, 12, 20])
def test_a_change_at_step_k_changes_nothing_before_k_where_copies_move_on(k):
    layout = Layout(seq_len=64, batch_size=4, steps=30)
    # 96 whole-row copies in 120 rows: some steps get 4 besides the small copies, and copies move on (8 of them)
    requests = [Request("rows", np.full(96, 64), np.ones(96, int), "random"),
                Request("small", np.full(40, 6), np.ones(40, int), "range", start_step=3, end_step=27)]
    later = [*requests, Request("late", np.full(12, 20), np.ones(12, int), "range", start_step=k, end_step=k + 4)]
    first, second = compile_schedule(layout, requests, seed=3), compile_schedule(layout, later, seed=3)
    assert_valid(layout, second, later)
    assert first.backfilled == second.backfilled == 0
    assert placed_before(first, requests, layout, k) == placed_before(second, later, layout, k)
    assert placed_before(first, requests, layout, k + 4) != placed_before(second, later, layout, k + 4)
