"""Mistakes a new user makes with their own project folder: never destroy their files, refuse wrong dtypes,
exit 130 on Ctrl-C with a way to continue, `injc check`, and error lines that point at the problem."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import injc
from injc.compiler import check as check_module
from tests.conftest import CANARIES, make_documents, write_jsonl
from tests.test_cli import REPO, assert_user_error
from tests.test_cli import injc as run_injc


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path → bytes): what must survive a refused command unchanged."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- build --force ---------------------------------------------------------------------------------------------


def test_force_never_replaces_the_plans_own_corpus_folder(project):
    plan = project(CANARIES)
    before = snapshot(project.root)
    result = run_injc("build", plan, "--out", project.root / "data", "--force", "--quiet")
    assert_user_error(result, "holds the plan's input", "a.jsonl")
    assert snapshot(project.root) == before


def test_force_never_replaces_a_folder_above_the_plan(project, tmp_path):
    plan = project(CANARIES)
    before = snapshot(project.root)
    assert_user_error(run_injc("build", plan, "--out", project.root, "--force", "--quiet"), "holds the plan's input")
    assert_user_error(run_injc("build", plan, "--out", project.root / "data" / "..", "--force", "--quiet"),
                      "holds the plan's input")
    (tmp_path / "link").symlink_to(project.root)
    assert_user_error(run_injc("build", plan, "--out", tmp_path / "link", "--force", "--quiet"),
                      "holds the plan's input")
    assert snapshot(project.root) == before


def test_force_replaces_an_earlier_build_but_nothing_else(project, tmp_path):
    plan = project(CANARIES)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("my notes")
    assert_user_error(run_injc("build", plan, "--out", notes, "--force", "--quiet"),
                      "--force replaces only an earlier injc build", "todo.txt")
    assert (notes / "todo.txt").read_text() == "my notes"

    out = tmp_path / "out"
    injc.build(plan, out, progress=False)
    assert_user_error(run_injc("build", plan, "--out", out, "--quiet"), "pass --force")
    (out / "shards" / "shard_00000.bin").write_bytes(b"stale")
    rebuilt = run_injc("build", plan, "--out", out, "--force", "--quiet")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert injc.verify(out) == []

    (out / "analysis.ipynb").write_text("{}")  # a user's file inside a build is not injc's to delete
    assert_user_error(run_injc("build", plan, "--out", out, "--force", "--quiet"), "analysis.ipynb")
    assert (out / "analysis.ipynb").read_text() == "{}"


# --- format = "tokens" dtype mistakes ---------------------------------------------------------------------------


@pytest.fixture
def token_plan(project):
    """A plan over one raw token file of ids 1..299 (a 400-id vocabulary), in the given on-disk dtype."""

    def write(on_disk: str, declared: str) -> Path:
        (project.root / "tok").mkdir(exist_ok=True)
        np.tile(np.arange(1, 300), 60).astype(on_disk).tofile(project.root / "tok" / "a.bin")
        return project(corpus=f'paths = ["tok/a.bin"]\nformat = "tokens"\ndtype = "{declared}"')

    return write


def test_uint32_tokens_declared_uint16_are_refused_naming_uint32(token_plan, tmp_path):
    result = run_injc("build", token_plan("<u4", "uint16"), "--out", tmp_path / "o", "--quiet")
    assert_user_error(result, "looks like uint32 tokens read as uint16", 'dtype = "uint32"')
    assert not (tmp_path / "o").exists()


def test_uint16_tokens_declared_uint32_are_refused_naming_uint16(token_plan, project, tmp_path):
    result = run_injc("build", token_plan("<u2", "uint32"), "--out", tmp_path / "o", "--quiet")
    assert_user_error(result, "outside the tokenizer's vocabulary", 'is dtype = "uint16"?')
    np.arange(1, 302).astype("<u2").tofile(project.root / "tok" / "a.bin")  # an odd number of uint16
    assert_user_error(run_injc("build", project.root / "plan.toml", "--out", tmp_path / "o", "--quiet"),
                      "not a whole number of uint32 tokens", 'is dtype = "uint16"?')


def test_correct_dtypes_still_build(token_plan, tmp_path):
    for on_disk, declared in (("<u2", "uint16"), ("<u4", "uint32")):
        plan = token_plan(on_disk, declared)
        injc.build(plan, tmp_path / declared, progress=False)
        stream = injc.open_stream(tmp_path / declared)
        assert np.array_equal(stream.tokens(0, 600), np.tile(np.arange(1, 300), 3)[:600])


def test_a_token_corpus_without_eos_builds_with_a_warning(token_plan, project, tmp_path):
    plan = token_plan("<u2", "uint16")  # ids 1..299: the tokenizer's EOS (id 0) never appears
    result = run_injc("build", plan, "--out", tmp_path / "o")
    assert result.returncode == 0 and "injc: warning: the token corpus holds no EOS id (0)" in result.stderr
    assert any("holds no EOS id (0)" in w for w in injc.check(plan).warnings)
    np.tile(np.r_[np.arange(1, 300), 0], 60).astype("<u2").tofile(project.root / "tok" / "a.bin")
    assert injc.build(plan, tmp_path / "with-eos", progress=False).warnings == ()


# --- Ctrl-C ------------------------------------------------------------------------------------------------------


def interruptible() -> None:
    """In the child before exec: take Ctrl-C's default action back. A shell without job control starts background
    jobs with SIGINT ignored, and Python then never raises KeyboardInterrupt (as a user's terminal would)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_after_shards(process: subprocess.Popen, done: Path, shards: int, timeout: float) -> str:
    """Ctrl-C a build once `shards` completion records exist in `done`; its stderr, after checking exit 130."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (done.is_dir() and len(list(done.glob("*.json"))) >= shards):
        time.sleep(0.001)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 130, stderr
    return stderr


def test_ctrl_c_exits_130_and_the_same_command_resumes_to_identical_bytes(project, tmp_path):
    """400 one-step shards, each synced: Ctrl-C lands after the 5th of them, long before the build ends."""
    write_jsonl(project.root / "data" / "c.jsonl", [{"text": t} for t in make_documents(1500, seed=4)])
    plan = project(CANARIES, layout="seq_len = 64\nbatch_size = 4\nsteps = 400\nseed = 7",
                   extra_layout="shard_tokens = 256")
    reference = tmp_path / "reference"
    injc.build(plan, reference, progress=False)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "injc", "build", str(plan), "--out", str(out), "--quiet"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=interruptible)
    done = tmp_path / ".out.injc-partial" / "done"
    stderr = interrupt_after_shards(process, done, 5, 60)
    assert "injc: interrupted; run the same command again to resume" in stderr and "Traceback" not in stderr
    assert not out.exists() and len(list(done.glob("*.json"))) < 400  # stopped midway, finished shards kept
    again = run_injc("build", plan, "--out", out, "--quiet")
    assert again.returncode == 0, again.stderr
    assert snapshot(out) == snapshot(reference)


# --- injc check --------------------------------------------------------------------------------------------------


def test_check_reports_every_input_and_writes_nothing(project):
    plan = project(CANARIES)
    before = snapshot(project.root)
    result = run_injc("check", plan)
    assert result.returncode == 0, result.stderr
    assert "tokenizer" in result.stdout and "(counted exactly)" in result.stdout
    assert "experiment 'canaries' (texts): 20 items, 60 copies" in result.stdout
    assert "placement: all 60 copies fit" in result.stdout
    assert snapshot(project.root) == before


def test_check_fails_like_the_build_would(project):
    short = project(CANARIES, layout="seq_len = 64\nbatch_size = 4\nsteps = 100000")
    assert_user_error(run_injc("check", short), "the plan needs 25,600,000: not enough")
    write_jsonl(project.root / "payloads" / "canaries.jsonl", [{"text": "a"}, {"txt": "b"}, {"text": 3}])
    assert_user_error(run_injc("check", project(CANARIES)), "lines 2, 3: needs a non-empty string 'text'")
    crowded = project(CANARIES.replace("repetitions = 3", "repetitions = 3000"))
    assert_user_error(run_injc("check", crowded), "canaries")


def test_a_sampled_estimate_is_close_to_the_exact_count(project, monkeypatch, tokenizer_path):
    """Force the sampler on a corpus of 40 files and compare with counting every token here."""
    from tokenizers import Tokenizer

    documents = make_documents(4000, seed=5)
    for index in range(40):
        write_jsonl(project.root / "data" / f"part{index:02d}.jsonl",
                    [{"text": t} for t in documents[index * 100:(index + 1) * 100]])
    monkeypatch.setattr(check_module, "EXACT_BYTES", 0)
    monkeypatch.setattr(check_module, "SAMPLE_BYTES", 8_000)
    report = injc.check(project(CANARIES))
    line = next(line for line in report.lines if line.startswith("corpus:"))
    assert "estimated" in line
    estimate = int(line.split("about ")[1].split(" tokens")[0].replace(",", ""))
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    texts = [t for path in sorted((project.root / "data").glob("*.jsonl"))
             for t in (json.loads(line)["text"] for line in path.read_text().splitlines())]
    exact = sum(len(e.ids) + 1 for e in tokenizer.encode_batch(texts, add_special_tokens=False))
    assert abs(estimate - exact) / exact < 0.05, (estimate, exact)


# --- error lines -------------------------------------------------------------------------------------------------


def test_payload_errors_give_every_bad_line_one_based(project, tmp_path):
    write_jsonl(project.root / "payloads" / "pinned.jsonl",
                [{"tokens": [1, 2], "offset": 0}, {"tokens": [3], "offset": -4}, {"tokens": [4], "offset": 64},
                 {"tokens": [5]}])
    plan = project('[[experiments]]\nname = "pinned"\nkind = "tokens"\nfile = "payloads/pinned.jsonl"\n'
                   'placement = "explicit"\n')
    assert_user_error(run_injc("build", plan, "--out", tmp_path / "o", "--quiet"),
                      "experiment 'pinned'", "lines 2, 4: needs a non-negative integer \"offset\"")
    (project.root / "payloads" / "pinned.jsonl").write_text('{"tokens": [1]}\nnot json\n\n[1]\n{"tokens": [2]}\n')
    result = run_injc("build", plan, "--out", tmp_path / "o", "--quiet")
    assert_user_error(result, "line 2: not valid JSON", "line 4: not a JSON object")


def test_every_bad_line_of_every_input_is_reported_in_one_run(project, tmp_path):
    lines = [{"text": f"canary {i}"} for i in range(10)]
    text = "".join(__import__("json").dumps(r) + "\n" for r in lines).splitlines()
    text[4] = "{not json"  # line 5
    text[8] = '{"txt": "no text field"}'  # line 9
    (project.root / "payloads" / "canaries.jsonl").write_text("\n".join(text) + "\n")
    (project.root / "payloads" / "controls.jsonl").write_text('{"text": "fine"}\n{"text": ""}\n[3]\n')
    plan = project('[[experiments]]\nname = "c"\nkind = "texts"\nfile = "payloads/canaries.jsonl"\n'
                   'controls = "payloads/controls.jsonl"\n')
    result = run_injc("build", plan, "--out", tmp_path / "o", "--quiet")
    assert_user_error(result, "canaries.jsonl' line 5: not valid JSON", "canaries.jsonl' line 9: needs a non-empty "
                      "string 'text'", "controls.jsonl' line 3: not a JSON object",
                      "controls.jsonl' line 2: needs a non-empty string 'text'")
    assert run_injc("check", plan).stderr.count("injc: error:") == 4
    write_jsonl(project.root / "payloads" / "pinned.jsonl",
                [{"tokens": [1, "x"], "offset": 0}, {"tokens": [3], "offset": -4}])
    plan = project('[[experiments]]\nname = "pinned"\nkind = "tokens"\nfile = "payloads/pinned.jsonl"\n'
                   'placement = "explicit"\n')
    assert_user_error(run_injc("build", plan, "--out", tmp_path / "o", "--quiet"),
                      "line 1: needs a list of integer token ids", "line 2: needs a non-negative integer \"offset\"")


def test_many_bad_lines_are_all_counted_and_the_first_twenty_named(project):
    write_jsonl(project.root / "payloads" / "canaries.jsonl", [{"txt": i} for i in range(25)])
    with pytest.raises(injc.InputError) as error:
        injc.check(project(CANARIES))
    named = ", ".join(str(line) for line in range(1, 21))
    assert error.value.problems == [f"experiment 'canaries': '{project.root / 'payloads' / 'canaries.jsonl'}' lines "
                                    f"{named} and 5 more: needs a non-empty string 'text'"]


def test_unknown_keys_get_a_suggestion_and_experiments_are_named(project):
    plan = project(CANARIES.replace("repetitions = 3", "repetitons = 3"))
    with pytest.raises(injc.PlanError) as error:
        injc.load_plan(plan)
    assert "  experiments[0] \"canaries\".repetitons: unknown key; did you mean 'repetitions'?" in error.value.problems


def test_the_holdout_error_says_how_many_tokens_to_reserve(project):
    iid = '[[experiments]]\nname = "iid"\nkind = "iid"\ncount = 10\n'
    with pytest.raises(injc.PlanError, match="set \\[corpus\\] holdout_tokens to at least 640"):
        injc.check(project(iid))
    small = project(iid, corpus='paths = ["data/*.jsonl"]\nholdout_tokens = 100')
    with pytest.raises(injc.LayoutError, match="set holdout_tokens to at least 640"):
        injc.check(small)


# --- inspect -----------------------------------------------------------------------------------------------------


def test_inspect_step_text_decodes_the_payloads(project, tmp_path):
    out = tmp_path / "out"
    injc.build(project(CANARIES), out, progress=False)
    step = int(np.argmax(injc.inspect(out).density))
    listing = run_injc("inspect", out / "manifest.json", "--step", step, "--text").stdout.splitlines()
    decoded = [line.strip() for line in listing if line.startswith("    ")]
    assert decoded and all(json.loads(text).startswith("<|endoftext|>canary ") for text in decoded)


def test_inspect_lists_tiers_in_numeric_order(project, tmp_path):
    write_jsonl(project.root / "payloads" / "q.jsonl",
                [{"question": f"q{i}", "choices": ["a", "b"], "answer": 0} for i in range(12)])
    plan = project('[[experiments]]\nname = "bench"\nkind = "contamination"\nfile = "payloads/q.jsonl"\n'
                   'tiers = { 0 = 3, 4 = 3, 12 = 3, 2 = 3 }\n')
    injc.build(plan, tmp_path / "out", progress=False)
    text = injc.inspect(tmp_path / "out").to_text()
    assert "tiers {0: 3, 2: 3, 4: 3, 12: 3}" in text


def test_bad_payloads_of_every_experiment_are_refused_before_the_corpus_is_read(project, tmp_path, monkeypatch):
    import injc.compiler.build as build_module

    def no_corpus(*args, **kwargs):
        raise AssertionError("the corpus was read before the payloads were checked")

    import injc.compiler.payloads as payloads_module

    monkeypatch.setattr(build_module, "PreparedStream", no_corpus)
    monkeypatch.setattr(build_module, "base_stream", no_corpus)
    monkeypatch.setattr(payloads_module, "streaming_counts", no_corpus)
    write_jsonl(project.root / "payloads" / "canaries.jsonl", [{"text": "ok"}, {"txt": 1}, {"text": ""}, {"x": 2}])
    write_jsonl(project.root / "payloads" / "more.jsonl", [{"text": "fine"}, {"text": 5}])
    plan = project(CANARIES + '\n[[experiments]]\nname = "more"\nkind = "texts"\nfile = "payloads/more.jsonl"\n',
                   corpus='paths = ["data/*.jsonl"]\nholdout_tokens = 500')
    with pytest.raises(injc.InputError) as error:
        injc.build(plan, tmp_path / "out", progress=False)
    assert error.value.problems == [
        f"experiment 'canaries': '{project.root / 'payloads' / 'canaries.jsonl'}' lines 2, 3, 4: needs a non-empty "
        f"string 'text'",
        f"experiment 'more': '{project.root / 'payloads' / 'more.jsonl'}' line 2: needs a non-empty string 'text'"]
    assert not (tmp_path / "out").exists()


def test_check_and_build_agree_on_a_dynamic_plan_and_build_refuses_it_at_once(project, tmp_path, monkeypatch):
    import injc.compiler.build as build_module

    write_jsonl(project.root / "payloads" / "docs.jsonl", [{"text": f"fact {i}"} for i in range(10)])
    write_jsonl(project.root / "payloads" / "probes.jsonl", [{"input": "fact", "target": "1"}])
    plan = project('[[experiments]]\nname = "facts"\nkind = "knowledge"\ndocuments = "payloads/docs.jsonl"\n'
                   'probes = "payloads/probes.jsonl"\nwindow_steps = 10\nper_window = "dynamic"\n'
                   '[experiments.control]\ntarget = 0.02\ninitial = 4\n')
    assert any("injc build refuses this plan" in w and "injc run" in w for w in injc.check(plan).warnings)
    monkeypatch.setattr(build_module, "load_tokenizer", lambda *a: (_ for _ in ()).throw(AssertionError("work")))
    with pytest.raises(injc.InjcError, match="experiment 'facts' has per_window = \"dynamic\""):
        injc.build(plan, tmp_path / "out", progress=False)


def test_missing_paths_are_said_to_be_missing_and_near_names_suggested(project, tmp_path):
    plan = project(CANARIES)
    built = injc.build(plan, tmp_path / "b", progress=False).manifest_path
    for option in ("--checkpoint", "--baseline"):
        args = ["--checkpoint", tmp_path / "ckpt"] if option == "--checkpoint" else [
            "--checkpoint", tmp_path / "ckpt", "--baseline", tmp_path / "base"]
        result = run_injc("eval", built, *args, "--out", tmp_path / "r", "--quiet")
        assert_user_error(result, f"{option} '{tmp_path / ('ckpt' if option == '--checkpoint' else 'base')}' "
                                  f"does not exist")
        assert "neither a LitGPT" not in result.stderr
    for given in ("OLMo-core", "olmo", "Megatron"):
        result = run_injc("export", built, "--to", given, "--out", tmp_path / "x")
        assert_user_error(result, f"got {given!r}", f"did you mean '{given.lower() if given != 'olmo' else 'olmo-core'}"
                          if given != "olmo" else "did you mean 'olmo-core'")
    checked = run_injc("check", project(CANARIES, corpus='paths = ["data/a.jsonl"]\nformat = "jsonl"'))
    assert checked.returncode == 0, checked.stderr
    assert ": 1 experiment;" in checked.stdout and "corpus: 1 file," in checked.stdout
