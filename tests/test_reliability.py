"""Crash safety, resume, locking, write failures: a build is either complete and verified, or absent."""

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import injc
from injc.shards.files import folder_lock
from tests.conftest import CANARIES

REPO = Path(__file__).resolve().parents[1]
MANY_SHARDS = "shard_tokens = 256"  # one step per shard: 50 shards, each synced and recorded


def output_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def start_build(plan: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "injc", "build", str(plan), "--out", str(out), "--quiet"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_build(plan: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "injc", "build", str(plan), "--out", str(out), "--quiet"],
                          cwd=REPO, capture_output=True, text=True)


@pytest.fixture
def plans(project, tmp_path):
    streaming = project(CANARIES, extra_layout=MANY_SHARDS)
    reference = tmp_path / "reference"
    injc.build(streaming, reference, progress=False)
    return streaming, output_bytes(reference)


@pytest.mark.parametrize("kill_after_shards", [1, 9, 31])
def test_killed_builds_resume_to_byte_identical_output(plans, tmp_path, kill_after_shards):
    plan, reference = plans
    out = tmp_path / "out"
    partial = tmp_path / ".out.injc-partial"
    process = start_build(plan, out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        done = partial / "done"
        if done.is_dir() and len(list(done.glob("*.json"))) >= kill_after_shards:
            break
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists(), "a killed build never claims completeness"
    finished = sorted((partial / "done").glob("*.json"))
    assert len(finished) >= kill_after_shards
    first_shard = partial / "shards" / "shard_00000.bin"
    kept_mtime = first_shard.stat().st_mtime_ns
    resumed = run_build(plan, out)
    assert resumed.returncode == 0, resumed.stderr
    assert output_bytes(out) == reference
    assert (out / "shards" / "shard_00000.bin").stat().st_mtime_ns == kept_mtime, "finished shards were kept"
    assert not partial.exists() and injc.verify(out) == []


def test_kill_at_random_early_moments_then_resume(plans, tmp_path):
    plan, reference = plans
    out = tmp_path / "out"
    for delay in (0.05, 0.4, 0.9):
        process = start_build(plan, out)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (out / "manifest.json").exists() or output_bytes(out) == reference
    finished = run_build(plan, out) if not (out / "manifest.json").exists() else None
    assert finished is None or finished.returncode == 0
    assert output_bytes(out) == reference


def test_a_resumed_build_with_changed_inputs_starts_over(plans, project, tmp_path):
    plan, _ = plans
    out = tmp_path / "out"
    process = start_build(plan, out)
    while process.poll() is None and not list((tmp_path / ".out.injc-partial" / "done").glob("*.json")):
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()
    changed = project(CANARIES.replace("repetitions = 3", "repetitions = 2"), extra_layout=MANY_SHARDS)
    assert run_build(changed, out).returncode == 0
    fresh = tmp_path / "fresh"
    injc.build(changed, fresh, progress=False)
    assert output_bytes(out) == output_bytes(fresh)


def test_a_second_build_into_the_same_output_is_refused(plans, tmp_path):
    plan, _ = plans
    out = tmp_path / "out"
    with folder_lock(out, "build"):
        second = run_build(plan, out)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"injc: error: another injc build is writing {str(out)!r} (pid {os.getpid()})" in second.stderr
    assert not out.exists()
    assert run_build(plan, out).returncode == 0, "the lock is gone with its holder"


def test_a_full_disk_is_a_clear_error_and_leaves_nothing(plans, tmp_path, monkeypatch):
    plan, _ = plans
    import injc.shards.writer as writer

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(writer, "write_synced", full)
    with pytest.raises(injc.InjcError, match="cannot write the build: No space left on device"):
        injc.build(plan, tmp_path / "out", progress=False)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))] == []


def test_a_build_that_fails_before_it_needs_the_corpus_hash_exits_without_waiting_for_it(project, tmp_path):
    """The corpus is hashed in the background while the payloads are checked; a bad payload ends the process at
    once even when that hash would never finish (a huge corpus), here a hash that blocks forever."""
    (project.root / "payloads" / "bad.jsonl").write_text('{"text": "fine"}\nnot json\n')
    plan = project('[[experiments]]\nname = "bad"\nkind = "texts"\nfile = "payloads/bad.jsonl"\n')
    script = ("import threading, sys, injc, injc.compiler.build as build\n"
              "build.fingerprint_files = lambda *args: threading.Event().wait()\n"
              "try:\n    injc.build(sys.argv[1], sys.argv[2], progress=False)\n"
              "except injc.InjcError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", script, str(plan), str(tmp_path / "out")], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert "line 2: not valid JSON" in result.stdout and not (tmp_path / "out").exists()


def test_an_unwritable_output_is_a_clear_error(plans, tmp_path):
    plan, _ = plans
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_build(plan, blocker / "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("injc: error: ") and len(result.stderr.strip().splitlines()) == 1


def test_no_pickle_no_eval_and_safe_torch_loads():
    sources = {p: p.read_text() for p in (REPO / "injc").rglob("*.py")}
    builtin_call = re.compile(r"(?<![\w.])(eval|exec|compile|__import__)\(")
    for path, text in sources.items():
        # nothing is unpickled; the one pickle written is nanoGPT's meta.pkl (injc export --to nanogpt)
        assert not re.search(r"pickle\.(loads?|Unpickler)\b", text) and not builtin_call.search(text), path
        assert "pickle" not in text or path.name == "exports.py", path
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"


def test_an_interrupted_build_with_a_holdout_keeps_its_tokenized_stream(project, tmp_path):
    """holdout_tokens makes a prepared stream (pass 1 tokenizes into the partial folder); Ctrl-C during pass 2
    leaves it, and the rerun writes the remaining shards from it without tokenizing the corpus again."""
    plan = project(CANARIES, extra_layout=MANY_SHARDS + "\n", corpus='paths = ["data/*.jsonl"]\nformat = "jsonl"\n'
                   'holdout_tokens = 2000')
    out, partial = tmp_path / "out", tmp_path / ".out.injc-partial"
    command = [sys.executable, "-m", "injc", "build", str(plan), "--out", str(out)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if (partial / "done").is_dir() and len(list((partial / "done").glob("*.json"))) >= 5:
            break
        time.sleep(0.001)
    process.send_signal(signal.SIGINT)
    process.wait()
    if process.returncode == 0:
        pytest.skip("the build finished before the interrupt arrived")
    assert (partial / "stream.pass1.done").is_file()  # pass 1 finished before the interrupt
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "tokenize" not in resumed.stderr.replace("tokenize+write", "")  # pass 1's bar is "tokenize"
    assert "write" in resumed.stderr and injc.verify(out) == []
    fresh = injc.build(plan, tmp_path / "fresh", progress=False).out_dir
    assert output_bytes(out) == output_bytes(fresh)
