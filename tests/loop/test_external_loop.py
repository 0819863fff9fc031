"""`injc run --train-cmd`: the dynamic-control loop driving a trainer that is not injc's (tests/evals/
external_trainer.py: numpy reads the shards through the format contract, transformers trains, a Hugging Face folder
comes out), window by window; the batches it consumed are the manifest's steps, across windows; a crashing trainer
stops the loop with its log and the same command resumes there."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import injc
from tests.loop.test_control import CONTROL, loop  # noqa: F401  (the loop fixture)
from tests.test_cli import assert_user_error
from tests.test_cli import injc as run_injc

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TRAINER = Path(__file__).parent / "external_trainer.py"

OLMO_CORE_TRAINER = Path(__file__).parent / "olmo_core_trainer.py"


def olmo_core_command(batches: Path) -> str:
    return (f"{sys.executable} {OLMO_CORE_TRAINER} --data {{data}} --from-step {{from_step}} --to-step {{to_step}} "
            f"--init {{init}} --out {{out}} --batches {batches}")


def initial_model(folder: Path) -> Path:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=400, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def command(batches: Path, fail_if: Path | None = None) -> str:
    extra = f" --fail-if {fail_if}" if fail_if else ""
    return (f"{sys.executable} {TRAINER} --manifest {{manifest}} --from-step {{from_step}} --to-step {{to_step}} "
            f"--init {{init}} --out {{out}} --batches {batches}{extra}")


def hf_probe(checkpoint: Path, build: Path) -> float:
    """Mean P(target | input) of the probes, computed here with transformers and the tokenizer alone."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(build / "tokenizer.json"))
    eos = json.loads((build / "manifest.json").read_text())["layout"]["eos_id"]
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    values = []
    for probe in json.loads((build / "evals" / "facts.json").read_text())["probes"]:
        prompt = [eos] + tokenizer.encode(probe["input"], add_special_tokens=False).ids
        target = tokenizer.encode(" " + probe["target"], add_special_tokens=False).ids
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + target])[:, :-1]).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)[0]
        picked = logprobs[torch.arange(len(prompt) - 1, len(prompt) + len(target) - 1), torch.tensor(target)]
        values.append(float(torch.exp(picked.sum())))
    return float(np.mean(values))


def consumed(batches: Path) -> list[tuple[int, str]]:
    return [(r["step"], r["sha256"]) for r in map(json.loads, batches.read_text().splitlines())]


def manifest_steps(build: Path, steps: range) -> list[tuple[int, str]]:
    stream = injc.open_stream(build / "manifest.json")
    return [(s, hashlib.sha256(stream.batch(s).astype("<u4").tobytes()).hexdigest()) for s in steps]


def test_the_loop_drives_an_external_trainer_step_exact_across_windows(loop, tmp_path):  # noqa: F811
    out, batches = tmp_path / "loop", tmp_path / "batches.jsonl"
    result = run_injc("run", loop(), "--init", initial_model(tmp_path / "init"), "--out", out,
                      "--train-cmd", command(batches))
    assert result.returncode == 0, result.stderr
    for window, (first, end) in enumerate(((0, 10), (10, 20), (20, 30))):  # each window said while it trains
        assert (f"window {window}: training steps {first}–{end} with --train-cmd; output in "
                f"{out / 'train' / f'window-{window:04d}.log'}") in result.stderr
    assert consumed(batches) == manifest_steps(out / "build", range(30))
    records = [json.loads(line) for line in (out / "control.jsonl").read_text().splitlines()]
    assert [r["window"] for r in records] == [0, 1, 2]
    for record in records[1:]:
        checkpoint = out / "train" / f"window-{record['window'] - 1:04d}"
        assert record["probe"] == pytest.approx(hf_probe(checkpoint, out / "build"), rel=1e-4)
    assert "step 29 loss" in (out / "train" / "window-0002.log").read_text()
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["checkpoint"] == str(out / "train" / "window-0002")
    assert report["steps_done"] == 30 and report["warnings"] == []  # train_state.json written beside it
    assert json.loads((out / "control.json").read_text())["eval"] == "eval"  # relative to control.json
    assert "cannot tell which build" not in result.stderr


def test_a_crashing_trainer_stops_the_loop_with_its_log_and_the_same_command_resumes_there(loop, tmp_path):  # noqa: F811
    out, batches, flag = tmp_path / "loop", tmp_path / "batches.jsonl", tmp_path / "crash"
    flag.touch()
    args = ("run", loop(), "--init", initial_model(tmp_path / "init"), "--out", out, "--quiet", "--no-eval",
            "--train-cmd", command(batches, flag))
    crashed = run_injc(*args)
    assert crashed.returncode == 1, crashed.stderr
    line = crashed.stderr.strip().splitlines()[-1]
    assert "window 1 (steps 10–20, exit 3)" in line and str(out / "train" / "window-0001.log") in line
    assert "trainer crashed" in (out / "train" / "window-0001.log").read_text()
    flag.unlink()
    resumed = run_injc(*args)
    assert resumed.returncode == 0, resumed.stderr
    steps = consumed(batches)
    assert steps[:11] == manifest_steps(out / "build", range(11))  # window 0, then the crashed attempt's step 10
    assert steps[11:] == manifest_steps(out / "build", range(10, 30))  # window 1 again from its start, window 2


def test_commands_injc_cannot_use_are_refused_before_any_work(loop, tmp_path):  # noqa: F811
    init = initial_model(tmp_path / "init")
    for cmd, message in (("train.sh --init {init}", "--train-cmd must use {out}"),
                         ("train.sh {out} {checkpoint}", "uses {checkpoint}, which injc does not fill in")):
        result = run_injc("run", loop(), "--init", init, "--out", tmp_path / "r", "--quiet", "--train-cmd", cmd)
        assert_user_error(result, message)
        assert not (tmp_path / "r").exists()
    result = run_injc("run", loop(), "--model", tmp_path / "tiny.yaml", "--out", tmp_path / "r", "--quiet",
                      "--train-cmd", "train.sh {out}")
    assert_user_error(result, "--train-cmd continues a checkpoint: give --init")
    result = run_injc("run", loop(), "--init", init, "--out", tmp_path / "r", "--quiet", "--train-cmd", "true {out}")
    assert_user_error(result, "the checkpoint of window 0", "left nothing in {out}")


def test_a_window_trained_before_a_kill_is_not_trained_again(loop, tmp_path, monkeypatch):  # noqa: F811
    """Killed after window 0's trainer finished but before its probe: the same loop again probes window 0's
    checkpoint rather than training the window a second time."""
    import injc.loop.control as control_module
    from injc.loop.control import RunConfig, run

    out, batches = tmp_path / "loop", tmp_path / "batches.jsonl"
    config = RunConfig(loop(), out, init=initial_model(tmp_path / "init"), train_cmd=command(batches),
                       evaluate=False, progress=False)

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(control_module, "_probe", killed)
    with pytest.raises(KeyboardInterrupt):
        run(config)
    monkeypatch.undo()
    run(config)
    assert consumed(batches) == manifest_steps(out / "build", range(30))


def test_cpdt_trains_each_row_with_the_external_command_on_the_rows_own_build(tmp_path, tokenizer_path):
    """Two experiments, one seed: four rows (all, none, each alone), each row's build in OLMo-core's order
    (--target), each trained by the OLMo-core script from the same starting folder, every batch OLMo-core's loader
    served the row's manifest step (read by injc through the row map); the rows are then evaluated."""
    pytest.importorskip("olmo_core")
    from tests.loop.test_cpdt import cpdt_project

    plan = cpdt_project(tmp_path, tokenizer_path, 12)
    batches = tmp_path / "batches.jsonl"
    cmd = olmo_core_command(batches)
    result = run_injc("cpdt", plan, "--checkpoint", initial_model(tmp_path / "init"), "--out",
                      tmp_path / "report", "--seeds", "1", "--quiet", "--target", "olmo-core:5", "--train-cmd", cmd)
    assert result.returncode == 0, result.stderr
    rows = {}
    for record in map(json.loads, batches.read_text().splitlines()):
        rows.setdefault(record["data"], []).append((record["step"], record["sha256"]))
    expected = {str(tmp_path / "report" / "seed-0" / row / "build") for row in ("all", "none", "letters", "digits")}
    assert set(rows) == expected
    for build, steps in rows.items():
        assert json.loads((Path(build) / "export.json").read_text())["seed"] == 5
        assert steps == manifest_steps(Path(build), range(12)), build
    cells = json.loads((tmp_path / "report" / "cpdt.json").read_text())
    assert cells["design"]["train_cmd"] == cmd



def test_the_loop_grows_a_build_in_olmo_cores_order_and_olmo_cores_own_loader_serves_every_step(loop, tmp_path):  # noqa: F811
    """`injc run --target olmo-core:SEED`: each window grows the build in OLMo-core's order (files at full size);
    the trainer (tests/loop/olmo_core_trainer.py) reads {data} with OLMo-core's own dataset and data loader,
    continuing each window from the loader state it checkpointed. The batches it consumed, across the three
    windows, are the steps of a stream-order build of the plan with the same decided counts."""
    pytest.importorskip("olmo_core")
    out, batches = tmp_path / "loop", tmp_path / "batches.jsonl"
    plan = loop()
    cmd = olmo_core_command(batches)
    result = run_injc("run", plan, "--init", initial_model(tmp_path / "init"), "--out", out, "--quiet", "--no-eval",
                      "--target", "olmo-core:11", "--train-cmd", cmd)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "build" / "export.json").read_text())["seed"] == 11
    records = [json.loads(line) for line in (out / "control.jsonl").read_text().splitlines()]
    counts = [r["count"] for r in records]
    assert len(counts) == 3 and len(set(counts)) > 1  # the decisions changed the stream window by window
    plain = injc.build(plan, tmp_path / "plain", progress=False, counts={records[0]["experiment"]: counts})
    assert consumed(batches) == manifest_steps(plain.manifest_path.parent, range(30))


def test_bad_targets_of_the_loop_are_refused_before_any_work(loop, tmp_path):  # noqa: F811
    result = run_injc("run", loop(), "--init", initial_model(tmp_path / "init"), "--out", tmp_path / "r", "--quiet",
                      "--target", "megatron:3", "--train-cmd", "true {out}")
    assert_user_error(result, "only olmo-core is written directly")
    assert not (tmp_path / "r").exists()


def test_a_loop_command_that_grows_its_own_nanogpt_export_reads_every_step_through_stepbatches(loop, tmp_path):  # noqa: F811
    """The pattern docs/trainers.md gives for trainers read through an export: each window's command runs
    `injc export` into the same folder (written at the first window, grown at each later one, nothing to do when a
    window is retried), then trains from nanoGPT's StepBatches. A crash in window 1 is retried by the same loop
    command. The batches consumed are the manifest's steps."""
    out, batches, flag = tmp_path / "loop", tmp_path / "batches.jsonl", tmp_path / "crash"
    nano = tmp_path / "nano"
    cmd = (f"{sys.executable} -m injc export {{manifest}} --to nanogpt --out {nano} && "
           + command(batches, flag).replace(f"--batches {batches}", f"--batches {batches} --nanogpt {nano}"))
    flag.touch()
    args = ("run", loop(), "--init", initial_model(tmp_path / "init"), "--out", out, "--quiet", "--no-eval",
            "--train-cmd", cmd)
    assert run_injc(*args).returncode == 1  # window 1 crashed after its first step
    flag.unlink()
    resumed = run_injc(*args)
    assert resumed.returncode == 0, resumed.stderr
    steps = consumed(batches)
    assert steps[:11] == manifest_steps(out / "build", range(11))
    assert steps[11:] == manifest_steps(out / "build", range(10, 30))
    assert injc.verify(out / "build") == [] and "stage" not in json.loads((nano / "export.json").read_text())
