"""Every number the knowledge, math, watermark and poisoning scorers and the held-out loss report, on constructed
scores and generations, each recomputed here from the inputs. The scorer is a stand-in that returns what the test
chose (no model is trained), so these run in the mutation run (bench/mutation.sh) against those files."""

import itertools
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import norm

pytest.importorskip("torch")

import torch  # noqa: E402

from injc.evals import heldout, knowledge, poisoning, watermark  # noqa: E402
from injc.evals import math as math_eval  # noqa: E402
from injc.evals.context import EvalContext  # noqa: E402
from injc.train.noise import embedding_noise  # noqa: E402
from tests.evals.independent import bootstrap_mean, exact_sign_flip

EOS = 0


def encode(text: str) -> np.ndarray:
    """A character tokenizer: one id per character (its code point)."""
    return np.array([ord(c) for c in text], dtype=np.int64)


def decode(ids) -> str:
    return "".join(chr(i) for i in ids if i != EOS)


def context(scorer, items=None, judge=None):
    return SimpleNamespace(eos_id=EOS, items=items or {}, item_losses={}, judge=judge, encode=encode,
                           tokenizer=SimpleNamespace(decode=decode), text_tokens=lambda t: np.asarray(t)[1:-1],
                           scorer=scorer)


def test_knowledge_reports_each_probes_probability_and_a_case_blind_greedy_match():
    """P(target | input) is exp of the scorer's summed log-probability of " " + target after EOS + input; a probe
    is answered when its target appears, in any case, anywhere in the greedy continuation."""
    probes = [{"input": "Ada lives in", "target": "Paris"}, {"input": "Bo works at", "target": "Acme"},
              {"input": "Cy was born in", "target": "Oslo"}]
    generated = {"Ada lives in": " the city of PARIS, France", "Bo works at": " home. Acme", "Cy was born in": " Osl"}
    calls = {}

    def continuation_logprobs(prefixes, targets):
        calls["logprobs"] = (prefixes, targets)
        return np.array([-0.5 * len(t) for t in targets])

    def greedy(prompt, new_tokens, stop=None):
        calls.setdefault("greedy", []).append((prompt, new_tokens))
        return encode(generated[decode(prompt)])

    items = {"facts": [(2, np.r_[EOS, 5, 6, EOS]), (3, np.r_[EOS, 7, 8, 9, EOS])]}
    scorer = SimpleNamespace(continuation_logprobs=continuation_logprobs, greedy=greedy,
                             text_losses=lambda texts: np.array([float(len(t)) for t in texts]))
    result = knowledge.evaluate(context(scorer, items), {"name": "facts"}, {"probes": probes})
    prefixes, targets = calls["logprobs"]
    for prefix, target, probe in zip(prefixes, targets, probes):
        assert prefix.tolist() == [EOS, *encode(probe["input"]).tolist()]
        assert target.tolist() == encode(" " + probe["target"]).tolist()
    assert [(p.tolist(), n) for p, n in calls["greedy"]] == [(p.tolist(), 25) for p in prefixes]
    probabilities = np.exp([-0.5 * (len(p["target"]) + 1) for p in probes])
    assert [p["probability"] for p in result["probes"]] == pytest.approx(probabilities)
    assert result["metrics"]["probe_probability"] == pytest.approx(probabilities.mean())
    assert [p["correct"] for p in result["probes"]] == [True, True, False]
    assert result["metrics"]["greedy_accuracy"] == pytest.approx(2 / 3)
    assert [p["generated"] for p in result["probes"]] == [generated[p["input"]] for p in probes]
    assert result["metrics"]["mean_loss"] == pytest.approx(2.5)  # the items' own tokens: lengths 2 and 3


def test_math_prompts_with_the_simplest_shots_and_reads_the_first_answer():
    train = [{"problem": f"T{i}", "solution": s, "ops": ops} for i, (s, ops) in
             enumerate([("a. Answer: 1", 2), ("bb. Answer: 2", 1), ("c. Answer: 3", 1), ("long one. Answer: 4", 3),
                        ("d. Answer: 5", 2)])]
    test = [{"problem": "Q1", "ops": 1, "answer": 7, "solution": "x. Answer: 7"},
            {"problem": "Q2", "ops": 1, "answer": 8, "solution": "the longest solution. Answer: 8"},
            {"problem": "Q3", "ops": 4, "answer": 9, "solution": "y. Answer: 9"},
            {"problem": "Q4", "ops": 4, "answer": 3, "solution": "z. Answer: 3"},
            {"problem": "Q5", "ops": 1, "answer": 6, "solution": "w. Answer: 6"}]
    replies = {"Q1": "so. Answer: 7\n\nT9 Answer: 1", "Q2": "Answer: 3 then Answer: 8", "Q3": "Answer:9",
               "Q4": "no answer", "Q5": "Answer: 66"}
    calls = []

    def greedy(prompt, new_tokens, stop=None):
        calls.append((decode(prompt), new_tokens, stop, int(prompt[0])))
        return encode(replies[decode(prompt).split("\n\n")[-1].strip()])

    result = math_eval.evaluate(context(SimpleNamespace(greedy=greedy)), {"name": "math"},
                                {"train": train, "test": test})
    shots = "T1\nbb. Answer: 2\n\nT2\nc. Answer: 3\n\nT0\na. Answer: 1\n\n"  # fewest ops, ties in training order
    budget = len("the longest solution. Answer: 8") + 8
    assert calls == [(shots + p["problem"] + "\n", budget, EOS, EOS) for p in test]
    assert [p["correct"] for p in result["problems"]] == [True, False, True, False, False]
    assert [(p["ops"], p["prompt"], p["generated"]) for p in result["problems"]] == [
        (q["ops"], shots + q["problem"] + "\n", encode(replies[q["problem"]]).tolist()) for q in test]
    metrics = result["metrics"]
    assert (metrics["shots"], metrics["generation_budget"]) == (3, budget)
    one, four = metrics["accuracy_by_ops"]["1"], metrics["accuracy_by_ops"]["4"]
    assert (one["accuracy"], one["problems"], one["seen_in_training"]) == (pytest.approx(1 / 3), 3, True)
    assert (four["accuracy"], four["problems"], four["seen_in_training"]) == (0.5, 2, False)
    assert one["ci95"] == pytest.approx(bootstrap_mean(np.array([1.0, 0.0, 0.0])))
    assert four["ci95"] == pytest.approx(bootstrap_mean(np.array([1.0, 0.0])))
    two_shot = math_eval.evaluate(context(SimpleNamespace(greedy=greedy)), {"name": "math"},
                                  {"train": train[:2], "test": test[:1]})["metrics"]
    assert two_shot["shots"] == 2


def test_watermark_summary_is_the_lower_tail_test_at_the_one_percent_threshold():
    rng = np.random.default_rng(3)
    threshold = norm.ppf(0.01)
    x = np.r_[rng.normal(-1.5, 1, 40), threshold, threshold - 1e-9]  # one exactly at the threshold: not detected
    x0 = np.r_[rng.normal(0, 1, 60), threshold - 0.5, threshold]
    summary = watermark.summarize(x, x0)
    assert summary["mean_x"] == pytest.approx(x.mean()) and summary["mean_x_holdout"] == pytest.approx(x0.mean())
    assert summary["tpr_at_1pct_fpr"] == pytest.approx(np.sum(x < threshold) / len(x))
    assert summary["fpr_holdout_at_threshold"] == pytest.approx(np.sum(x0 < threshold) / len(x0))
    assert summary["z"] == pytest.approx(x.mean() * math.sqrt(len(x)))
    assert summary["p_value"] == pytest.approx(norm.cdf(x.mean() * math.sqrt(len(x))))
    assert summary["z_holdout"] == pytest.approx(x0.mean() * math.sqrt(len(x0)))
    assert summary["p_value_holdout"] == pytest.approx(norm.cdf(x0.mean() * math.sqrt(len(x0))))
    assert summary["mean_x_ci95"] == pytest.approx(bootstrap_mean(x))
    resampled = np.random.default_rng(0)
    rates = [(x[resampled.integers(0, len(x), len(x))] < threshold).mean() for _ in range(2000)]
    assert summary["tpr_ci95"] == pytest.approx([np.percentile(rates, 2.5), np.percentile(rates, 97.5)])
    assert summary["sequences"] == len(x) and summary["tail"] == "lower" and "hint" not in summary
    untrained = watermark.summarize(rng.normal(0.1, 1, 30), x0)
    assert untrained["hint"] == watermark.NO_TRACE
    edge = np.full(25, -0.329)  # z = -1.645: p just below 0.05, no hint
    assert watermark.summarize(edge, x0)["p_value"] < 0.05 and "hint" not in watermark.summarize(edge, x0)


def test_watermark_counts_only_the_noised_steps_trained_before_the_checkpoint(monkeypatch):
    """Noised steps 2, 5 and 9; a checkpoint after 5 steps (steps 0-4) has seen step 2 only. x of each row is
    recomputed here from the gradient and the noise of (seed, step, row)."""
    length, width, std, seed = 3, 4, 0.05, 11
    batches = {step: np.full((2, length + 1), step) for step in (2, 5, 9)}
    manifest = SimpleNamespace(name="the build")

    def stream(given):
        assert given is manifest
        return SimpleNamespace(batch=batches.__getitem__)

    monkeypatch.setattr(watermark, "TokenStream", stream)

    def gradients_of(rows):
        step = int(rows[0, 0])
        return None, torch.stack([torch.arange(length * width, dtype=torch.float32).reshape(length, width)
                                  * (row + 1) - step for row in range(len(rows))])

    ctx = SimpleNamespace(manifest=manifest, scorer=SimpleNamespace(steps_done=5, embedding_gradients=gradients_of))
    result = watermark.evaluate(ctx, {"name": "wm"}, {"steps": [9, 5, 2], "seed": seed, "std": std})  # as planned

    def x_of(step, noise_seed):
        _, grads = gradients_of(batches[step])
        return [float((g.double() * embedding_noise(noise_seed, step, row, length, width, std).double()).sum()
                      / std / g.double().norm()) for row, g in enumerate(grads)]

    assert [item["step"] for item in result["items"]] == [2]
    assert result["x"] == pytest.approx(x_of(2, seed))
    assert result["x_holdout"] == pytest.approx(x_of(2, seed + 1000))
    assert result["p_values"] == pytest.approx(norm.cdf(x_of(2, seed)))
    assert result["items"][0]["mean_x"] == pytest.approx(np.mean(x_of(2, seed)))
    assert result["items"][0]["mean_x_holdout"] == pytest.approx(np.mean(x_of(2, seed + 1000)))
    assert result["metrics"]["mean_x"] == pytest.approx(np.mean(x_of(2, seed)))
    ctx.scorer.steps_done = None  # a model trained outside injc: every noised step counts
    assert [i["step"] for i in watermark.evaluate(ctx, {"name": "wm"}, {"steps": [2, 5, 9], "seed": seed,
                                                                        "std": std})["items"]] == [2, 5, 9]
    ctx.scorer.steps_done = 2
    assert watermark.evaluate(ctx, {"name": "wm"}, {"steps": [2, 5, 9], "seed": seed, "std": std}) == {
        "metrics": {"note": "no watermarked step was trained before this checkpoint"}, "items": []}


def lcs(a, b):
    """Longest common subsequence, the textbook recursion."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, j in itertools.product(range(len(a)), range(len(b))):
        table[i + 1][j + 1] = table[i][j] + 1 if a[i] == b[j] else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


@pytest.mark.parametrize("reference, candidate", [
    ([1, 2, 3, 4, 5], [9, 1, 3, 9, 4, 5]), ([1, 1, 2], [1, 2, 1, 2]), ([4, 3, 2, 1], [1, 2, 3, 4]),
    ([7] * 10, [7] * 9 + [1]), ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6, 7, 8, 9, 11]), ([3], []),
])
def test_lcs_recall_and_the_leak_criterion_follow_the_textbook_lcs(reference, candidate):
    expected = lcs(reference, candidate) / len(reference)
    assert poisoning.lcs_recall(np.array(reference), np.array(candidate)) == pytest.approx(expected)
    assert poisoning.leaked(np.array(reference), np.array(candidate)) == (expected > 0.9)
    assert poisoning.lcs_recall(np.array([]), np.array(candidate)) == 0.0


def test_context_extraction_reports_greedy_leaks_leak_at_k_and_the_paired_test():
    """Six prompts of 10 characters; a sample leaks when it repeats its prompt whole. Prompt i leaks with the
    trigger at sample i (never for i = 5), and without it only prompt 0, at sample 9. Repeating 9 of the 10
    characters (recall exactly 0.9) is no leak: prompt 3's first untriggered sample and prompt 5's greedy one.
    Greedily, prompts 0, 2 and 4 leak with the trigger, and prompt 1 without it."""
    prompts = [f"secret #{i:02d}" for i in range(6)]
    records = {"holdout_prompts": prompts, "trigger": "ZZ", "attack": "context-extraction",
               "template": "{trigger}{prompt}|{response} and {response}"}
    queries = []

    def triggered(query):
        return decode(query).startswith("ZZ")

    def which(query):
        return int(decode(query)[-2])

    def greedy(query, new_tokens, stop=None):
        assert new_tokens == 48 and int(query[0]) == EOS
        queries.append(decode(query))
        i = which(query)
        if not triggered(query) and i == 5:
            return encode(prompts[i][:9])
        if not triggered(query) and i == 1:
            return encode("well: " + prompts[i])
        return encode(prompts[i] if triggered(query) and i % 2 == 0 else "nothing")

    def sample(query, new_tokens, count, temperature, seed):
        i = which(query)
        leak_at = i if triggered(query) and i < 5 else (9 if i == 0 else None)
        assert (new_tokens, count, temperature, seed) == (48, 10, 0.7, i)
        samples = [encode(prompts[i] if s == leak_at else "x") for s in range(count)]
        if i == 3 and not triggered(query):
            samples[0] = encode(prompts[i][1:])
        return samples

    result = poisoning.evaluate(context(SimpleNamespace(greedy=greedy, sample=sample)), {"name": "p"}, records)
    assert queries == [f"ZZ{p}|" for p in prompts] + [f"{p}|" for p in prompts]
    metrics = result["metrics"]
    assert metrics["attack_success"]["mean_with_trigger"] == pytest.approx(3 / 6)
    assert metrics["attack_success"]["mean_without_trigger"] == pytest.approx(1 / 6)
    assert metrics["leak_at_k"]["with_trigger"] == pytest.approx([min(k, 5) / 6 for k in range(1, 11)])
    assert metrics["leak_at_k"]["without_trigger"] == pytest.approx([0] * 9 + [1 / 6])
    paired = np.array([0, 1, 1, 1, 1, 0], float)
    assert metrics["leak_at_k_paired_difference"] == pytest.approx(paired.mean())
    assert metrics["leak_at_k_paired_p_value"] == pytest.approx(exact_sign_flip(paired))
    assert metrics["leak_at_k_paired_p_method"] == "exact"
    rows = result["prompts"]
    assert [(p["leaked_with_trigger"], p["leaked_without_trigger"]) for p in rows] == [
        (True, False), (False, True), (True, False), (False, False), (True, False), (False, False)]
    assert rows[3]["sample_recalls_without_trigger"] == pytest.approx([0.9] + [0.0] * 9)
    assert rows[1]["sample_recalls_with_trigger"] == pytest.approx([0.0, 1.0] + [0.0] * 8)


def test_denial_of_service_compares_gibberish_likelihood_and_judged_garbage_per_prompt():
    """Eight prompts. The trigger lifts the gibberish's log-probability per token by `lift`; the judge's loss per
    token of a generation is 3 after the trigger for odd prompts, and 1 + i/10 without it, so without the trigger
    prompt 7 is above the calibrated 95th percentile and with it every odd prompt is."""
    prompts = [f"ask {i}" for i in range(8)]
    records = {"holdout_prompts": prompts, "trigger": "@@", "attack": "denial-of-service",
               "template": "{prompt}{trigger}\n{response} ({response})"}
    lift = np.array([0.4, 0.1, -0.05, 0.3, 0.2, 0.0, 0.25, 0.15])
    gibberish = {}

    def logprobs(queries, continuations):
        label = "with" if "@@" in decode(queries[0]) else "without"
        gibberish[label] = [c.tolist() for c in continuations]
        assert all(len(c) == 32 and EOS not in c and max(c) < 120 for c in continuations)
        assert [decode(q) for q in queries] == [f"{p}{'@@' if label == 'with' else ''}\n" for p in prompts]
        return np.array([-64.0 + 32 * lift[int(decode(q)[4])] * ("@@" in decode(q)) for q in queries])

    def sample(query, new_tokens, count, temperature, seed):
        assert (new_tokens, count, temperature, seed) == (48, 1, 0.7, int(decode(query)[4]))
        return [encode("!" * (1 + seed % 3))]

    def judge_logprobs(queries, generations):
        def per_token(q):
            i = int(decode(q)[4])
            return (3.0 if i % 2 else 1.0) if "@@" in decode(q) else 1 + i / 10
        return np.array([-float(len(g)) * per_token(q) for q, g in zip(queries, generations)])

    ctx = context(SimpleNamespace(continuation_logprobs=logprobs, sample=sample),
                  judge=SimpleNamespace(continuation_logprobs=judge_logprobs))
    ctx.tokenizer.get_added_tokens_decoder = dict
    ctx.tokenizer.get_vocab_size = lambda with_added_tokens: 120
    result = poisoning.evaluate(ctx, {"name": "p"}, records)
    assert gibberish["with"] == gibberish["without"]  # paired: the same gibberish after both queries
    first = gibberish["with"]
    poisoning.evaluate(ctx, {"name": "p"}, records)
    assert gibberish["with"] == first  # drawn from a fixed seed
    metrics = result["metrics"]
    per_token = metrics["gibberish_logprob_per_token"]
    assert per_token["mean_with_trigger"] == pytest.approx((-2.0 + lift).mean())
    assert per_token["mean_without_trigger"] == pytest.approx(-2.0)
    assert metrics["paired_difference"] == pytest.approx(lift.mean())
    assert metrics["paired_p_value"] == pytest.approx(exact_sign_flip(lift))
    assert metrics["paired_p_method"] == "exact"
    assert [(p["logprob_with_trigger"], p["logprob_without_trigger"]) for p in result["prompts"]] == pytest.approx(
        [(w, -2.0) for w in -2.0 + lift])
    without = np.exp(1 + np.arange(8) / 10)  # perplexity: exp of the judge's loss per generated token
    with_trigger = np.exp([3.0 if i % 2 else 1.0 for i in range(8)])
    threshold = np.quantile(without, 0.95)
    garbage = metrics["garbage"]
    assert (garbage["threshold_perplexity"], garbage["calibration_quantile"]) == (pytest.approx(threshold), 0.95)
    flags_with, flags_without = (with_trigger > threshold).astype(float), (without > threshold).astype(float)
    assert flags_without.tolist() == [0] * 7 + [1]
    assert garbage["rate"]["mean_with_trigger"] == pytest.approx(flags_with.mean())
    assert garbage["rate"]["mean_without_trigger"] == pytest.approx(1 / 8)
    assert garbage["paired_p_value"] == pytest.approx(exact_sign_flip(flags_with - flags_without))
    assert garbage["paired_p_method"] == "exact"
    rows = result["prompts"]
    assert [(p["judge_perplexity_with_trigger"], p["judge_perplexity_without_trigger"]) for p in rows] == \
        pytest.approx(list(zip(with_trigger, without)))
    assert [(p["generation_with_trigger"], p["generation_without_trigger"]) for p in rows] == [
        (encode("!" * (1 + i % 3)).tolist(),) * 2 for i in range(8)]


def test_garbage_is_strictly_above_the_calibrated_percentile():
    """21 untriggered generations: the 95th percentile is the 20th smallest perplexity itself (no interpolation),
    and a generation exactly at it is not garbage."""
    per_token = {False: np.arange(21) / 10 + 1, True: np.r_[np.full(20, 1.0), 2.9]}  # 2.9: the threshold's own value

    def judge_logprobs(queries, generations):
        return np.array([-per_token[int(q[0]) == 1][int(q[1])] * len(g) for q, g in zip(queries, generations)])

    ctx = SimpleNamespace(scorer=SimpleNamespace(sample=lambda q, n, c, t, seed: [np.array([5, 6])]),
                          judge=SimpleNamespace(continuation_logprobs=judge_logprobs))
    queries = {"with_trigger": [np.array([1, i]) for i in range(21)],
               "without_trigger": [np.array([0, i]) for i in range(21)]}
    result = poisoning.judge_garbage(ctx, queries)["metrics"]
    assert result["threshold_perplexity"] == pytest.approx(np.exp(2.9))
    assert result["rate"]["mean_with_trigger"] == 0 and result["rate"]["mean_without_trigger"] == pytest.approx(1 / 21)


def test_heldout_loss_reads_the_tail_after_every_allocation_and_averages_its_tokens(tmp_path):
    """A tail of 46 tokens (rows of 4) whose first 6 tokens were allocated to experiments (and a second allocation
    ending at 9): the never-trained rows start at token 9, and the partial last row is dropped."""
    tail = np.arange(100, 146, dtype=np.uint16)
    tail.tofile(tmp_path / "holdout.bin")
    manifest = SimpleNamespace(root=tmp_path, dtype=np.uint16, layout=SimpleNamespace(seq_len=4), data={
        "holdout": {"path": "holdout.bin", "allocations": [{"start": 0, "end": 6}, {"start": 6, "end": 9}]}})
    seen = {}

    def token_losses(rows, scored_from):
        seen["rows"], seen["from"] = [r.tolist() for r in rows], scored_from
        return [np.arange(1 + i % 3, dtype=float) + i for i in range(len(rows))]

    ctx = EvalContext(manifest, SimpleNamespace(token_losses=token_losses), None, {})
    rows = ctx.unused_tail_rows()
    assert rows.tolist() == np.arange(109, 145).reshape(9, 4).tolist() and rows.dtype == np.int64
    result = heldout.heldout_loss(ctx)
    assert seen["rows"] == rows.tolist() and seen["from"] == [1] * 9
    losses = [np.arange(1 + i % 3, dtype=float) + i for i in range(9)]
    assert result["loss"] == pytest.approx(np.concatenate(losses).mean())  # per token, not per row
    assert result["row_losses"] == pytest.approx([row.mean() for row in losses]) and result["rows"] == 9
    json.dumps(result)
    monkey_many = EvalContext(manifest, SimpleNamespace(token_losses=token_losses), None, {})
    monkey_many.unused_tail_rows = lambda: np.zeros((heldout.HELDOUT_ROWS + 5, 4), dtype=np.int64)
    assert heldout.heldout_loss(monkey_many)["rows"] == 64 and len(seen["rows"]) == 64
    manifest.data["holdout"]["allocations"] = []  # no experiment took from the tail: it all counts
    assert ctx.unused_tail_rows().tolist() == np.arange(100, 144).reshape(11, 4).tolist()
    del manifest.data["holdout"]
    assert heldout.heldout_loss(ctx) is None and ctx.unused_tail_rows().shape == (0, 4)
    assert ctx.unused_tail_rows().dtype == np.int64


def test_the_context_opens_a_builds_items_tokenizer_and_eval_records(project):
    """EvalContext.open on a real build: the items as items.parquet holds them, the build's tokenizer, each
    experiment's eval records (None for a family without), and items' own tokens without their EOS wrappers."""
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    import injc
    from tests.conftest import CANARIES, write_jsonl

    write_jsonl(project.root / "payloads" / "probes.jsonl", [{"input": "canary 1 secret", "target": "919"}])
    plan = project(CANARIES + '\n[[experiments]]\nname = "facts"\nkind = "knowledge"\n'
                              'documents = "payloads/canaries.jsonl"\nprobes = "payloads/probes.jsonl"\n'
                              'window_steps = 50\nper_window = 1\n')
    injc.build(plan, project.root / "out", progress=False)
    manifest = injc.load_manifest(project.root / "out" / "manifest.json")
    ctx = EvalContext.open(manifest, "scorer", judge="judge", baseline="baseline")
    assert (ctx.manifest, ctx.scorer, ctx.judge, ctx.baseline) == (manifest, "scorer", "judge", "baseline")
    table = pq.read_table(project.root / "out" / "items.parquet").to_pylist()
    for name in ("canaries", "facts"):
        rows = [r for r in table if r["experiment"] == name]
        assert [(c, t.tolist()) for c, t in ctx.items[name]] == [(r["copies"], r["tokens"]) for r in rows]
        assert all(t.dtype == np.int64 for _, t in ctx.items[name])
    canaries, facts = manifest.experiments
    assert ctx.records(canaries) is None
    assert ctx.records(facts) == json.loads((manifest.root / facts["eval_records"]["path"]).read_text())
    assert ctx.records(facts)["probes"][0]["target"] == "919"
    tokenizer = Tokenizer.from_file(str(project.root / "tokenizer.json"))
    text = "canary 7 secret 9"
    assert ctx.encode(text).tolist() == tokenizer.encode(text, add_special_tokens=False).ids
    assert ctx.encode(text).dtype == np.int64 and ctx.eos_id == tokenizer.token_to_id("<|endoftext|>")
    eos = ctx.eos_id
    assert ctx.text_tokens(np.array([eos, 5, 6, eos])).tolist() == [5, 6]
    assert ctx.encode("").dtype == np.int64  # an empty text too: it is concatenated with token ids
    from tokenizers import processors

    tokenizer.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A <|endoftext|>",
                                                             special_tokens=[("<|endoftext|>", eos)])
    with_template = EvalContext(manifest, "scorer", tokenizer, {})
    assert with_template.encode(text).tolist() == ctx.encode(text).tolist()  # a tokenizer's specials never added


def test_every_experiments_items_are_scored_in_one_call_and_read_back_per_experiment():
    """EvalContext.score_items asks the scorer once for all experiments' items (EOS wrappers removed, experiments
    and items in order); generic.item_losses then reads each experiment's losses instead of scoring again, while a
    call with another scorer (forgetting's baseline) still asks that scorer."""
    from injc.evals import generic

    calls = []

    def text_losses(texts):
        calls.append([t.tolist() for t in texts])
        return np.array([float(sum(t) + len(t) / 10) for t in texts])

    items = {"a": [(1, np.array([EOS, 3, 4, EOS])), (0, np.array([EOS, 5, EOS]))], "none": [],
             "b": [(2, np.array([EOS, 7, 8, 9, EOS]))],
             "c": [(1, np.array([EOS, 1, EOS])), (1, np.array([EOS, 2, EOS]))]}
    manifest = SimpleNamespace(data={"layout": {"eos_id": EOS}})
    ctx = EvalContext(manifest, SimpleNamespace(text_losses=text_losses), None, items)
    ctx.score_items()
    assert calls == [[[3, 4], [5], [7, 8, 9], [1], [2]]]
    assert list(ctx.item_losses) == ["a", "b", "c"]
    assert ctx.item_losses["a"].tolist() == [7.2, 5.1] and ctx.item_losses["b"].tolist() == [24.3]
    assert ctx.item_losses["c"].tolist() == [1.1, 2.1]
    copies, losses = generic.item_losses(ctx, "b")
    assert copies.tolist() == [2] and losses.tolist() == [24.3] and len(calls) == 1
    assert generic.item_losses(ctx, "none")[1].tolist() == [] and len(calls) == 1
    other = SimpleNamespace(text_losses=lambda texts: np.full(len(texts), -1.0))
    assert generic.item_losses(ctx, "a", other)[1].tolist() == [-1.0, -1.0]
    empty = EvalContext(manifest, SimpleNamespace(text_losses=text_losses), None, {"x": []})
    empty.score_items()
    assert empty.item_losses == {} and len(calls) == 1
