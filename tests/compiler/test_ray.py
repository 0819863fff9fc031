"""`injc build --executor ray` (a local Ray instance, 2 CPUs): the same bytes as a local build, and a build
interrupted midway resumes to them."""

import subprocess
import sys

import pytest

import injc
from tests.conftest import CANARIES, make_documents, write_jsonl
from tests.test_cli import REPO
from tests.test_user_mistakes import interrupt_after_shards, interruptible, snapshot

pytest.importorskip("ray")


@pytest.fixture
def long_plan(project):
    write_jsonl(project.root / "data" / "c.jsonl", [{"text": t} for t in make_documents(1500, seed=4)])
    return project(CANARIES, layout="seq_len = 64\nbatch_size = 4\nsteps = 400\nseed = 7",
                   extra_layout="shard_tokens = 256")


def ray_build(plan, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "injc", "build", str(plan), "--out", str(out), "--quiet",
                             "--executor", "ray", "--workers", "2", *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)


def test_a_ray_build_is_byte_identical_to_a_local_one_and_resumes_after_ctrl_c(long_plan, tmp_path):
    reference = tmp_path / "reference"
    injc.build(long_plan, reference, progress=False)
    whole = ray_build(long_plan, tmp_path / "whole")
    _, stderr = whole.communicate(timeout=300)
    assert whole.returncode == 0, stderr
    assert snapshot(tmp_path / "whole") == snapshot(reference)

    out = tmp_path / "out"
    process = ray_build(long_plan, out)
    done = tmp_path / ".out.injc-partial" / "done"
    interrupt_after_shards(process, done, 5, 120)
    assert not out.exists() and len(list(done.glob("*.json"))) < 400  # stopped midway, finished shards kept
    again = ray_build(long_plan, out)
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert snapshot(out) == snapshot(reference)


def test_ray_actors_return_many_batches_in_submission_order(tokenizer_path):
    """Many small batches over 2 actors (more than are kept in flight), compared with tokenizing here."""
    from tokenizers import Tokenizer

    from injc.compiler.workers import RayExecutor, encode_on_ray

    tokenizer_json = tokenizer_path.read_text()
    batches = [([(0, i)], [f"document {i} " + " ".join(make_documents(3, seed=i))]) for i in range(20)]
    results = list(encode_on_ray(iter(batches), tokenizer_json, RayExecutor(actors=2)))
    direct = Tokenizer.from_str(tokenizer_json)
    assert [keys for keys, _ in results] == [keys for keys, _ in batches]
    for (_, texts), (_, encoded) in zip(batches, results):
        assert [list(e) for e in encoded] == [direct.encode(t, add_special_tokens=False).ids for t in texts]
