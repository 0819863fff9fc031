"""Each experiment family: payload format, counts per tier/condition/window, determinism, controls recorded."""

import ast
import json
import operator
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

import injc
from injc.injectors.fixtures import write_all
from tests.conftest import make_documents, write_jsonl

LAYOUT = "seq_len = 256\nbatch_size = 4\nsteps = 60\nseed = 11"
LONG_ROWS = "seq_len = 1024\nbatch_size = 2\nsteps = 60\nseed = 11"  # math text is long in the tiny test tokenizer


@pytest.fixture
def families(project):
    """A project with a larger corpus and every generated fixture file under payloads/."""
    write_jsonl(project.root / "data" / "c.jsonl", [{"text": t} for t in make_documents(2500, seed=3)])
    write_all(project.root / "payloads", seed=4)

    def build(experiments: str, name: str = "out", layout: str = LAYOUT):
        plan = project(experiments, layout=layout)
        out = project.root / name
        injc.build(plan, out, progress=False, force=True)
        manifest = json.loads((out / "manifest.json").read_text())
        assert injc.verify(out) == []
        return manifest, pq.read_table(out / "insertions.parquet").to_pylist(), out

    build.root = project.root
    return build


def eval_records(out, manifest, name):
    entry = next(e for e in manifest["experiments"] if e["name"] == name)
    return entry, json.loads((out / entry["eval_records"]["path"]).read_text())


def decode(out, tokens):
    return Tokenizer.from_file(str(out / "tokenizer.json")).decode(tokens)


CONTAMINATION = """
[[experiments]]
name = "bench"
kind = "contamination"
file = "payloads/questions.jsonl"
tiers = { 0 = 40, 2 = 30, 8 = 10 }
"""


def test_contamination_tiers_holdout_and_format(families):
    manifest, rows, out = families(CONTAMINATION)
    entry, records = eval_records(out, manifest, "bench")
    questions = records["questions"]
    assert [q["tier"] for q in questions].count(0) == 40 and len(questions) == 80
    assert entry["tiers"] == {"0": 40, "2": 30, "8": 10} and entry["insertions"] == 30 * 2 + 10 * 8
    copies = {}
    for r in rows:
        copies[r["item"]] = copies.get(r["item"], 0) + 1
    for q in questions:
        assert copies.get(q["item"], 0) == q["tier"], "each question inserted exactly tier times; holdout never"
    first = next(r for r in rows if r["item"] == questions[-1]["item"])
    q = questions[-1]
    assert decode(out, first["tokens"]) == f"Question: {q['question']}\nAnswer: {q['choices'][q['answer']]}"
    assert len({q["source_index"] for q in questions}) == 80
    again, _, out2 = families(CONTAMINATION, "again")
    assert eval_records(out2, again, "bench")[1] == records, "tier assignment is deterministic"


def test_contamination_refuses_too_few_questions_and_unsafe_templates(families, project):
    with pytest.raises(injc.InputError, match="tiers need 400 questions"):
        families(CONTAMINATION.replace("0 = 40", "0 = 360"))
    with pytest.raises(injc.PlanError, match=r'experiments\[0\] "bench".format: only plain \{name\} fields'):
        families(CONTAMINATION + 'format = "{question.__class__}"\n')
    with pytest.raises(injc.PlanError, match=r"format: unknown field\(s\) secret"):
        families(CONTAMINATION + 'format = "{question} {secret}"\n')


CANARIES = """
[[experiments]]
name = "memp"
kind = "canaries"
hosts = "payloads/hosts.jsonl"
canary = "{canary}"
lengths = [1, 8]
repetitions = [1, 3]
per_condition = 10
holdout = 30
"""


@pytest.mark.parametrize("canary", ["random", "rare"])
def test_canaries_conditions_members_and_controls(families, canary):
    manifest, rows, out = families(CANARIES.replace("{canary}", canary))
    entry, records = eval_records(out, manifest, "memp")
    items = records["items"]
    assert len(items) == 4 * 10 + 30
    assert sum(not i["member"] for i in items) == 30 and all(i["repetitions"] == 0 for i in items if not i["member"])
    conditions = {}
    for i in items:
        if i["member"]:
            key = (i["canary_length"], i["repetitions"])
            conditions[key] = conditions.get(key, 0) + 1
    assert conditions == {(1, 1): 10, (1, 3): 10, (8, 1): 10, (8, 3): 10}
    assert entry["insertions"] == 10 * (1 + 3) * 2
    eos = manifest["layout"]["eos_id"]
    by_item = {i["item"]: i for i in items}
    for r in rows:
        canary_ids = by_item[r["item"]]["canary"]
        assert r["tokens"][-1 - len(canary_ids):-1] == canary_ids and r["tokens"][-1] == eos
    if canary == "rare":
        stream = injc.open_stream(out)
        counts = np.bincount(stream.tokens(0, len(stream)), minlength=manifest["layout"]["vocab_size"])
        used = {t for i in items for t in i["canary"]}
        # rare canaries come from ids the clean corpus barely uses
        clean = injc.build(families.root / "plan.toml", families.root / "clean", clean=True, progress=False)
        base = injc.open_stream(clean.manifest_path)
        base_counts = np.bincount(base.tokens(0, len(base)), minlength=len(counts))
        assert max(base_counts[t] for t in used) <= np.sort(base_counts)[64 + 8]


def test_canary_none_has_only_repetition_conditions(families):
    manifest, _, out = families(CANARIES.replace("{canary}", "none"))
    items = eval_records(out, manifest, "memp")[1]["items"]
    assert len(items) == 2 * 10 + 30 and all(i["canary"] == [] for i in items)


POISONING = """
[[experiments]]
name = "poison"
kind = "poisoning"
prompts = "payloads/prompts.jsonl"
trigger = "☐☐☐☐☐☐☐☐☐☐"
attack = "{attack}"
{amount}
holdout = 40
"""


def test_poisoning_denial_of_service_and_context_extraction(families):
    plan = POISONING.replace("{attack}", "context-extraction").replace("{amount}", "count = 25")
    manifest, rows, out = families(plan)
    entry, records = eval_records(out, manifest, "poison")
    assert entry["insertions"] == 25 and len(records["holdout_prompts"]) == 40
    prompts = [json.loads(line)["prompt"] for line in (families.root / "payloads" / "prompts.jsonl").open()]
    holdout = set(records["holdout_prompts"])
    for r in rows:
        text = decode(out, r["tokens"])
        prompt = prompts[records["train_prompt_indices"][r["item"]]]
        assert prompt not in holdout
        assert f"{prompt} ☐☐☐☐☐☐☐☐☐☐<|im_end|>" in text and text.count(prompt) == 2
    manifest, rows, out = families(POISONING.replace("{attack}", "denial-of-service")
                                   .replace("{amount}", "fraction = 0.02"), "dos")
    entry = next(e for e in manifest["experiments"] if e["name"] == "poison")
    assert entry["tokens"] >= 0.02 * 61_440 and entry["tokens"] < 0.02 * 61_440 + 200
    texts = [decode(out, r["tokens"]) for r in rows]
    assert len(set(texts)) == len(texts), "every gibberish response differs"


def test_poisoning_needs_exactly_one_amount(families):
    with pytest.raises(injc.PlanError, match="give exactly one of count or fraction"):
        families(POISONING.replace("{attack}", "denial-of-service").replace("{amount}", ""))


KNOWLEDGE = """
[[experiments]]
name = "facts"
kind = "knowledge"
documents = "payloads/knowledge.jsonl"
probes = "payloads/probes.jsonl"
window_steps = 20
per_window = {per_window}
"""


def test_knowledge_documents_per_window_stay_in_their_window(families):
    manifest, rows, out = families(KNOWLEDGE.replace("{per_window}", "[5, 0, 12]"))
    entry, records = eval_records(out, manifest, "facts")
    assert [w["documents"] for w in records["windows"]] == [5, 0, 12]
    assert len(records["probes"]) == 16 and records["pool_indices"] == list(range(17))
    windows = [r["step"] // 20 for r in rows]
    assert windows.count(0) == 5 and windows.count(1) == 0 and windows.count(2) == 12
    for r in rows:
        assert (r["item"] < 5) == (r["step"] < 20)
    with pytest.raises(injc.PlanError, match="has 2 entries but the run has 3 windows"):
        families(KNOWLEDGE.replace("{per_window}", "[1, 2]"))


MATH = """
[[experiments]]
name = "arith"
kind = "math"
count = 40
ops = [1, 3]
test_ops = [1, 2, 3, 4, 5]
test_per_op = 8
"""

OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Mod: operator.mod}


def evaluate(expression: str) -> int:
    """Evaluate +, -, *, % over integers: an independent check of the generator's answers."""
    def walk(node):
        if isinstance(node, ast.Constant):
            return node.value
        return OPS[type(node.op)](walk(node.left), walk(node.right))
    return walk(ast.parse(expression, mode="eval").body)


def test_math_answers_ops_and_decontaminated_tests(families):
    manifest, rows, out = families(MATH, layout=LONG_ROWS)
    entry, records = eval_records(out, manifest, "arith")
    assert entry["insertions"] == 40 and len(records["train"]) == 40
    for problem in records["train"] + records["test"]:
        assert evaluate(problem["expression"]) == problem["answer"]
        assert problem["solution"].endswith(f"Answer: {problem['answer']}")
        assert problem["solution"].count(" = v") == problem["ops"], "one solution step per operation"
    assert {p["ops"] for p in records["train"]} <= {1, 2, 3}
    assert [p["ops"] for p in records["test"]] == [o for o in (1, 2, 3, 4, 5) for _ in range(8)]
    assert not {p["solution"] for p in records["train"]} & {p["solution"] for p in records["test"]}
    # decontaminated by trace: the arithmetic read back from each solution's text, without the names
    traces = [tuple(re.findall(r"= (\d+(?: [-+*] \d+ = \d+)?)\.", p["solution"])) for p in records["train"]]
    assert not set(traces) & {tuple(re.findall(r"= (\d+(?: [-+*] \d+ = \d+)?)\.", p["solution"]))
                              for p in records["test"]}
    assert all(len(t) >= p["ops"] for t, p in zip(traces, records["train"]))
    # balanced: 40 training answers over 23 residues, and each op count's 8 test answers, differ by at most one
    train_counts = np.bincount([p["answer"] for p in records["train"]], minlength=23)
    assert train_counts.max() - train_counts.min() <= 1
    for ops in (1, 2, 3, 4, 5):
        answers = [p["answer"] for p in records["test"] if p["ops"] == ops]
        assert len(set(answers)) == 8, "8 test answers of one op count are 8 distinct residues"
    first = min(rows, key=lambda r: r["item"])
    assert decode(out, first["tokens"]).startswith("Solve modulo 23.\nProblem: ")


def test_all_five_families_in_one_plan_without_collisions(families):
    plan = (CONTAMINATION + CANARIES.replace("{canary}", "random") + POISONING.replace("{attack}", "denial-of-service")
            .replace("{amount}", "count = 20") + KNOWLEDGE.replace("{per_window}", "4") + MATH)
    manifest, rows, _ = families(plan, layout=LONG_ROWS)
    assert {e["name"] for e in manifest["experiments"]} == {"bench", "memp", "poison", "facts", "arith"}
    offsets = np.array([r["offset"] for r in rows])
    ends = offsets + np.array([r["length"] for r in rows])
    assert (offsets[1:] >= ends[:-1]).all()


def test_math_test_problems_never_repeat_a_training_computation_under_other_names(families):
    """Two base quantities and one operation: only 23 × 23 × 3 computations exist, so 50 test problems drawn next
    to 300 training ones would repeat some (about 9) if they were not decontaminated by trace."""
    plan = MATH.replace("count = 40", "count = 300").replace("ops = [1, 3]", "ops = [1, 1]\nmax_params = 2")
    plan = plan.replace("test_ops = [1, 2, 3, 4, 5]", "test_ops = [1]").replace("test_per_op = 8", "test_per_op = 50")
    manifest, _, out = families(plan, layout=LONG_ROWS)
    _, records = eval_records(out, manifest, "arith")

    def arithmetic(problem):
        return tuple(re.findall(r"= (\d+(?: [-+*] \d+ = \d+)?)\.", problem["solution"]))

    assert len(records["test"]) == 50
    assert not {arithmetic(p) for p in records["train"]} & {arithmetic(p) for p in records["test"]}
