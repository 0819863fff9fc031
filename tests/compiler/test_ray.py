"""`injc build --executor ray` (a local Ray instance, 2 CPUs): the same bytes as a local build, and a build
interrupted midway resumes to them. On a Ray cluster of several nodes (`ray.cluster_utils.Cluster`: a head and two
worker nodes on this machine) reading a corpus from S3 (moto's server): each reading task fetches its own chunk from
the store, the driver's node writes the shards; the bytes equal the local build's, also when a worker node is lost
midway. One module, so that its Ray instances never run beside each other (a local `ray.init()` joins a cluster
already running on the machine)."""

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import injc
from injc.compiler.options import BuildOptions
from tests.conftest import CANARIES, make_documents, write_jsonl
from tests.s3_server import remote_corpus
from tests.test_cli import REPO
from tests.test_user_mistakes import interrupt_after_shards, interruptible, snapshot

ray = pytest.importorskip("ray")


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


def data_files(folder):
    """Every file of a build but its manifest (which names the corpus by where it was read)."""
    return {name: data for name, data in snapshot(folder).items() if name != "manifest.json"}

@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the head only drives and writes
    workers = [nodes.add_node(num_cpus=1, resources={f"reader_{i}": 1}) for i in range(2)]
    nodes.wait_for_nodes()
    yield nodes, workers
    ray.shutdown()
    nodes.shutdown()


def test_a_cluster_build_from_s3_is_the_local_build_also_when_a_node_is_lost(cluster, endpoint, bucket, project,
                                                                              tmp_path):
    from injc.compiler.workers import RayExecutor

    nodes, workers = cluster
    fs, name = bucket
    extra = project.root / "data" / "c.jsonl"
    write_jsonl(extra, [{"text": t} for t in make_documents(600, seed=4)])
    fs.put_file(str(extra), f"{name}/data/c.jsonl")
    layout = "seq_len = 64\nbatch_size = 4\nsteps = 200\nseed = 7"
    local = project(CANARIES, layout=layout, extra_layout="shard_tokens = 256")
    injc.build(local, tmp_path / "local", progress=False)
    remote = project(CANARIES, layout=layout, extra_layout="shard_tokens = 256",
                     corpus=remote_corpus(endpoint, f"s3://{name}/data/*.jsonl"))
    options = BuildOptions(progress=False, workers=RayExecutor(nodes.address))
    injc.build(remote, tmp_path / "cluster", options)
    assert data_files(tmp_path / "cluster") == data_files(tmp_path / "local")

    done = tmp_path / ".lost.injc-partial" / "done"

    def lose_a_node():  # once a few shards are written, a worker node goes away with its running tasks
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(done.glob("*.json"))) < 3:
            time.sleep(0.05)
        nodes.remove_node(workers[0], allow_graceful=False)

    killer = threading.Thread(target=lose_a_node)
    killer.start()
    try:
        injc.build(remote, tmp_path / "lost", options)
    except Exception:  # the lost node's tasks could not be retried: the same command resumes the build
        injc.build(remote, tmp_path / "lost", options)
    killer.join()
    assert data_files(tmp_path / "lost") == data_files(tmp_path / "local")
    assert len(data_files(tmp_path / "local")) > 50  # shards, tables, tokenizer
