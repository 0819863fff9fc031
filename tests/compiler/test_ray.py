"""`injc build --executor ray` (a local Ray instance, 2 CPUs): the same bytes as a local build, and a build
interrupted midway resumes to them."""

import json
import subprocess
import sys

import numpy as np
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


def test_ray_workers_read_the_same_stream_in_small_chunks_from_any_cursor(tmp_path, tokenizer_path, monkeypatch):
    """The corpus cut into chunks of ~200 bytes (many more than are kept in flight) and read by 2 Ray workers: the
    tokens and every cursor equal a local read, for plain, zstd and parquet files, fresh and resumed mid-document;
    a malformed line comes back as the local build's one-line error."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    from injc.compiler import readers
    from injc.compiler.corpus import base_stream
    from injc.compiler.plan import CorpusConfig
    from injc.compiler.workers import RayExecutor, ray_session
    from injc.errors import InputError
    from injc.tokenizer import load_tokenizer

    monkeypatch.setattr(readers, "CHUNK_BYTES", 200)
    docs = make_documents(60, seed=21)
    write_jsonl(tmp_path / "a.jsonl", [{"text": d} for d in docs[:25]])
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        "".join(json.dumps({"text": d}) + "\n" for d in docs[25:]).encode()))
    pq.write_table(pa.table({"text": docs}), tmp_path / "c.parquet", row_group_size=7)
    tokenizer = load_tokenizer(tokenizer_path, None)
    jsonl = CorpusConfig((tmp_path / "a.jsonl", tmp_path / "b.jsonl.zst"), "jsonl", "text", None)
    parquet = CorpusConfig((tmp_path / "c.parquet",), "parquet", "text", None)

    def read(corpus, start, workers):
        chunks = list(base_stream(corpus, tokenizer, start, workers))
        begins = np.cumsum([0] + [len(c) for c, _ in chunks])
        cursors = [locate(g - begin) for (c, locate), begin in zip(chunks, begins)
                   for g in range(-(-begin // 37) * 37, begin + len(c), 37)]  # at every 37th token of the stream
        return np.concatenate([c for c, _ in chunks]), cursors

    executor = RayExecutor(workers=2)
    with ray_session(executor):
        for corpus in (jsonl, parquet):
            local = read(corpus, {}, None)
            chunk, locate = next(base_stream(corpus, tokenizer, {}, None))  # one local chunk: the whole corpus
            middle = locate(len(chunk) * 11 // 20)
            assert middle["file"] == len(corpus.files) - 1 and middle["document"] > 0 and middle["skip"] > 0
            for start in ({}, middle):
                on_ray, here = read(corpus, start, executor), read(corpus, start, None)
                assert np.array_equal(on_ray[0], here[0]) and on_ray[1] == here[1], (corpus.format, start)
            assert len(read(corpus, middle, executor)[0]) < len(local[0])
        lines = (tmp_path / "a.jsonl").read_text().splitlines()
        lines[20] = "{not json"
        (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
        with pytest.raises(InputError) as error:
            read(jsonl, {}, executor)
        assert str(error.value).endswith("line 21 is not valid JSON: Expecting property name enclosed in "
                                         "double quotes")


def test_a_ray_build_from_a_hugging_face_dataset_is_the_jsonl_build(project, tmp_path):
    """Ray tasks read a saved dataset's row ranges, or a builder's data files, opened in the worker (offline), and
    give the bytes of the JSONL build."""
    datasets = pytest.importorskip("datasets")
    from tests.compiler.test_hf_corpus import documents, files

    datasets.Dataset.from_dict({"text": documents(project.root)}).save_to_disk(str(project.root / "saved"))
    reference = injc.build(project(CANARIES), tmp_path / "jsonl", progress=False).out_dir
    for name, corpus in (("saved", 'paths = ["saved"]\nformat = "hf"'),
                         ("builder", 'paths = ["data/*.jsonl"]\nformat = "hf"\nbuilder = "json"')):
        process = ray_build(project(CANARIES, corpus=corpus), tmp_path / f"ray-{name}")
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert files(tmp_path / f"ray-{name}") == files(reference), name
