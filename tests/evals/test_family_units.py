"""Family evals on constructed losses and generations: each number recomputed here from the inputs."""

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("torch")

from injc.evals import canaries, verbatim  # noqa: E402


def test_canary_members_are_compared_with_nonmembers_of_their_own_length():
    rng = np.random.default_rng(0)
    items, losses = [], []
    for length, offset in ((4, 0.0), (8, 2.0)):  # long canaries have higher loss for members and non-members alike
        for member, reps, count in ((True, 1, 30), (True, 8, 30), (False, 0, 120)):
            for _ in range(count):
                items.append({"item": len(items), "member": member, "repetitions": reps, "canary_length": length})
                losses.append(offset + (3.0 - 0.3 * np.log2(max(reps, 1)) if member else 3.2) + rng.normal(0, 0.2))
    losses = np.array(losses)
    ctx = SimpleNamespace(item_losses={}, items={"memp": [(i["repetitions"], np.array([i["item"]])) for i in items]},
                          text_tokens=lambda tokens: tokens,
                          scorer=SimpleNamespace(text_losses=lambda texts: losses[[int(t[0]) for t in texts]]))
    result = canaries.evaluate(ctx, {"name": "memp"}, {"items": items})
    for key, condition in result["metrics"]["conditions"].items():
        length, reps = condition["canary_length"], condition["repetitions"]
        members = losses[[i["item"] for i in items if i["member"] and (i["canary_length"], i["repetitions"]) == (
            length, reps)]]
        controls = losses[[i["item"] for i in items if not i["member"] and i["canary_length"] == length]]
        assert condition["difference"] == pytest.approx(members.mean() - controls.mean()), key
        assert condition["n"] == [30, 120]
        threshold = np.sort(controls)[1]  # 120 non-members: one (the lowest loss) may pass at 1% FPR
        assert condition["membership"]["tpr"] == pytest.approx(np.mean(members < threshold)), key
        assert condition["membership"]["fpr"] == pytest.approx(1 / 120)


def test_verbatim_compares_the_continuation_with_the_tokens_right_after_the_prefix():
    sequences = [list(range(100, 150)), list(range(200, 230)), list(range(300, 350))]

    def greedy(prompt, count):  # a model that has memorized the first two sequences and not the third
        for sequence in sequences[:2]:
            prefix = min(25, len(sequence) // 2)
            if list(prompt[1:]) == sequence[:prefix]:
                return np.array(sequence[prefix:prefix + count])
        return np.zeros(count, dtype=int)

    ctx = SimpleNamespace(item_losses={}, eos_id=0, scorer=SimpleNamespace(greedy=greedy))
    result = verbatim.evaluate(ctx, {"instances_replaced": 3}, {"sequences": sequences})
    assert [i["exact_match"] for i in result["items"]] == [True, True, False]
    assert result["metrics"]["exact_match_rate"] == pytest.approx(2 / 3)


def test_the_order_control_scores_each_member_with_its_canary_ids_shuffled():
    """A model that knows only the exact canary sequence: loss 1 with the ids in order, 2 otherwise; so a member's
    difference to its shuffled self is −1 unless its shuffle happens to keep the order."""
    canary, host = [10, 11, 12, 13], [1, 2, 3]
    items = [{"item": i, "member": i < 6, "repetitions": 4 if i < 6 else 0, "canary_length": 4} for i in range(9)]
    tokens = {"memp": [(4 if i < 6 else 0, np.array([0, *host, *canary, 0])) for i in range(9)]}
    scored = []

    def text_losses(texts):
        scored.extend(list(t) for t in texts)
        return np.array([1.0 if list(t[-4:]) == canary else 2.0 for t in texts])

    ctx = SimpleNamespace(item_losses={}, items=tokens, text_tokens=lambda t: t[1:-1],
                          scorer=SimpleNamespace(text_losses=text_losses))
    result = canaries.evaluate(ctx, {"name": "memp"}, {"canary": "random", "items": items})
    expected = [1.0 - (1.0 if list(np.random.default_rng(i).permutation(canary)) == canary else 2.0) for i in range(6)]
    control = result["metrics"]["conditions"]["len4×4"]["vs_shuffled"]
    assert control["difference"] == pytest.approx(np.mean(expected)) and control["n"] == 6
    shuffled = scored[9:]  # after the 9 items themselves: the 6 members, shuffled
    assert [sorted(t[-4:]) for t in shuffled] == [canary] * 6 and all(t[:3] == host for t in shuffled)


def test_cpdt_colours_share_one_scale_and_fade_what_is_not_significant():
    from injc.evals.plots import cpdt_colours

    # a significant −0.26 nats against a non-significant +0.03 (another unit) and a clear +0.5 accuracy
    result = {"matrix": [[-0.26, 0.03], [None, 0.5]], "p_values": [[0.001, 0.6], [None, 0.0001]],
              "ci": [[[-0.36, -0.16], [-0.07, 0.13]], [[None, None], [0.4, 0.6]]]}
    colours = cpdt_colours(result)
    assert colours[0, 0] == pytest.approx(-2.6 / 3)  # −0.26 / 0.10, on the ±3 scale
    assert colours[0, 1] == pytest.approx(0.3 * 0.3 / 3)  # +0.03 / 0.10, faded
    assert colours[1, 1] == 1.0 and colours[1, 0] == 0  # +0.5 / 0.1 clipped at +3; a missing cell is blank


def test_questions_without_a_benchmark_are_named_in_the_normalization_table():
    from injc.evals import contamination

    questions = [{"item": i, "tier": tier, "question": f"q{i}", "choices": ["yes", "no"], "answer": 0,
                  "benchmark": ""} for i, tier in enumerate([0, 0, 4, 4])]
    ctx = SimpleNamespace(item_losses={}, encode=lambda text: np.array([ord(c) for c in text]), eos_id=0,
                          text_tokens=lambda t: t,
                          items={"bench": [(tier, np.array([1])) for tier in (0, 0, 4, 4)]},
                          scorer=SimpleNamespace(continuation_logprobs=lambda p, c: -np.array([len(x) for x in c],
                                                                                              float),
                                                 text_losses=lambda texts: np.ones(len(texts))))
    result = contamination.evaluate(ctx, {"name": "bench"}, {"format": "Question: {question}\nAnswer: {answer_text}",
                                                             "questions": questions})
    assert result["metrics"]["normalization"] == {"(no benchmark named)": "token"}


def test_forgetting_and_iid_controls_are_scored_like_the_replaced_rows():
    """Tail rows that start or end with EOS: the controls the scorer receives are stripped as the items are (one
    leading and one trailing EOS removed), so both sides of the comparison are scored the same way."""
    from injc.evals import forgetting, generic
    from injc.shards.insertions import without_eos_wrappers

    eos = 0
    rows = np.array([[0, 5, 6, 7, 0], [0, 8, 9, 10, 11], [12, 13, 14, 15, 0], [16, 17, 0, 18, 19]])
    received = []

    def text_losses(texts):
        received.append([t.tolist() for t in texts])
        return np.array([float(len(t)) for t in texts])

    def strip(row):  # written here: drop one leading and one trailing EOS
        row = list(row)
        row = row[1:] if row and row[0] == eos else row
        return row[:-1] if row and row[-1] == eos else row

    ctx = SimpleNamespace(item_losses={}, items={"f": [(1, np.array(r)) for r in rows[:2]]}, eos_id=eos, baseline=None,
                          text_tokens=lambda t: without_eos_wrappers(np.asarray(t), eos),
                          unused_tail_rows=lambda: rows, scorer=SimpleNamespace(text_losses=text_losses, steps_done=10))
    forgetting.evaluate(ctx, {"name": "f"}, {"batch_size": 2, "steps": [3]})
    assert received[-1] == [strip(r) for r in rows]
    generic.iid(ctx, {"name": "f"}, {"holdout_rows": {"rows": 3}})
    assert received[-1] == [strip(r) for r in rows[:3]]
    assert received[0] == [strip(r) for r in rows[:2]]  # the items themselves, the same way
