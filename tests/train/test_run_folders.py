"""Run folders never mix runs: a second run is refused or replaces the first whole, a resume continues only the
same manifest, Ctrl-C leaves a checkpoint to resume from, and `injc eval` reads shell-expanded and quoted globs."""

import dataclasses
import json
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
