"""Run folders never mix runs: a second run is refused or replaces the first whole, a resume continues only the
same manifest, Ctrl-C leaves a checkpoint to resume from, and `injc eval` reads shell-expanded and quoted globs."""

import dataclasses
import json
import re
import signal
import subprocess
import sys
import time

import pytest

import injc
from tests.test_cli import REPO, assert_user_error
from tests.test_cli import injc as run_injc
from tests.test_user_mistakes import interruptible, snapshot
from tests.train.conftest import run

pytest.importorskip("torch")
pytest.importorskip("litgpt")


def train_cli(built, out, *args):
    return run_injc("train", built / "out" / "manifest.json", "--model", built / "tiny.yaml", "--out", out,
                    "--quiet", *args)


def test_a_second_run_into_a_used_folder_is_refused_and_changes_nothing(built, tmp_path):
    out = tmp_path / "run"
    run(built, out, steps=6, save_steps=(3,), audit=True)
    before = snapshot(out)
    assert_user_error(train_cli(built, out, "--steps", "4"), "is not empty", "--resume", "--force")
    assert snapshot(out) == before


def test_force_replaces_the_whole_run_and_nothing_else(built, tmp_path):
    out = tmp_path / "run"
    run(built, out, steps=6, save_steps=(5,), audit=True)
    run(built, out, steps=2, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["final", "metrics.jsonl"]  # no stale step-000005, no audit
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [0, 1]

    (out / "my-notes.md").write_text("keep me")
    with pytest.raises(injc.InjcError, match="my-notes.md"):
        run(built, out, steps=2, force=True)
    assert (out / "my-notes.md").read_text() == "keep me" and (out / "final").is_dir()


def test_resume_refuses_a_checkpoint_of_another_manifest(built, tmp_path):
    from injc.train.trainer import TrainConfig, train

    clean = tmp_path / "clean"
    injc.build(built / "plan.toml", clean, clean=True, progress=False)  # same plan, other shards
    out = tmp_path / "run"
    run(built, out, steps=3)
    before = snapshot(out)
    with pytest.raises(injc.InjcError, match="was trained on another manifest .*the builds' keys .* differ"):
        train(clean / "manifest.json", TrainConfig(model=str(built / "tiny.yaml"), out=out, steps=5, resume=True),
              progress=False)
    assert snapshot(out) == before


def test_resume_with_fewer_steps_than_done_is_an_error(built, tmp_path):
    out = tmp_path / "run"
    run(built, out, steps=6)
    with pytest.raises(injc.InjcError, match="has already trained 6 steps"):
        run(built, out, steps=4, resume=True)
    before = snapshot(out)
    assert run(built, out, steps=6, resume=True) == out / "final"  # nothing left to do: nothing changes
    assert snapshot(out) == before
    with pytest.raises(injc.InjcError, match="more than the manifest's run of 50 steps"):
        run(built, out, steps=80, force=True)


def test_resume_without_a_run_creates_nothing(built, tmp_path):
    out = tmp_path / "nothing-here"
    with pytest.raises(injc.InjcError, match="no checkpoint"):
        run(built, out, steps=2, resume=True)
    assert not out.exists()


def test_save_every_and_save_steps_are_both_understood(built, tmp_path):
    run(built, tmp_path / "every", steps=7, save_every=3)
    assert sorted(p.name for p in (tmp_path / "every").glob("step-*")) == ["step-000003", "step-000006"]
    run(built, tmp_path / "list", steps=7, save_steps=(2, 5))
    assert sorted(p.name for p in (tmp_path / "list").glob("step-*")) == ["step-000002", "step-000005"]


def test_ctrl_c_stops_with_a_checkpoint_and_resume_matches_an_uninterrupted_run(built, tmp_path):
    straight = tmp_path / "straight"
    run(built, straight, audit=True)
    out = tmp_path / "stopped"
    command = [sys.executable, "-m", "injc", "train", str(built / "out" / "manifest.json"), "--model",
               str(built / "tiny.yaml"), "--out", str(out), "--audit"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=interruptible)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait for the first trained step (the log is line-buffered)
        metrics = out / "metrics.jsonl"
        if metrics.is_file() and metrics.stat().st_size > 0:
            break
        time.sleep(0.002)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "injc: interrupted: stopped after step" in stderr and "add --resume" in stderr
    assert "Traceback" not in stderr
    (checkpoint,) = out.glob("step-*")
    steps_done = json.loads((checkpoint / "train_state.json").read_text())["steps_done"]
    assert 0 < steps_done < 50
    resumed = subprocess.run(command + ["--resume", "--quiet"], cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "audit.jsonl").read_text() == (straight / "audit.jsonl").read_text()


def test_eval_takes_shell_expanded_and_quoted_globs_and_warns_on_another_manifest(built, tmp_path):
    from injc.evals.report import resolve_checkpoints

    out = tmp_path / "run"
    run(built, out, steps=4, save_every=2)
    expanded = sorted(str(p) for p in out.glob("step-*"))  # what the shell passes for runs/r/step-*
    result = run_injc("eval", built / "out" / "manifest.json", "--checkpoint", *expanded, "--out", tmp_path / "r1",
                      "--quiet")
    assert result.returncode == 0, result.stderr
    assert [r["steps_done"] for r in json.loads((tmp_path / "r1" / "report.json").read_text())["checkpoints"]] == [2, 4]
    assert "warning" not in result.stderr

    clean = tmp_path / "clean"  # the same plan's control build: other shards, so the checkpoints do not belong to it
    injc.build(built / "plan.toml", clean, clean=True, progress=False)
    result = run_injc("eval", clean / "manifest.json", "--checkpoint", str(out / "step-*"), "--out", tmp_path / "r2",
                      "--quiet")
    assert result.returncode == 0, result.stderr
    assert [r["steps_done"] for r in json.loads((tmp_path / "r2" / "report.json").read_text())["checkpoints"]] == [2, 4]
    assert result.stderr.count("injc: warning:") == 2 and "was trained on another manifest" in result.stderr
    assert "was trained on another manifest" in (tmp_path / "r2" / "report.md").read_text()

    with pytest.raises(injc.InjcError, match="matches no folder"):
        resolve_checkpoints([str(out / "nope-*")])


def test_a_staged_build_trains_up_to_its_last_step_and_resumes_once_grown(built, tmp_path):
    from injc.train.trainer import TrainConfig, train

    staged = tmp_path / "staged"
    injc.build(built / "plan.toml", staged, until_step=5, progress=False)
    config = TrainConfig(model=str(built / "tiny.yaml"), out=tmp_path / "run", audit=True)
    with pytest.raises(injc.InjcError, match=r"the build is staged: it holds steps \[0, 5\) of 50"):
        train(staged / "manifest.json", config, progress=False)
    assert not (tmp_path / "run").exists()
    train(staged / "manifest.json", dataclasses.replace(config, steps=5), progress=False)
    injc.build(built / "plan.toml", staged, until_step=8, progress=False)
    train(staged / "manifest.json", dataclasses.replace(config, steps=8, resume=True), progress=False)
    whole = run(built, tmp_path / "whole", steps=8, audit=True)
    audit = [json.loads(line)["tokens_sha256"] for line in (tmp_path / "run" / "audit.jsonl").read_text().splitlines()]
    expected = [json.loads(line)["tokens_sha256"] for line in (whole.parent / "audit.jsonl").read_text().splitlines()]
    assert audit == expected and len(audit) == 8


def test_a_command_into_a_run_folder_another_process_is_writing_is_refused(built, tmp_path):
    from injc.shards.files import folder_lock

    out = tmp_path / "run"
    run(built, out, steps=4, save_steps=(2,), audit=True)
    before = snapshot(out)
    with folder_lock(out, "training run"):  # this test process holds the folder, as a running injc train does
        second = train_cli(built, out, "--resume")
    assert_user_error(second, f"another injc training run is writing {str(out)!r} (pid ")
    assert snapshot(out) == before
    resumed = train_cli(built, out, "--resume", "--steps", "6", "--audit")
    assert resumed.returncode == 0, "the lock is gone with its holder"
    assert [json.loads(line)["step"] for line in (out / "audit.jsonl").read_text().splitlines()] == list(range(6))


def cosine_lr(step, total, lr, min_lr, warmup):
    """LitGPT's schedule written out: linear warmup, then cosine from lr to min_lr over the rest of the run."""
    import math

    if step < warmup:
        return lr * (step + 1) / warmup
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def logged_lr(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return {json.loads(line)["step"]: json.loads(line)["lr"] for line in lines}


def test_resume_keeps_the_recorded_settings_and_refuses_a_different_one_unless_overridden(built, tmp_path):
    out = tmp_path / "run"
    run(built, out, steps=6, lr=3e-3, warmup_steps=2, weight_decay=0.05)
    run(built, out, steps=10, resume=True)  # no settings given: the recorded ones
    logged = logged_lr(out)
    assert [logged[s] for s in range(10)] == pytest.approx([cosine_lr(s, 50, 3e-3, 4e-5, 2) for s in range(10)])
    settings = json.loads((out / "final" / "train_state.json").read_text())["settings"]
    assert settings == {"lr": 3e-3, "min_lr": 4e-5, "weight_decay": 0.05, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0,
                        "micro_batch_size": 4, "warmup_steps": 2, "seed": 7}
    before = snapshot(out)
    assert_user_error(train_cli(built, out, "--resume", "--steps", "12", "--lr", "1e-3"),
                      "--lr 0.001 differs from the 0.003 the run", "--override-settings")
    assert snapshot(out) == before
    result = train_cli(built, out, "--resume", "--steps", "12", "--lr", "1e-3", "--override-settings")
    assert result.returncode == 0, result.stderr
    logged = logged_lr(out)
    assert logged[10] == pytest.approx(cosine_lr(10, 50, 1e-3, 4e-5, 2))


def test_resume_with_another_model_is_one_line(built, tmp_path):
    out = tmp_path / "run"
    run(built, out, steps=2)
    (tmp_path / "wider.yaml").write_text((built / "tiny.yaml").read_text().replace("n_embd: 32", "n_embd: 64"))
    result = run_injc("train", built / "out" / "manifest.json", "--model", tmp_path / "wider.yaml", "--out", out,
                      "--resume", "--steps", "4", "--quiet")
    assert_user_error(result, "the model given differs from the one", "n_embd 64 (checkpoint: 32)")


def test_training_shows_progress_and_ends_with_a_summary(built, tmp_path):
    out = tmp_path / "run"
    result = run_injc("train", built / "out" / "manifest.json", "--model", built / "tiny.yaml", "--out", out,
                      "--steps", "5", "--save-steps", "2")
    assert result.returncode == 0, result.stderr
    assert "train:" in result.stderr and "5/5" in result.stderr  # tqdm's bar: label and count
    loss = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["loss"]
    assert "trained steps 0-5 in" in result.stderr and f"final loss {loss:.4f}" in result.stderr
    assert f"checkpoints in {out}: step-000002, final" in result.stderr
    output = (result.stdout + result.stderr).splitlines()
    closing = [line for line in output if "final" in line and "train:" not in line]
    assert len(closing) == 1 and result.stdout == ""  # one closing line, not two that repeat each other


def test_resume_needs_no_model_and_quiet_prints_nothing(built, tmp_path):
    import torch

    out = tmp_path / "run"
    run(built, out, steps=2)
    result = run_injc("train", built / "out" / "manifest.json", "--out", out, "--resume", "--steps", "4", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert json.loads((out / "final" / "train_state.json").read_text())["steps_done"] == 4
    straight = run(built, tmp_path / "straight", steps=4)  # resumed with the checkpoint's own config: the same model
    resumed = torch.load(out / "final" / "lit_model.pth", weights_only=True)
    for name, tensor in torch.load(straight / "lit_model.pth", weights_only=True).items():
        assert torch.allclose(resumed[name], tensor, atol=1e-6), name


def test_eval_checks_every_checkpoint_first_and_prints_a_summary(built, tmp_path, monkeypatch):
    import shutil

    from injc.evals import report as report_module

    out = tmp_path / "run"
    run(built, out, steps=2)
    small = tmp_path / "small-vocab"
    shutil.copytree(out / "final", small)
    config = (small / "model_config.yaml").read_text()
    (small / "model_config.yaml").write_text(re.sub(r"padded_vocab_size: \d+", "padded_vocab_size: 100", config))
    vocab = json.loads((built / "out" / "manifest.json").read_text())["layout"]["vocab_size"]
    result = run_injc("eval", built / "out" / "manifest.json", "--checkpoint", out / "final", small, "--out",
                      tmp_path / "r0", "--quiet")
    assert_user_error(result, f"--checkpoint {str(small)!r} has 100 embedding rows but the build's tokenizer has "
                              f"{vocab} ids")
    assert not (tmp_path / "r0").exists()

    clean = tmp_path / "clean"
    injc.build(built / "plan.toml", clean, clean=True, progress=False)
    heard, evaluated = [], []
    original = report_module.evaluate_checkpoint
    monkeypatch.setattr(report_module, "evaluate_checkpoint",
                        lambda *args, **kwargs: evaluated.append(heard[:]) or original(*args, **kwargs))
    report_module.evaluate(clean / "manifest.json", [out / "final"], tmp_path / "r1", progress=False,
                           on_warning=heard.append)
    assert evaluated == [heard] and "was trained on another manifest" in heard[0], "warned before evaluating"

    result = run_injc("eval", built / "out" / "manifest.json", "--checkpoint", out / "final", "--out", tmp_path / "r2",
                      "--quiet")
    report = json.loads((tmp_path / "r2" / "report.json").read_text())
    loss = report["experiments"]["canaries"]["metrics"]["mean_loss"]
    assert result.returncode == 0 and f"canaries (texts): mean loss {loss:.4f}" in result.stdout


def test_small_p_values_read_as_below_a_thousandth():
    from injc.evals.markdown import p_cell, p_text

    assert [p_cell(p) for p in (0.0004, 0.001, 0.0123, None)] == ["< 0.001", "0.001", "0.012", "—"]
    assert p_text(0.00001) == "p < 0.001" and p_text(0.2) == "p = 0.200"
