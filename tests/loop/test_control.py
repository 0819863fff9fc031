"""`injc run`: the dynamic-control loop decides each window's count from a probe of the model trained so far, its
grown build equals a static build of the decided counts, and a killed loop continues with identical results."""

import json
import textwrap

import numpy as np
import pytest

import injc
from injc.injectors.knowledge import Control, algorithm_one
from tests.conftest import litgpt_model, make_documents, write_jsonl
from tests.test_cli import assert_user_error
from tests.test_cli import injc as run_injc
from tests.train.conftest import TINY

torch = pytest.importorskip("torch")
pytest.importorskip("litgpt")

LAYOUT = "[layout]\nseq_len = 64\nbatch_size = 4\nsteps = 30\nseed = 7\n"
HEAD = LAYOUT + '[tokenizer]\npath = "tokenizer.json"\n[corpus]\npaths = ["data/*.jsonl"]\n'
KNOWLEDGE = """
[[experiments]]
name = "facts"
kind = "knowledge"
documents = "payloads/docs.jsonl"
probes = "payloads/probes.jsonl"
window_steps = 10
per_window = {per_window}
"""
CONTROL = """
[experiments.control]
target = 0.02
initial = 4
max_change = 6
max = 20
"""


@pytest.fixture
def loop(tmp_path, tokenizer_path):
    (tmp_path / "tokenizer.json").write_bytes(tokenizer_path.read_bytes())
    write_jsonl(tmp_path / "data" / "a.jsonl", [{"text": t} for t in make_documents(300, seed=1)])
    write_jsonl(tmp_path / "payloads" / "docs.jsonl",
                [{"text": f"the river {i} runs past the mill of stone {i}"} for i in range(40)])
    write_jsonl(tmp_path / "payloads" / "probes.jsonl",
                [{"input": f"the river {i} runs past the mill of", "target": f"stone {i}"} for i in range(4)])
    (tmp_path / "tiny.yaml").write_text(TINY)

    def write(per_window='"dynamic"', control=CONTROL, name="plan.toml"):
        path = tmp_path / name
        path.write_text(HEAD + KNOWLEDGE.format(per_window=per_window) + textwrap.dedent(control))
        return path

    write.root = tmp_path
    return write


def run_loop(plan, out, **kwargs):
    from injc.loop.control import RunConfig, run

    return run(RunConfig(plan, out, model=str(plan.parent / "tiny.yaml"), device="cpu", evaluate=False,
                         progress=False, **kwargs))


def direct_probe(checkpoint, build):
    """Mean P(target | input) of the probes, computed here with LitGPT and the tokenizer alone."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(build / "tokenizer.json"))
    eos = json.loads((build / "manifest.json").read_text())["layout"]["eos_id"]
    model = litgpt_model(checkpoint)
    values = []
    for probe in json.loads((build / "evals" / "facts.json").read_text())["probes"]:
        prompt = [eos] + tokenizer.encode(probe["input"], add_special_tokens=False).ids
        target = tokenizer.encode(" " + probe["target"], add_special_tokens=False).ids
        sequence = torch.tensor([prompt + target])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(sequence[:, :-1]).float(), dim=-1)[0]
        picked = logprobs[torch.arange(len(prompt) - 1, len(prompt) + len(target) - 1), torch.tensor(target)]
        values.append(float(torch.exp(picked.sum())))
    return float(np.mean(values))


def paper_rule(previous, probe, target, control):
    """Algorithm 1 as the paper states it, written out here."""
    count = previous
    if probe > 1.05 * target:
        count = previous // 2
    if probe < 0.95 * target:
        count = previous * 2
    count = min(count, previous + control["max_change"])
    count = max(count, previous - control["max_change"])
    return max(control["min"], min(count, control["max"]))


def test_the_loop_probes_each_window_decides_by_algorithm_one_and_equals_a_static_build(loop, tmp_path):
    out = tmp_path / "loop"
    summary = run_loop(loop(), out)
    records = [json.loads(line) for line in (out / "control.jsonl").read_text().splitlines()]
    assert records == summary["records"]
    assert [r["window"] for r in records] == [0, 1, 2] and [r["first_step"] for r in records] == [0, 10, 20]
    assert records[0]["count"] == 4
    control = {"min": 1, "max": 20, "max_change": 6}
    for before, record in zip(records, records[1:]):
        assert record["target"] == pytest.approx(0.02 * record["first_step"] / 30)
        probed = direct_probe(out / "train" / f"step-{record['first_step']:06d}", out / "build")
        assert record["probe"] == pytest.approx(probed, rel=1e-4)
        assert record["count"] == paper_rule(before["count"], probed, record["target"], control)
    manifest = injc.load_manifest(out / "build")
    assert "until_step" not in manifest.data and manifest.data["control"] == records
    assert (out / "control.png").stat().st_size > 0
    static = injc.build(loop(per_window=[r["count"] for r in records], control="", name="static.toml"),
                        tmp_path / "static", progress=False)
    for name in ("insertions.parquet", "items.parquet", "evals/facts.json", "shards/shard_00000.bin"):
        assert (out / "build" / name).read_bytes() == (static.out_dir / name).read_bytes(), name


def test_a_killed_loop_continues_with_identical_results(loop, tmp_path, monkeypatch):
    import injc.loop.control as control_module

    whole = run_loop(loop(), tmp_path / "whole")
    real_probe, calls = control_module._probe, []

    def killed_on_second_probe(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_probe(*args)

    monkeypatch.setattr(control_module, "_probe", killed_on_second_probe)
    with pytest.raises(KeyboardInterrupt):
        run_loop(loop(), tmp_path / "again")
    assert len((tmp_path / "again" / "control.jsonl").read_text().splitlines()) == 2
    monkeypatch.setattr(control_module, "_probe", real_probe)
    again = run_loop(loop(), tmp_path / "again")
    assert again["records"] == whole["records"]
    for name in ("shards/shard_00000.bin", "insertions.parquet"):
        assert (tmp_path / "again" / "build" / name).read_bytes() == (tmp_path / "whole" / "build" / name).read_bytes()
    first, second = (torch.load(tmp_path / run / "train" / "final" / "lit_model.pth") for run in ("whole", "again"))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_controller_from_the_plan_is_imported_and_its_answer_checked(loop, tmp_path, monkeypatch):
    (tmp_path / "mycontrol.py").write_text(
        "def steady(state, probe):\n    return state['previous'] + 1\n"
        "def fractional(state, probe):\n    return 2.5\n"
        "def huge(state, probe):\n    return 10_000\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    summary = run_loop(loop(control=CONTROL + 'controller = "mycontrol:steady"\n'), tmp_path / "steady")
    assert [r["count"] for r in summary["records"]] == [4, 5, 6]
    for name, message in (("fractional", "returned 2.5; it must return an integer count"),
                          ("huge", r"returned 10000, outside \[min, max\] = \[1, 20\]"),
                          ("missing", "'mycontrol:missing' cannot be imported")):
        with pytest.raises(injc.InjcError, match=message):
            run_loop(loop(control=CONTROL + f'controller = "mycontrol:{name}"\n'), tmp_path / name)


def test_algorithm_one_halves_doubles_keeps_and_clamps():
    control = Control(target=0.08, initial=64, max_change=256, min=1, max=8192)
    assert algorithm_one(control, 100, 0.2, 0.1)[0] == 50
    assert algorithm_one(control, 100, 0.01, 0.1)[0] == 200
    assert algorithm_one(control, 100, 0.1, 0.1)[0] == 100
    assert algorithm_one(control, 1000, 0.0, 0.1)[0] == 1256
    assert algorithm_one(control, 8000, 0.0, 0.1)[0] == 8192
    assert algorithm_one(control, 1, 1.0, 0.1)[0] == 1
    assert algorithm_one(Control(target=0.08, initial=64, max_change=64, min=1, max=8192), 1000, 0.5, 0.1)[0] == 936


def test_dynamic_plans_without_control_and_plain_builds_of_them_are_refused(loop, tmp_path):
    result = run_injc("build", loop(control=""), "--out", tmp_path / "b")
    assert_user_error(result, 'per_window = "dynamic" needs an [experiments.control] table')
    result = run_injc("build", loop(), "--out", tmp_path / "b")
    assert_user_error(result, "experiment 'facts' has per_window = \"dynamic\"", "injc run")
    result = run_injc("run", loop(per_window=3), "--model", loop.root / "tiny.yaml", "--out", tmp_path / "r")
    assert_user_error(result, "experiments[0] \"facts\".control: only with per_window = \"dynamic\"")
    assert not (tmp_path / "b").exists() and not (tmp_path / "r").exists()


def test_a_stopped_loop_says_how_it_continues_and_a_second_loop_on_its_folder_is_refused(loop, tmp_path, monkeypatch):
    import injc.loop.control as control_module
    from injc.errors import Interrupted
    from injc.shards.files import folder_lock

    def stopped(*args, **kwargs):
        raise Interrupted("stopped after step 3 of 10; checkpoint …: add --resume to the same command to continue")

    monkeypatch.setattr(control_module, "train", stopped)
    with pytest.raises(Interrupted) as stop:
        run_loop(loop(), tmp_path / "loop")
    assert "run the same command again" in str(stop.value) and "--resume" not in str(stop.value)
    with folder_lock(tmp_path / "busy", "run loop"):  # this process runs a loop in it; another command comes
        result = run_injc("run", loop(), "--model", tmp_path / "tiny.yaml", "--out", tmp_path / "busy", "--quiet")
    assert_user_error(result, f"another injc run loop is writing {str(tmp_path / 'busy')!r}")


def test_the_loop_logs_each_decision_where_the_logger_writes(loop, tmp_path):
    import csv

    summary = run_loop(loop(), tmp_path / "logged", logger="csv")
    with open(tmp_path / "logged" / "logs" / "csv" / "from-step-000000" / "metrics.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("facts/count")]
    decided = [r for r in summary["records"] if r["probe"] is not None]
    assert [int(r["step"]) for r in rows] == [d["first_step"] for d in decided]
    assert [float(r["facts/probe"]) for r in rows] == pytest.approx([d["probe"] for d in decided])
    assert [int(float(r["facts/count"])) for r in rows] == [d["count"] for d in decided]
    assert (tmp_path / "logged" / "train" / "logs" / "csv").is_dir()
