"""`injc build --executor ray` on a Ray cluster of several nodes (`ray.cluster_utils.Cluster`: a head and two
worker nodes on this machine) reading a corpus from S3 (moto's server): each reading task fetches its own chunk from
the store, the driver's node writes the shards. The bytes equal the local build's, also when a worker node is
lost midway."""

import threading
import time

import pytest

import injc
from injc.compiler.options import BuildOptions
from tests.conftest import CANARIES, make_documents, write_jsonl
from tests.s3_server import remote_corpus
from tests.test_user_mistakes import snapshot


def data_files(folder):
    """Every file of a build but its manifest (which names the corpus by where it was read)."""
    return {name: data for name, data in snapshot(folder).items() if name != "manifest.json"}

ray = pytest.importorskip("ray")


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
