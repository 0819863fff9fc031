"""Every number the forgetting, generic and verbatim scorers report, on constructed losses and generations, each
recomputed here from the inputs (the bootstrap and the exact sign-flip test written out). Written against the
mutants mutmut left alive in those scorers (bench/mutation.sh)."""

from types import SimpleNamespace

import numpy as np
import pytest

from injc.shards.insertions import without_eos_wrappers
from tests.evals.independent import bootstrap_mean, exact_sign_flip

pytest.importorskip("torch")

from injc.evals import forgetting, generic, verbatim, verbatim_candidates  # noqa: E402

EOS = 0


def losses_by_length(texts):
    """A scorer whose loss of a text is a number written into its tokens: its first token / 10."""
    return np.array([t[0] / 10 if len(t) else np.nan for t in texts])


def context(items: dict, tail_rows: np.ndarray, steps_done=None, baseline=None):
    return SimpleNamespace(items=items, item_losses={}, eos_id=EOS, baseline=baseline,
                           unused_tail_rows=lambda: tail_rows,
                           text_tokens=lambda t: without_eos_wrappers(np.asarray(t), EOS),
                           scorer=SimpleNamespace(text_losses=losses_by_length, steps_done=steps_done))


def test_forgetting_reports_each_batch_against_the_unseen_control_and_the_baseline_row_by_row():
    """Two replaced batches of 3 rows (steps 4 and 9), trained to step 7: the first seen (2 steps ago), the second
    not. Row losses are 1.0 … 1.5 under the checkpoint and 0.9 … 1.8 under the baseline."""
    rows = [np.array([EOS, 10 + i, 7, EOS]) for i in range(6)]
    baseline_rows = [np.array([EOS, v, 7, EOS]) for v in (9, 12, 13, 16, 17, 18)]
    tail = np.array([[EOS, 20, 5, 5], [30, 5, 5, EOS], [25, 5, 5, 5]])
    baseline = SimpleNamespace(text_losses=lambda texts: losses_by_length(
        [baseline_rows[i][1:-1] for i in range(len(texts))]), checkpoint="clean/final")
    ctx = context({"f": [(1, r) for r in rows]}, tail, steps_done=7, baseline=baseline)
    result = forgetting.evaluate(ctx, {"name": "f"}, {"batch_size": 3, "steps": [4, 9]})
    losses, base, control = np.arange(10, 16) / 10, np.array([9, 12, 13, 16, 17, 18]) / 10, np.array([2.0, 3.0, 2.5])
    metrics = result["metrics"]
    assert metrics["control_rows"] == 3 and metrics["unseen_control_loss"] == pytest.approx(control.mean())
    assert metrics["baseline"] == "clean/final"
    first, second = metrics["batches"]
    assert (first["step"], first["seen"], first["steps_since_seen"]) == (4, True, 2)
    assert (second["step"], second["seen"], second["steps_since_seen"]) == (9, False, None)
    at_the_checkpoint = forgetting.evaluate(ctx, {"name": "f"}, {"batch_size": 3, "steps": [6, 7]})["metrics"]
    assert [b["seen"] for b in at_the_checkpoint["batches"]] == [True, False]  # step 7 is the 8th: not trained yet
    for batch, rows_of in ((first, slice(0, 3)), (second, slice(3, 6))):
        mine, paired = losses[rows_of], losses[rows_of] - base[rows_of]
        assert batch["loss"] == pytest.approx(mine.mean())
        assert batch["minus_unseen_control"] == pytest.approx(mine.mean() - control.mean())
        assert batch["minus_baseline"] == pytest.approx(paired.mean())
        assert batch["minus_baseline_ci95"] == pytest.approx(bootstrap_mean(paired))
        assert batch["minus_baseline_p_value"] == pytest.approx(exact_sign_flip(paired))
        assert batch["minus_baseline_p_method"] == "exact"
    unpaired = np.random.default_rng(0)  # the unseen-control interval: both sides resampled, the batch first
    means = []
    for _ in range(2000):
        a, b = losses[:3][unpaired.integers(0, 3, 3)], control[unpaired.integers(0, 3, 3)]
        means.append(a.mean() - b.mean())
    assert first["minus_unseen_control_ci95"] == pytest.approx([np.percentile(means, 2.5), np.percentile(means, 97.5)])


def test_forgetting_without_a_tail_or_a_baseline_reports_the_batches_alone():
    rows = [np.array([EOS, 10 + i, EOS]) for i in range(4)]
    ctx = context({"f": [(1, r) for r in rows]}, np.zeros((0, 3), dtype=np.int64), steps_done=None)
    metrics = forgetting.evaluate(ctx, {"name": "f"}, {"batch_size": 2, "steps": [1, 2]})["metrics"]
    assert metrics["control_rows"] == 0 and metrics["unseen_control_loss"] is None and metrics["baseline"] is None
    assert [b["loss"] for b in metrics["batches"]] == pytest.approx([1.05, 1.25])
    assert all(b["seen"] is False and b["steps_since_seen"] is None for b in metrics["batches"])
    assert all("minus_unseen_control" not in b and "minus_baseline" not in b for b in metrics["batches"])


def test_mean_loss_counts_inserted_items_only_and_compares_them_with_the_controls():
    items = [(3, np.array([EOS, 20, EOS])), (1, np.array([40])), (0, np.array([EOS, 10])), (0, np.array([15, EOS]))]
    result = generic.mean_loss(context({"t": items}, None), {"name": "t"})
    assert result["metrics"]["mean_loss"] == pytest.approx(3.0)  # 2.0 and 4.0: the controls are not inserted
    assert result["items"] == [{"item": 0, "copies": 3, "loss": 2.0}, {"item": 1, "copies": 1, "loss": 4.0},
                               {"item": 2, "copies": 0, "loss": 1.0}, {"item": 3, "copies": 0, "loss": 1.5}]
    versus = result["metrics"]["vs_controls"]
    assert versus["difference"] == pytest.approx(3.0 - 1.25) and versus["n"] == [2, 2]
    assert versus["mean_inserted"] == pytest.approx(3.0) and versus["mean_control"] == pytest.approx(1.25)
    alone = generic.mean_loss(context({"t": items[:2]}, None), {"name": "t"})["metrics"]
    assert "vs_controls" not in alone and alone["mean_loss"] == pytest.approx(3.0)
    assert generic.mean_loss(context({}, None), {"name": "t"}) == {"metrics": {"mean_loss": None}, "items": []}
    none_inserted = generic.mean_loss(context({"t": items[2:]}, None), {"name": "t"})["metrics"]
    assert none_inserted == {"mean_loss": None}


def test_iid_rows_are_compared_with_as_many_unused_tail_rows():
    items = [(1, np.array([EOS, 30, 5, 5])), (1, np.array([EOS, 50, 5, EOS]))]
    tail = np.array([[EOS, 10, 5, 5], [20, 5, 5, EOS], [90, 5, 5, 5]])
    result = generic.iid(context({"i": items}, tail), {"name": "i"}, {"holdout_rows": {"rows": 2}})
    assert result["unseen_losses"] == pytest.approx([1.0, 2.0])  # the first two unused rows, stripped like items
    versus = result["metrics"]["vs_unseen_rows"]
    assert versus["mean_inserted"] == pytest.approx(4.0) and versus["mean_unseen"] == pytest.approx(1.5)
    assert versus["n"] == [2, 2]
    empty = generic.iid(context({"i": items}, np.zeros((0, 4), dtype=np.int64)), {"name": "i"},
                        {"holdout_rows": {"rows": 2}})
    assert "vs_unseen_rows" not in empty["metrics"] and "unseen_losses" not in empty


def test_documents_report_the_mean_loss_of_each_split_and_repetition_count():
    items = [(2, np.array([10 * (i + 1)])) for i in range(5)]
    records = {"documents": [{"split": "a", "repetitions": 2, "items": [0, 1]},
                             {"split": "b", "repetitions": 1, "items": [2]},
                             {"split": "a", "repetitions": 2, "items": [3, 4]}]}
    result = generic.documents(context({"d": items}, None), {"name": "d"}, records)
    assert result["losses_by_condition"] == {"a×2": [1.5, 4.5], "b×1": [3.0]}
    assert result["metrics"]["loss_by_condition"] == {"a×2": pytest.approx(3.0), "b×1": pytest.approx(3.0)}


def test_verbatim_scores_the_greedy_continuation_of_each_sequences_first_half():
    """Sequences of 60, 10 and 7 tokens: prefixes of 25, 5 and 3 tokens (half, at most 25), targets of the next 25,
    5 and 4 (at most 25, the rest); a model that continues the first two exactly and the third wrongly."""
    sequences = [list(range(100, 160)), list(range(200, 210)), list(range(300, 307))]
    asked = []

    def greedy(prompt, length):
        asked.append((prompt.tolist(), length))
        start = prompt[-1] + 1
        return np.arange(start, start + length) + (1 if prompt[-1] >= 300 else 0)

    ctx = SimpleNamespace(eos_id=EOS, scorer=SimpleNamespace(greedy=greedy))
    result = verbatim.evaluate(ctx, {"instances_replaced": 17}, {"sequences": sequences})
    assert asked == [([EOS, *range(100, 125)], 25), ([EOS, *range(200, 205)], 5), ([EOS, *range(300, 303)], 4)]
    assert result["items"] == [{"sequence": 0, "exact_match": True}, {"sequence": 1, "exact_match": True},
                               {"sequence": 2, "exact_match": False}]
    assert result["metrics"] == {"exact_match_rate": pytest.approx(2 / 3), "instances_replaced": 17}
    assert verbatim.evaluate(ctx, {}, {"sequences": []})["metrics"] == {"exact_match_rate": None,
                                                                       "instances_replaced": None}


def test_windows_are_every_strideth_start_that_fits_its_row_without_eos():
    layout = SimpleNamespace(seq_len=8, total_tokens=24)
    tokens = np.arange(1, 25)
    tokens[10] = EOS  # in row 1, at column 2

    def one_row(a, b):  # the stream is read row by row, one row a call
        assert a % 8 == 0 and b == a + 8
        return tokens[a:b]

    stream = SimpleNamespace(tokens=one_row)
    found = list(verbatim_candidates.windows(layout, EOS, stream, width=4, stride=2, start=8))
    expected = []
    for row in (1, 2):  # from offset 8: rows 1 and 2
        starts = [s for s in range(0, 8 - 4 + 1, 2) if EOS not in tokens[row * 8 + s:row * 8 + s + 4]]
        expected.append(([row * 8 + s for s in starts], [tokens[row * 8 + s:row * 8 + s + 4].tolist() for s in starts]))
    assert [(o.tolist(), w.tolist()) for o, w in found] == expected
    assert expected[0][0] == [12] and len(expected[1][0]) == 3  # the EOS removes row 1's windows at 8 and 10
    whole_rows = verbatim_candidates.windows(layout, EOS, stream, width=8, stride=3)
    assert [o.tolist() for o, _ in whole_rows] == [[0], [], [16]]
    every = list(verbatim_candidates.windows(layout, EOS, stream, width=4, stride=1, start=16))
    assert [o.tolist() for o, _ in every] == [[16, 17, 18, 19, 20]]  # starts 0 … 4 of the last row: all fit
    too_wide = list(verbatim_candidates.windows(layout, EOS, stream, width=9, stride=1))
    assert [(o.tolist(), w.shape) for o, w in too_wide] == [([], (0, 9))] * 3


def pair_tokens(text: str) -> np.ndarray:
    """A tokenizer of two characters per token (one for an odd last character), so per-token and per-character
    normalizations differ and the prompt's last token can merge with the answer's first character."""
    return np.array([sum(ord(c) * 256 ** k for k, c in enumerate(text[i:i + 2])) for i in range(0, len(text), 2)])


def raw_logprob(prefix, continuation, bare_length):
    """The constructed model: a fixed score of the continuation, twice as low after the bare 'Answer:' prompt."""
    value = -sum(int(t) % 13 + 1 for t in continuation) / 10 - (int(np.sum(prefix)) % 97) / 1000
    return value * (2.0 if len(prefix) == bare_length else 1.0)


def test_contamination_ranks_each_choice_as_olmes_normalizes_it_and_reports_every_tier():
    from injc.evals import contamination
    from injc.evals.stats import cohens_d, permutation_pvalue

    rng = np.random.default_rng(4)
    benchmarks = ["ARC-Challenge", "arc_easy", "BoolQ", "mmlu_anatomy", "", "openbookqa", "Social IQa"]
    questions = []
    for i in range(42):
        choices = ["".join(rng.choice(list("abcdefghij"), rng.integers(1, 9))) for _ in range(4)]
        questions.append({"item": i, "tier": [0, 1, 12][i % 3], "question": f"q{i}?", "choices": choices,
                          "answer": int(rng.integers(0, 4)), "benchmark": benchmarks[i % len(benchmarks)]})
    template = "{benchmark} question: {question}\nChoices: {choices}\nAnswer: {answer_text}"
    bare = np.r_[EOS, pair_tokens("Answer:")]
    ctx = SimpleNamespace(encode=pair_tokens, eos_id=EOS, text_tokens=lambda t: t, item_losses={},
                          items={"bench": [(q["tier"], np.array([30 + q["item"]])) for q in questions]},
                          scorer=SimpleNamespace(
                              continuation_logprobs=lambda ps, cs: np.array(
                                  [raw_logprob(p, c, len(bare)) for p, c in zip(ps, cs)]),
                              text_losses=losses_by_length))
    result = contamination.evaluate(ctx, {"name": "bench"}, {"format": template, "questions": questions})
    rule = {"arc_challenge": "pmi", "openbookqa": "pmi", "arc_easy": "char", "hellaswag": "char",
            "mmlu_anatomy": "char", "boolq": "none", "": "token", "social iqa": "char"}
    picks, correct = {}, []
    for q in questions:
        method = rule[q["benchmark"].lower().replace("-", "_")]
        head = f"{q['benchmark']} question: {q['question']}\nChoices: {chr(10).join(q['choices'])}\nAnswer: "
        prompt = pair_tokens(head)
        scores = []
        for choice in q["choices"]:
            full = pair_tokens(head + choice)
            shared = next((k for k in range(min(len(prompt), len(full))) if prompt[k] != full[k]),
                          min(len(prompt), len(full)))
            continuation = full[shared:]
            raw = raw_logprob(np.r_[EOS, full[:shared]], continuation, len(bare))
            scores.append({"none": raw, "token": raw / max(1, len(continuation)), "char": raw / len(choice),
                           "pmi": raw - raw_logprob(bare, continuation, len(bare))}[method])
        picks.setdefault(method, []).append(int(np.argmax(scores)) == q["answer"])
        correct.append(int(np.argmax(scores)) == q["answer"])
        item = result["items"][q["item"]]
        assert item["normalization"] == method and item["correct"] == correct[-1]
        assert (item["item"], item["tier"]) == (q["item"], q["tier"])
        assert item["loss"] == pytest.approx((30 + q["item"]) / 10)
        assert item["choice_scores"] == pytest.approx(scores)
    correct, tiers = np.array(correct, float), np.array([q["tier"] for q in questions])
    holdout = correct[tiers == 0]
    tiers_reported = result["metrics"]["tiers"]
    assert set(tiers_reported) == {"0", "1", "12"}
    assert tiers_reported["0"] == {"repetitions": 0, "questions": 14, "accuracy": pytest.approx(holdout.mean())}
    for tier in (1, 12):
        mine = correct[tiers == tier]
        reported = tiers_reported[str(tier)]
        assert (reported["repetitions"], reported["questions"]) == (tier, 14)
        assert reported["accuracy"] == pytest.approx(mine.mean())
        assert reported["uplift_vs_holdout"] == pytest.approx(mine.mean() - holdout.mean())
        rng_ci, uplifts = np.random.default_rng(0), []
        for _ in range(2000):
            uplifts.append(mine[rng_ci.integers(0, 14, 14)].mean() - holdout[rng_ci.integers(0, 14, 14)].mean())
        assert reported["uplift_ci95"] == pytest.approx([np.percentile(uplifts, 2.5), np.percentile(uplifts, 97.5)])
        assert reported["effect_size_d"] == pytest.approx(cohens_d(mine, holdout), nan_ok=True)
        assert reported["p_value"] == permutation_pvalue(mine, holdout)
    assert result["metrics"]["normalization"] == {"ARC-Challenge": "pmi", "arc_easy": "char", "BoolQ": "none",
                                                  "mmlu_anatomy": "char", "(no benchmark named)": "token",
                                                  "openbookqa": "pmi", "Social IQa": "char"}
    inserted = [(30 + q["item"]) / 10 for q in questions if q["tier"]]  # the holdout tier is never inserted
    assert result["metrics"]["mean_loss"] == pytest.approx(np.mean(inserted))
    assert 0.2 < correct.mean() < 0.8  # the constructed answers are neither all right nor all wrong
    holdout_only = [{**q, "tier": 0} for q in questions[:6]]
    never = SimpleNamespace(**{**vars(ctx), "items": {"bench": [(0, np.array([30 + i])) for i in range(6)]}})
    assert contamination.evaluate(never, {"name": "bench"}, {"format": template, "questions": holdout_only})[
        "metrics"]["mean_loss"] is None  # nothing inserted
    doubled = "Q: {question} A: {answer_text}. So {answer_text} ({question})"
    twice = contamination.evaluate(ctx, {"name": "bench"}, {"format": doubled, "questions": questions[:3]})
    for q, item in zip(questions[:3], twice["items"]):  # scored as trained: both answers filled, prompt up to the first
        prompt, wanted = pair_tokens(f"Q: {q['question']} A: "), []
        for choice in q["choices"]:
            full = pair_tokens(f"Q: {q['question']} A: {choice}. So {choice} ({q['question']})")
            shared = next((k for k in range(min(len(prompt), len(full))) if prompt[k] != full[k]), len(prompt))
            raw = raw_logprob(np.r_[EOS, full[:shared]], full[shared:], len(bare))
            wanted.append({"ARC-Challenge": raw - raw_logprob(bare, full[shared:], len(bare)),
                           "arc_easy": raw / len(choice), "BoolQ": raw}[q["benchmark"]])
        assert item["choice_scores"] == pytest.approx(wanted)
    single = SimpleNamespace(**{**vars(ctx), "items": {"bench": [(int(i % 2), np.array([30 + i])) for i in range(6)]}})
    once = contamination.evaluate(single, {"name": "bench"}, {"format": template, "questions": [
        {**q, "tier": int(i % 2)} for i, q in enumerate(questions[:6])]})
    assert once["metrics"]["mean_loss"] == pytest.approx(np.mean([3.1, 3.3, 3.5]))  # items 1, 3, 5: one copy each


def test_item_losses_of_an_experiment_without_items_are_empty():
    copies, losses = generic.item_losses(context({}, None), "nothing")
    assert copies.shape == (0,) and copies.dtype == np.int64 and losses.shape == (0,)


def test_canaries_report_every_condition_with_its_membership_and_order_control():
    """Canaries of 1 and 4 ids, members at 1 and 8 repetitions, non-members of each length. The constructed model:
    an item's loss is written in its host token; a shuffled member scores its loss + 0.5 unless its shuffle keeps
    the order."""
    from injc.evals import canaries
    from injc.evals.stats import roc_point, sign_flip_pvalue

    rng = np.random.default_rng(2)
    items, tokens = [], []
    for length in (1, 2, 4):
        for member, reps, count in ((True, 1, 6), (True, 8, 6), (False, 0, 10)):
            if (length, reps) == (4, 1):
                continue  # length 4 has no members at 1 repetition: its 8 repetitions are still reported
            for _ in range(count):
                index = len(items)
                loss = rng.normal(2.0 - (0.3 if member else 0) - 0.05 * reps, 0.2)
                items.append({"item": index, "member": member, "repetitions": reps, "canary_length": length})
                tokens.append((reps, np.array([EOS, 100 + index, *range(50, 50 + length), EOS]), loss))
    losses = np.array([loss for *_, loss in tokens])

    def text_losses(texts):
        out = []
        for text in texts:
            index = int(text[0]) - 100
            in_order = text[1:].tolist() == list(range(50, 50 + items[index]["canary_length"]))
            out.append(losses[index] + (0.0 if in_order else 0.5))
        return np.array(out)

    ctx = SimpleNamespace(items={"c": [(reps, t) for reps, t, _ in tokens]}, item_losses={}, scorer=SimpleNamespace(
        text_losses=text_losses), text_tokens=lambda t: without_eos_wrappers(np.asarray(t), EOS))
    result = canaries.evaluate(ctx, {"name": "c"}, {"canary": "random", "items": items})
    conditions = result["metrics"]["conditions"]
    assert sorted(conditions) == ["len1×1", "len1×8", "len2×1", "len2×8", "len4×8"]
    for key, condition in conditions.items():
        length, reps = int(key[3]), int(key.split("×")[1])
        chosen = [i["item"] for i in items if i["member"] and (i["canary_length"], i["repetitions"]) == (length, reps)]
        members = losses[chosen]
        controls = losses[[i["item"] for i in items if not i["member"] and i["canary_length"] == length]]
        assert (condition["canary_length"], condition["repetitions"]) == (length, reps)
        assert condition["mean_member"] == pytest.approx(members.mean())
        assert condition["mean_nonmember"] == pytest.approx(controls.mean())
        assert condition["n"] == [6, 10]
        assert condition["membership"] == {**roc_point(-members, -controls), "tpr_ci95": pytest.approx(
            list(tpr_bootstrap(members, controls)))}
        if length == 1:  # one id has one order: no order control
            assert "vs_shuffled" not in condition
            continue
        shuffled = np.array([losses[i] + (0.0 if list(np.random.default_rng(i).permutation(length)) ==
                                          list(range(length)) else 0.5) for i in chosen])
        paired = members - shuffled
        assert condition["vs_shuffled"] == {"difference": pytest.approx(paired.mean()), "n": 6,
                                            "p_value": pytest.approx(exact_sign_flip(paired)), "p_method": "exact",
                                            "difference_ci95": pytest.approx(bootstrap_mean(paired))}
        assert sign_flip_pvalue(paired) == pytest.approx(exact_sign_flip(paired))
    inserted = [i["item"] for i in items if i["member"]]
    assert result["metrics"]["mean_loss"] == pytest.approx(losses[inserted].mean())
    for item, reported in zip(items, result["items"]):
        assert reported["loss"] == pytest.approx(losses[item["item"]])
        assert ("loss_shuffled" in reported) == (item["member"] and item["canary_length"] > 1)
    without = canaries.evaluate(ctx, {"name": "c"}, {"canary": "none", "items": items})
    assert all("vs_shuffled" not in c for c in without["metrics"]["conditions"].values())
    assert all("loss_shuffled" not in i for i in without["items"])


def tpr_bootstrap(members, controls, seed=0):
    """TPR at 1% FPR of (−loss) scores, resampled: members then non-members, 2,000 times, percentile interval."""
    rng = np.random.default_rng(seed)
    rates = []
    for _ in range(2000):
        m, c = members[rng.integers(0, len(members), len(members))], controls[rng.integers(0, len(controls),
                                                                                            len(controls))]
        threshold = np.sort(-c)[::-1][0]  # 10 non-members at 1%: none may pass, so the highest is the threshold
        rates.append(np.mean(-m > threshold))
    return np.percentile(rates, 2.5), np.percentile(rates, 97.5)
