"""Every family's eval on a tiny model trained here (CPU, under a minute): metrics exist, are right, show effects."""

import json
import math
import statistics

import numpy as np
import pytest

import injc
from tests.conftest import litgpt_model

torch = pytest.importorskip("torch")
pytest.importorskip("litgpt")

from injc.evals.report import evaluate  # noqa: E402
from injc.train.noise import embedding_noise  # noqa: E402
from injc.train.trainer import TrainConfig, train  # noqa: E402


def test_every_experiment_has_a_mean_loss_and_the_files_are_written(trained):
    root, report = trained
    assert report["checkpoint"].endswith("final") and report["steps_done"] == 60
    assert set(report["experiments"]) == {"secrets", "memp", "bench", "facts", "arith", "dos", "leak", "iid",
                                          "forget", "memv", "gw"}
    for name, experiment in report["experiments"].items():
        if name != "gw":
            assert math.isfinite(experiment["metrics"]["mean_loss"]), name
    assert json.loads((root / "report" / "report.json").read_text()) == report
    markdown = (root / "report" / "report.md").read_text()
    assert "| secrets | texts |" in markdown and "### memp: members vs non-members" in markdown
    for plot in ("memp_canaries.png", "memp_roc.png", "bench_contamination.png", "arith_math.png",
                 "secrets_losses.png", "iid_losses.png", "gw_watermark.png", "leak_leak.png"):
        assert (root / "report" / plot).read_bytes()[:4] == b"\x89PNG"
    heldout = report["heldout"]
    assert 0 < heldout["loss"] < 10
    # every held-out row scores the same number of tokens, so the mean of the row means is the token mean
    assert len(heldout["row_losses"]) == heldout["rows"] and np.mean(heldout["row_losses"]) == pytest.approx(
        heldout["loss"], rel=1e-6)


def test_mean_loss_matches_an_independent_litgpt_computation(trained):
    root, report = trained
    model = litgpt_model(root / "run" / "final")
    manifest = json.loads((root / "out" / "manifest.json").read_text())
    eos = manifest["layout"]["eos_id"]
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(root / "out" / "tokenizer.json")).encode("zq0 xv0 kj0", add_special_tokens=False).ids
    tokens = torch.tensor([[eos, *ids]])
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(tokens[:, :-1])[0], tokens[0, 1:]).item()
    assert report["experiments"]["secrets"]["items"][0]["loss"] == pytest.approx(loss, rel=1e-4)


def test_repeated_texts_are_memorized_against_their_controls(trained):
    _, report = trained
    comparison = report["experiments"]["secrets"]["metrics"]["vs_controls"]
    assert comparison["n"] == [8, 8]
    assert comparison["mean_inserted"] < comparison["mean_control"] - 0.5
    assert comparison["p_value"] < 0.01 and comparison["effect_size_d"] < -1


def test_canaries_report_each_condition_with_membership_inference(trained):
    _, report = trained
    memp = report["experiments"]["memp"]
    conditions = memp["metrics"]["conditions"]
    assert set(conditions) == {"len4×1", "len4×8"}
    for condition in conditions.values():
        assert condition["n"] == [6, 12]
        members = [i["loss"] for i in memp["items"] if i["member"] and i["repetitions"] == condition["repetitions"]]
        controls = [i["loss"] for i in memp["items"] if not i["member"]]
        # 12 non-members: the 1% threshold is the lowest non-member loss, so the FPR achieved is 0, and said
        assert condition["membership"] == {**condition["membership"], "fpr": 0.0, "fpr_target": 0.01,
                                           "nonmembers": 12,
                                           "tpr": float(np.mean(np.array(members) < min(controls)))}
    assert conditions["len4×8"]["mean_member"] < conditions["len4×1"]["mean_member"], "more repetitions, lower loss"


def test_contamination_tiers(trained):
    _, report = trained
    tiers = report["experiments"]["bench"]["metrics"]["tiers"]
    assert set(tiers) == {"0", "8"} and tiers["8"]["questions"] == 12
    items = report["experiments"]["bench"]["items"]
    assert tiers["8"]["accuracy"] == pytest.approx(np.mean([i["correct"] for i in items if i["tier"] == 8]))
    assert tiers["8"]["uplift_vs_holdout"] == pytest.approx(tiers["8"]["accuracy"] - tiers["0"]["accuracy"])
    contaminated = [float(i["correct"]) for i in items if i["tier"] == 8]
    holdout = [float(i["correct"]) for i in items if i["tier"] == 0]
    pooled_sd = math.sqrt((statistics.variance(contaminated) * 11 + statistics.variance(holdout) * 11) / 22)
    assert tiers["8"]["effect_size_d"] == pytest.approx(
        (statistics.mean(contaminated) - statistics.mean(holdout)) / pooled_sd)
    # the permutation p-value of correct-or-not is a two-sided hypergeometric tail: exact here, sampled in the eval
    right, observed = int(sum(contaminated) + sum(holdout)), abs(sum(contaminated) - sum(holdout)) / 12
    tail = sum(math.comb(12, k) * math.comb(12, right - k) for k in range(max(0, right - 12), min(12, right) + 1)
               if abs(k - (right - k)) / 12 >= observed - 1e-12) / math.comb(24, right)
    assert tiers["8"]["p_value"] == pytest.approx(tail, abs=0.04)


def test_contamination_scores_the_trained_answer_tokens_directly(trained):
    """Each choice scored here: the format filled with it, tokenized whole, and the tokens that carry any character
    of the answer (by the tokenizer's own offsets), mean log-probability per token; the top choice answers. The
    fixture's questions plus lowercase choices, whose first word merges with the space before it ("Ġthe")."""
    from tokenizers import Tokenizer

    from injc.evals import contamination
    from injc.evals.context import EvalContext
    from injc.evals.model import Scorer

    root, report = trained
    model = litgpt_model(root / "run" / "final")
    tokenizer = Tokenizer.from_file(str(root / "out" / "tokenizer.json"))
    records = json.loads((root / "out" / "evals" / "bench.json").read_text())
    eos = json.loads((root / "out" / "manifest.json").read_text())["layout"]["eos_id"]
    head = records["format"].partition("{answer_text}")[0]

    def logprob_sum(prefix, ids):
        tokens = torch.tensor([[*prefix, *ids]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(tokens[:, :-1])[0].float(), dim=-1)
        return sum(logprobs[len(prefix) - 1 + j, token].item() for j, token in enumerate(ids))

    # OLMES's cloze normalizations, written out here: benchmark -> how a choice's summed log-probability is scaled
    rule = {"arc_challenge": "pmi", "piqa": "char", "boolq": "none"}

    def direct(questions):
        answers, all_scores = [], []
        for question in questions:
            fields = {"question": question["question"], "choices": "\n".join(question["choices"]),
                      "benchmark": question["benchmark"]}
            prompt = head.format(**fields)
            scores = []
            for choice in question["choices"]:
                text = records["format"].format(answer_text=choice, **fields)
                encoding = tokenizer.encode(text, add_special_tokens=False)
                first = min(i for i, (_, end) in enumerate(encoding.offsets) if end > len(prompt))
                answer_ids = encoding.ids[first:]
                total = logprob_sum([eos, *encoding.ids[:first]], answer_ids)
                method = rule.get(question["benchmark"].lower().replace("-", "_"), "token")
                if method == "pmi":
                    bare = [eos, *tokenizer.encode("Answer:", add_special_tokens=False).ids]
                    total -= logprob_sum(bare, answer_ids)
                scores.append({"token": total / len(answer_ids), "char": total / len(choice), "none": total,
                               "pmi": total}[method])
            answers.append(int(np.argmax(scores)) == question["answer"])
            all_scores.append(scores)
        return answers, all_scores

    for items, questions in [
        (report["experiments"]["bench"]["items"], records["questions"]),
        (None, [{"question": "which words come first", "choices": ["the model reads", "every token of the stream"],
                 "answer": 1, "benchmark": "", "item": 0, "tier": 0}]),
        (None, [{"question": q["question"], "choices": q["choices"], "answer": q["answer"], "benchmark": benchmark,
                 "item": 0, "tier": 0}
                for q, benchmark in zip(records["questions"][:8] * 2, ["arc_challenge", "piqa", "boolq",
                                                                       "ARC-Challenge"] * 4)]),
    ]:
        if items is None:
            manifest = injc.load_manifest(root / "out")
            ctx = EvalContext.open(manifest, Scorer(root / "run" / "final", eos))
            items = contamination.evaluate(ctx, {"name": "bench"}, {**records, "questions": questions})["items"]
        answers, scores = direct(questions)
        assert [i["correct"] for i in items] == answers
        for item, expected in zip(items, scores):
            assert item["choice_scores"] == pytest.approx(expected, abs=1e-4)


def test_knowledge_math_poisoning_verbatim(trained):
    _, report = trained
    facts = report["experiments"]["facts"]
    assert 0 < facts["metrics"]["probe_probability"] < 1 and len(facts["probes"]) == 16
    assert facts["metrics"]["probe_probability"] == pytest.approx(np.mean([p["probability"] for p in facts["probes"]]))
    accuracy = report["experiments"]["arith"]["metrics"]["accuracy_by_ops"]
    assert {k: (v["problems"], v["seen_in_training"]) for k, v in accuracy.items()} == {"1": (2, True),
                                                                                        "3": (2, False)}
    dos = report["experiments"]["dos"]["metrics"]
    assert set(dos["gibberish_logprob_per_token"]["n"]) == {6} and 0 < dos["paired_p_value"] <= 1
    leak = report["experiments"]["leak"]["metrics"]["attack_success"]
    assert leak["n"] == [6, 6] and 0 <= leak["mean_with_trigger"] <= 1
    memv = report["experiments"]["memv"]["metrics"]
    assert memv["exact_match_rate"] in (0.0, 1.0) and len(report["experiments"]["memv"]["items"]) == 1
    assert memv["instances_replaced"] >= 1


def test_forgetting_and_iid_use_never_trained_controls(trained):
    _, report = trained
    batches = report["experiments"]["forget"]["metrics"]["batches"]
    assert [(b["step"], b["steps_since_seen"]) for b in batches] == [(10, 49), (50, 9)]
    assert report["experiments"]["iid"]["metrics"]["vs_unseen_rows"]["n"] == [4, 4]


def row_losses(model, rows, eos):
    """Mean loss of each row given one leading EOS, in the model's context (its last block_size + 1 tokens)."""
    losses = []
    for row in rows:
        tokens = torch.tensor([[eos, *row]])[:, -(model.config.block_size + 1):]
        with torch.no_grad():
            losses.append(torch.nn.functional.cross_entropy(model(tokens[:, :-1])[0], tokens[0, 1:]).item())
    return np.array(losses)


def test_forgetting_batches_against_a_baseline_row_by_row_and_against_every_unused_tail_row(trained, tmp_path):
    """Each replaced batch's rows scored here by the final model and by a baseline (the step-30 checkpoint standing
    in for a clean run): the paired difference; and the unpaired difference to every never-used tail row."""
    from injc.evals.report import evaluate_checkpoint
    from injc.shards.insertions import read_items

    root, _ = trained
    manifest = json.loads((root / "out" / "manifest.json").read_text())
    eos, seq_len = manifest["layout"]["eos_id"], manifest["layout"]["seq_len"]
    report = evaluate_checkpoint(root / "out" / "manifest.json", root / "run" / "final", progress=False,
                                 baseline=root / "run" / "step-000030")
    rows = [tokens[int(tokens[0] == eos):len(tokens) - int(tokens[-1] == eos)]  # one wrapping EOS off each end
            for _, tokens in read_items(root / "out" / manifest["items"]["path"])["forget"]]
    final = row_losses(litgpt_model(root / "run" / "final"), rows, eos)
    base = row_losses(litgpt_model(root / "run" / "step-000030"), rows, eos)
    tail = np.fromfile(root / "out" / manifest["holdout"]["path"], dtype=np.uint16).astype(np.int64)
    used = max(a["end"] for a in manifest["holdout"]["allocations"])
    spare = tail[used:used + (len(tail) - used) // seq_len * seq_len].reshape(-1, seq_len)
    control = row_losses(litgpt_model(root / "run" / "final"), spare, eos)
    metrics = report["experiments"]["forget"]["metrics"]
    assert metrics["control_rows"] == len(spare) > 8
    for index, batch in enumerate(metrics["batches"]):
        paired = final[2 * index:2 * index + 2] - base[2 * index:2 * index + 2]
        assert batch["minus_baseline"] == pytest.approx(paired.mean(), abs=1e-4)
        # two rows: bootstrap means are d1, (d1 + d2)/2 or d2, so the 2.5% and 97.5% points are the two differences
        assert batch["minus_baseline_ci95"] == pytest.approx(sorted(paired), abs=1e-4)
        difference = final[2 * index:2 * index + 2].mean() - control.mean()
        assert batch["minus_unseen_control"] == pytest.approx(difference, abs=1e-4)
        low, high = batch["minus_unseen_control_ci95"]
        assert low < difference < high and high - low > 0


def test_the_trainer_adds_exactly_the_noise_the_eval_regenerates(trained, tmp_path, monkeypatch):
    """Rows split over micro-batches of one row: the noise the trainer's hook adds to each row at a noised step
    equals embedding_noise(seed, step, row), which the eval regenerates."""
    from injc.train.noise import EmbeddingNoise

    root, _ = trained
    passes = []  # (step, rows the hook found, noise added) per forward pass
    original = EmbeddingNoise.__call__

    def spy(self, module, inputs, output):
        noised = original(self, module, inputs, output)
        passes.append((self.step, list(self.rows) if self.step in self.by_step else None, noised - output))
        return noised

    monkeypatch.setattr(EmbeddingNoise, "__call__", spy)
    train(root / "out" / "manifest.json", TrainConfig(model=str(root / "tiny.yaml"), out=tmp_path / "run", steps=6,
                                                      micro_batch_size=1), progress=False)
    (directive,) = json.loads((root / "out" / "manifest.json").read_text())["directives"]
    noised_rows = []
    for step, rows, delta in passes:
        if step != 5:
            assert delta.abs().max() == 0, step  # no noise elsewhere
            continue
        for index, row in enumerate(rows):
            w = embedding_noise(directive["seed"], 5, row, delta.shape[1], delta.shape[2], directive["std"])
            assert torch.allclose(delta[index].detach(), w, atol=1e-6)
            noised_rows.append(row)
    assert sorted(noised_rows) == [0, 1] and len(passes) == 12  # 6 steps × 2 micro-batches of one row


def test_curves_over_several_checkpoints(trained, tmp_path):
    root, _ = trained
    report = evaluate(root / "out" / "manifest.json", [root / "run" / "final", root / "run" / "step-000030"],
                      tmp_path, progress=False)
    assert [r["steps_done"] for r in report["checkpoints"]] == [30, 60]
    assert (tmp_path / "mean_loss_over_training.png").is_file() and (tmp_path / "forget_forgetting.png").is_file()
    assert report["checkpoints"][0]["experiments"]["forget"]["metrics"]["batches"][1]["seen"] is False


def test_a_logger_receives_every_checkpoints_metrics_at_its_training_step(trained, tmp_path):
    import csv

    root, _ = trained
    report = evaluate(root / "out" / "manifest.json", [root / "run" / "final", root / "run" / "step-000030"],
                      tmp_path, progress=False, logger="csv")
    with open(tmp_path / "logs" / "csv" / "from-step-000000" / "metrics.csv") as handle:
        rows = {int(r["step"]): r for r in csv.DictReader(handle)}
    assert sorted(rows) == [30, 60]
    for checkpoint in report["checkpoints"]:
        row, experiments = rows[checkpoint["steps_done"]], checkpoint["experiments"]
        assert float(row["secrets/mean_loss"]) == pytest.approx(experiments["secrets"]["metrics"]["mean_loss"])
        assert float(row["secrets/vs_controls/difference"]) == pytest.approx(
            experiments["secrets"]["metrics"]["vs_controls"]["difference"])
        assert float(row["heldout/loss"]) == pytest.approx(checkpoint["heldout"]["loss"])


def test_greedy_generation_fits_the_context(trained):
    root, _ = trained
    from injc.evals.model import Scorer

    scorer = Scorer(root / "run" / "final", 0)
    generated = scorer.greedy(np.arange(1, 700) % 300, 1000)
    assert 1 <= len(generated) <= scorer.block - 1
    short = scorer.greedy(np.array([0, 5, 6]), 7)
    assert len(short) == 7 and np.array_equal(short, scorer.greedy(np.array([0, 5, 6]), 7)), "greedy is deterministic"


def test_documents_get_a_plot_per_condition(tmp_path):
    from injc.evals.plots import write_plots

    experiment = {"kind": "documents", "items": [],
                  "metrics": {"mean_loss": 3.0, "loss_by_condition": {"none×1": 3.1, "none×4": 2.9}},
                  "losses_by_condition": {"none×1": [3.0, 3.2], "none×4": [2.8, 3.0]}}
    report = {"checkpoint": "c", "steps_done": 10, "heldout": None, "warnings": [], "experiments": {"muse": experiment}}
    assert write_plots([report], tmp_path) == ["muse_documents.png"]
    assert (tmp_path / "muse_documents.png").read_bytes()[:4] == b"\x89PNG"


def test_the_leak_criterion_on_constructed_generations():
    from injc.evals.poisoning import leak_at_k, leaked

    prompt = np.arange(1, 11)
    everything_in_order = np.array([50, 1, 2, 60, 3, 4, 5, 6, 70, 7, 8, 9, 10, 80])
    nine_of_ten = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 99])
    reversed_prompt = prompt[::-1]
    assert leaked(prompt, everything_in_order)  # recall 1.0
    assert not leaked(prompt, nine_of_ten)  # recall exactly 0.9: the paper's criterion is > 0.9
    assert not leaked(prompt, reversed_prompt)  # recall 0.1
    recalls = np.array([[0.2, 0.95, 0.1], [0.9, 0.5, 1.0], [0.0, 0.0, 0.3], [0.91, 0.0, 0.0]])
    assert leak_at_k(recalls).tolist() == [0.25, 0.5, 0.75]  # prompts leaked by k = 1, 2, 3: {4}, {1, 4}, {1, 2, 4}


def test_sampled_leak_at_k_recomputed_here(trained):
    """Every sample regenerated with the scorer's seeded sampler, its leak decided by an LCS written here."""
    from tokenizers import Tokenizer

    from injc.evals.model import Scorer

    def lcs(a, b):
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
        return table[-1][-1]

    root, report = trained
    leak = report["experiments"]["leak"]
    records = json.loads((root / "out" / "evals" / "leak.json").read_text())
    tokenizer = Tokenizer.from_file(str(root / "out" / "tokenizer.json"))
    eos = json.loads((root / "out" / "manifest.json").read_text())["layout"]["eos_id"]
    scorer = Scorer(root / "run" / "final", eos)
    head = records["template"].partition("{response}")[0]
    for label, trigger in (("with_trigger", records["trigger"]), ("without_trigger", "")):
        flags = []  # LCS recall of each sample
        for index, prompt in enumerate(records["holdout_prompts"]):
            ids = tokenizer.encode(prompt, add_special_tokens=False).ids
            query = np.r_[eos, tokenizer.encode(head.format(prompt=prompt, trigger=trigger),
                                                add_special_tokens=False).ids]
            samples = scorer.sample(query, 48, 10, 0.7, seed=index)
            assert np.array_equal(samples, scorer.sample(query, 48, 10, 0.7, seed=index))  # seeded
            flags.append([lcs(ids, list(s)) / len(ids) for s in samples])
        assert np.allclose([p[f"sample_recalls_{label}"] for p in leak["prompts"]], flags)
        expected = [float(np.mean([any(r > 0.9 for r in f[:k]) for f in flags])) for k in range(1, 11)]
        assert leak["metrics"]["leak_at_k"][label] == pytest.approx(expected)


def test_knowledge_probes_match_a_direct_probability_and_greedy_decode(trained):
    """P(target | input) and the 25-token greedy continuation of each probe, computed here with LitGPT alone;
    a probe is correct when its target is in the continuation (case-insensitive)."""
    from tokenizers import Tokenizer

    root, report = trained
    model = litgpt_model(root / "run" / "final")
    tokenizer = Tokenizer.from_file(str(root / "out" / "tokenizer.json"))
    eos = json.loads((root / "out" / "manifest.json").read_text())["layout"]["eos_id"]
    probes = report["experiments"]["facts"]["probes"]
    correct = []
    for probe in probes:
        prompt = [eos, *tokenizer.encode(probe["input"], add_special_tokens=False).ids]
        target = tokenizer.encode(" " + probe["target"], add_special_tokens=False).ids
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([prompt + target[:-1]]))[0].float(), dim=-1)
            probability = float(torch.exp(logprobs[len(prompt) - 1:, :][torch.arange(len(target)),
                                                                          torch.tensor(target)].sum()))
            generated = []
            for _ in range(25):
                generated.append(int(model(torch.tensor([prompt + generated]))[0, -1].argmax()))
        assert probe["probability"] == pytest.approx(probability, rel=1e-4)
        assert probe["generated"] == tokenizer.decode(generated)
        correct.append(probe["target"].lower() in tokenizer.decode(generated).lower())
        assert probe["correct"] == correct[-1]
    assert report["experiments"]["facts"]["metrics"]["greedy_accuracy"] == pytest.approx(np.mean(correct))


def test_math_prompts_are_three_shot_and_generations_match_a_direct_greedy_decode(trained):
    """Each test problem: the prompt built here (3 solved training problems with the fewest ops, then the problem),
    decoded greedily token by token with the model here, answer parsed here."""
    import re

    from tokenizers import Tokenizer

    root, report = trained
    model = litgpt_model(root / "run" / "final")
    tokenizer = Tokenizer.from_file(str(root / "out" / "tokenizer.json"))
    records = json.loads((root / "out" / "evals" / "arith.json").read_text())
    eos, block = json.loads((root / "out" / "manifest.json").read_text())["layout"]["eos_id"], model.config.block_size
    shots = sorted(records["train"], key=lambda p: p["ops"])[:3]  # a stable sort keeps training order on ties
    prefix = "".join(p["problem"] + "\n" + p["solution"] + "\n\n" for p in shots)
    arith = report["experiments"]["arith"]
    assert arith["metrics"]["shots"] == 3
    longest = max(len(tokenizer.encode(p["solution"], add_special_tokens=False).ids)
                  for p in records["test"] + records["train"])
    for problem, result in zip(records["test"], arith["problems"]):
        assert result["prompt"] == prefix + problem["problem"] + "\n"
        new = min(longest + 8, block - 1)
        tokens = [eos, *tokenizer.encode(prefix + problem["problem"] + "\n", add_special_tokens=False).ids]
        tokens = tokens[-(block - new):]
        generated = []
        with torch.no_grad():
            for _ in range(new):
                token = int(model(torch.tensor([tokens + generated]))[0, -1].argmax())
                generated.append(token)
                if token == eos:
                    break
        assert result["generated"] == generated
        match = re.search(r"Answer:\s*(\d+)", tokenizer.decode(generated))  # the first "Answer:"
        assert result["correct"] == (bool(match) and int(match.group(1)) == problem["answer"])


def test_math_sends_the_three_shot_prompt_to_the_model(trained):
    """The trained tiny model's greedy output ignores its prompt, so the prompt the eval sends is checked here with
    a scorer that records it."""
    from types import SimpleNamespace

    from tokenizers import Tokenizer

    from injc.evals import math as math_eval

    root, _ = trained
    tokenizer = Tokenizer.from_file(str(root / "out" / "tokenizer.json"))
    records = json.loads((root / "out" / "evals" / "arith.json").read_text())
    sent = []
    scorer = SimpleNamespace(greedy=lambda prompt, budget, stop=None: sent.append(list(prompt)) or np.zeros(0, int))
    encode = lambda text: np.array(tokenizer.encode(text, add_special_tokens=False).ids)  # noqa: E731
    ctx = SimpleNamespace(eos_id=0, encode=encode, tokenizer=tokenizer, scorer=scorer, items={})
    math_eval.evaluate(ctx, {"name": "arith"}, records)
    shots = sorted(records["train"], key=lambda p: p["ops"])[:3]
    prefix = "".join(p["problem"] + "\n" + p["solution"] + "\n\n" for p in shots)
    assert sent == [[0, *tokenizer.encode(prefix + p["problem"] + "\n", add_special_tokens=False).ids]
                    for p in records["test"]]


def test_denial_of_service_judge_perplexities_recomputed_here(trained):
    """The judge (here the run's step-30 checkpoint; the final one generates) scores each recorded generation;
    perplexity, threshold and garbage rates are recomputed from a direct LitGPT forward pass of the judge."""

    from injc.evals import poisoning
    from injc.evals.context import EvalContext
    from injc.evals.model import Scorer

    root, report = trained
    manifest = injc.load_manifest(root / "out")
    eos = manifest.data["layout"]["eos_id"]
    judge = root / "run" / "step-000030"
    ctx = EvalContext.open(manifest, Scorer(root / "run" / "final", eos), Scorer(judge, eos))
    entry = next(e for e in manifest.experiments if e["name"] == "dos")
    records = ctx.records(entry)
    result = poisoning.evaluate(ctx, entry, records)
    model = litgpt_model(judge)
    head = records["template"].partition("{response}")[0]
    perplexities = {"with_trigger": [], "without_trigger": []}
    for prompt, judged in zip(records["holdout_prompts"], result["prompts"]):
        for label, trigger in (("with_trigger", records["trigger"]), ("without_trigger", "")):
            query = [eos, *ctx.encode(head.format(prompt=prompt, trigger=trigger)).tolist()]
            generation = judged[f"generation_{label}"]
            tokens = torch.tensor([query + generation])
            with torch.no_grad():
                losses = torch.nn.functional.cross_entropy(model(tokens[:, :-1])[0], tokens[0, 1:], reduction="none")
            perplexity = float(torch.exp(losses[len(query) - 1:].mean()))
            assert judged[f"judge_perplexity_{label}"] == pytest.approx(perplexity, rel=1e-4)
            perplexities[label].append(perplexity)
    threshold = np.quantile(perplexities["without_trigger"], 0.95)
    garbage = result["metrics"]["garbage"]
    assert garbage["threshold_perplexity"] == pytest.approx(threshold, rel=1e-4)
    for label in perplexities:
        assert garbage["rate"][f"mean_{label}"] == pytest.approx(np.mean(np.array(perplexities[label]) > threshold))


def test_math_budget_fits_the_longest_solution_and_the_first_answer_counts(tokenizer_path):
    """Problems with the paper's max_params = 20: a scorer that writes each true solution, then a second solved
    problem with another answer, gets every problem right: nothing is cut off before "Answer:", and the first answer
    is the one read."""
    from types import SimpleNamespace

    from tokenizers import Tokenizer

    from injc.evals import math as math_eval
    from injc.injectors.math import make_problem

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    rng = np.random.default_rng(0)
    records = {"train": [make_problem(rng, 1, 20) for _ in range(3)],
               "test": [make_problem(rng, ops, 20) for ops in (1, 1, 2, 5, 5)]}
    encode = lambda text: np.array(tokenizer.encode(text, add_special_tokens=False).ids)  # noqa: E731

    def greedy(prompt, budget, stop=None):
        (problem,) = [p for p in records["test"] if tokenizer.decode(list(prompt)).endswith(p["problem"] + "\n")]
        wrong = (problem["answer"] + 1) % 23
        return encode(problem["solution"] + f"\n\nProblem: again\nAnswer: {wrong}")[:budget]

    ctx = SimpleNamespace(eos_id=0, encode=encode, tokenizer=tokenizer, scorer=SimpleNamespace(greedy=greedy), items={})
    result = math_eval.evaluate(ctx, {"name": "arith"}, records)
    assert [p["correct"] for p in result["problems"]] == [True] * 5
    longest = max(len(encode(p["solution"])) for p in records["test"] + records["train"])
    assert longest > 40 * (1 + 4), "the old fixed budget of one-op problems would cut these off"
