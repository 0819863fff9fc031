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
    ctx = SimpleNamespace(items={"memp": [(i["repetitions"], np.array([i["item"]])) for i in items]},
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

    ctx = SimpleNamespace(eos_id=0, scorer=SimpleNamespace(greedy=greedy))
    result = verbatim.evaluate(ctx, {"instances_replaced": 3}, {"sequences": sequences})
    assert [i["exact_match"] for i in result["items"]] == [True, True, False]
    assert result["metrics"]["exact_match_rate"] == pytest.approx(2 / 3)
