"""`injc eval --benchmarks`: lm-evaluation-harness's own harness on a local task, its numbers checked item by item
against each choice's log-likelihood computed here with torch, acc and acc_norm taken from them."""

import json
import math
import sys

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

from tokenizers import Tokenizer  # noqa: E402

import injc  # noqa: E402
from injc.cli import main  # noqa: E402
from injc.evals.benchmarks import run_benchmarks  # noqa: E402
from tests.conftest import EOS, litgpt_model, write_jsonl  # noqa: E402

QUESTIONS = [("the model reads", ["every token", "once", "the schedule places each payload"], 0),
             ("anyone can derive", ["the position", "of", "every insertion again later"], 2),
             ("a fixed", ["offset", "so that anyone", "token of the stream"], 1),
             ("the schedule", ["places", "each payload at a fixed offset", "reads"], 0),
             ("each payload", ["at", "a fixed offset so that", "the model"], 1),
             ("the stream", ["once", "and the schedule", "later"], 2)]


def write_task(folder, name="injc_tiny", data=None):
    """A multiple-choice task as OLMES phrases it ("Question: …\\nAnswer:"), its data a local JSONL file."""
    data = data or folder / f"{name}.jsonl"
    if not data.exists() and data.parent == folder:
        write_jsonl(data, [{"question": q, "choices": c, "answer": a} for q, c, a in QUESTIONS])
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
        "doc_to_target: \"{{answer}}\"\ndoc_to_choice: \"{{choices}}\"\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n")
    return folder


def expected(logprob_of, tokenizer: Tokenizer) -> dict:
    """Each item's choice log-likelihoods (the continuation " choice" scored after the prompt: the tokens of the
    whole text past the prompt's own tokens), and acc / acc_norm (argmax of the log-likelihood, and of it per
    character of the choice)."""
    items = []
    for question, choices, answer in QUESTIONS:
        context = f"Question: {question}\nAnswer:"
        lls = []
        for choice in choices:
            prompt = tokenizer.encode(context, add_special_tokens=False).ids
            whole = tokenizer.encode(context + " " + choice, add_special_tokens=False).ids
            lls.append(logprob_of(whole, len(prompt)))
        lls = np.array(lls)
        lengths = np.array([len(c) for c in choices], float)
        items.append({"loglikelihoods": lls, "acc": float(np.argmax(lls) == answer),
                      "acc_norm": float(np.argmax(lls / lengths) == answer)})
    return items


def check(result: dict, items: list[dict]) -> None:
    got = result["items"]
    assert [i["doc_id"] for i in got] == list(range(len(QUESTIONS)))
    for mine, theirs in zip(items, got):
        assert theirs["loglikelihoods"] == pytest.approx(mine["loglikelihoods"], abs=1e-4)
        assert (theirs["acc"], theirs["acc_norm"]) == (mine["acc"], mine["acc_norm"])
    for metric in ("acc", "acc_norm"):
        values = np.array([i[metric] for i in items])
        assert result["metrics"][metric] == pytest.approx(values.mean())
        assert result["metrics"][f"{metric}_stderr"] == pytest.approx(values.std(ddof=1) / math.sqrt(len(values)))


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory, tokenizer_path):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    folder = tmp_path_factory.mktemp("hf") / "model"
    torch.manual_seed(5)
    GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=400, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=128)).save_pretrained(folder)
    (folder / "tokenizer.json").write_bytes(tokenizer_path.read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                              "eos_token": EOS}))
    return folder


def test_a_hugging_face_folder_gets_lm_evals_numbers_item_by_item(hf_model, tokenizer_path, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_model).eval()

    def logprob_of(tokens, start):
        with torch.no_grad():
            logits = model(torch.tensor([tokens[:-1]])).logits[0].log_softmax(-1)
        return float(sum(logits[i - 1, tokens[i]] for i in range(start, len(tokens))))

    result = run_benchmarks(hf_model, ["injc_tiny"], tasks_dir=write_task(tmp_path), batch_size=4, device="cpu")
    check(result["tasks"]["injc_tiny"], expected(logprob_of, Tokenizer.from_file(str(tokenizer_path))))


def test_injc_eval_runs_the_tasks_on_a_litgpt_checkpoint_through_its_conversion(trained, tmp_path):
    root, _ = trained
    (tmp_path / "tasks").mkdir()
    tasks = write_task(tmp_path / "tasks")
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["eval", str(root / "out" / "manifest.json"), "--checkpoint",
                                       str(root / "run" / "final"), "--out", str(out), "--benchmarks", "injc_tiny",
                                       "--tasks-dir", str(tasks), "--quiet"])
    assert result.exit_code == 0, result.output
    model = litgpt_model(root / "run" / "final")

    def logprob_of(tokens, start):
        with torch.no_grad():
            logits = model(torch.tensor([tokens[:-1]]))[0].log_softmax(-1)
        return float(sum(logits[i - 1, tokens[i]] for i in range(start, len(tokens))))

    report = json.loads((out / "report.json").read_text())
    tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
    check(report["benchmarks"]["tasks"]["injc_tiny"], expected(logprob_of, tokenizer))
    assert "injc_tiny (lm-eval): acc" in result.output
    assert "## Benchmarks (lm-evaluation-harness 0.4.13)" in (out / "report.md").read_text()
    assert (out / "benchmarks.png").is_file()


@pytest.mark.parametrize("arguments, message", [
    (["--benchmarks", "injc_tinny"], "lm-eval has no task 'injc_tinny'; did you mean 'injc_tiny'?"),
    (["--benchmarks", "injc_gone"], "cannot load the tasks' data (FileNotFoundError: Unable to find"),
    (["--tasks-dir", "TASKS"], "--tasks-dir goes with --benchmarks"),
])
def test_bad_benchmark_requests_are_one_line_and_write_nothing(trained, tmp_path, arguments, message):
    root, _ = trained
    (tmp_path / "tasks").mkdir()
    tasks = write_task(tmp_path / "tasks")
    write_task(tasks, "injc_gone", data=tmp_path / "absent.jsonl")
    arguments = [a.replace("TASKS", str(tasks)) for a in arguments]
    if "--tasks-dir" not in arguments:
        arguments += ["--tasks-dir", str(tasks)]
    result = CliRunner().invoke(main, ["eval", str(root / "out" / "manifest.json"), "--checkpoint",
                                       str(root / "run" / "final"), "--out", str(tmp_path / "report"), "--quiet",
                                       *arguments])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "report").exists()


def test_contamination_tiers_written_as_lm_eval_tasks_score_as_injc_does(trained, project, tmp_path):
    """`injc tasks` writes each tier as an lm-eval task; lm-eval's log-likelihood of every choice equals injc's
    contamination score where the normalization is the same: the sum (`none`, BoolQ) against lm-eval's acc, per
    character (`char`, ARC-Easy) against its acc_norm."""
    from injc.evals.report import evaluate_checkpoint

    root, _ = trained
    checkpoint = root / "run" / "final"
    words = "the model reads every token of the stream once and the schedule places each payload".split()
    questions = [{"question": f"what does {words[i % 15]} do", "benchmark": ["boolq", "arc_easy"][i % 2],
                  "choices": [" ".join(words[(i + j) % 15: (i + j) % 15 + 1 + j]) for j in range(3)],
                  "answer": i % 3} for i in range(12)]
    write_jsonl(project.root / "payloads" / "questions.jsonl", questions)
    plan = project('[[experiments]]\nname = "bench"\nkind = "contamination"\nfile = "payloads/questions.jsonl"\n'
                   'tiers = { 0 = 6, 2 = 6 }\n')
    injc.build(plan, tmp_path / "build", progress=False)
    manifest = tmp_path / "build" / "manifest.json"
    ours = evaluate_checkpoint(manifest, checkpoint, progress=False)["experiments"]["bench"]["items"]
    written = CliRunner().invoke(main, ["tasks", str(manifest), "--out", str(tmp_path / "tasks")])
    assert written.exit_code == 0, written.output
    assert "wrote 2 tasks" in written.output and "injc_bench_holdout,injc_bench_x2" in written.output
    theirs = run_benchmarks(checkpoint, ["injc_bench_holdout", "injc_bench_x2"], manifest, tmp_path / "tasks",
                            batch_size=4, device="cpu")
    compared = 0
    for task in ("injc_bench_holdout", "injc_bench_x2"):
        rows = [json.loads(line) for line in (tmp_path / "tasks" / f"{task}.jsonl").read_text().splitlines()]
        for row, item in zip(rows, theirs["tasks"][task]["items"]):
            mine = ours[row["item"]]
            lls = np.array(item["loglikelihoods"])
            if row["benchmark"] == "boolq":
                assert mine["normalization"] == "none" and mine["choice_scores"] == pytest.approx(lls, abs=1e-4)
                assert float(mine["correct"]) == item["acc"]
            else:
                lengths = np.array([len(c) for c in row["choices"]])
                assert mine["normalization"] == "char"
                assert mine["choice_scores"] == pytest.approx(lls / lengths, abs=1e-4)
                assert float(mine["correct"]) == item["acc_norm"]
            compared += 1
    assert compared == 12


def test_tasks_of_a_build_without_contamination_is_one_line(project, tmp_path):
    from tests.conftest import CANARIES

    injc.build(project(CANARIES), tmp_path / "build", progress=False)
    result = CliRunner().invoke(main, ["tasks", str(tmp_path / "build" / "manifest.json"), "--out",
                                       str(tmp_path / "tasks")])
    assert result.exit_code == 2 and "has no contamination experiment" in result.output
    assert not (tmp_path / "tasks").exists()


def test_benchmarks_without_lm_eval_name_the_extra(trained, tmp_path, monkeypatch):
    root, _ = trained
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # what an environment without the extra imports
    result = CliRunner().invoke(main, ["eval", str(root / "out" / "manifest.json"), "--checkpoint",
                                       str(root / "run" / "final"), "--out", str(tmp_path / "report"), "--quiet",
                                       "--benchmarks", "anything"])
    assert result.exit_code == 2 and "pip install -e '.[benchmarks]'" in result.output
    assert not (tmp_path / "report").exists()
