"""`injc train --devices 2` (Lightning Fabric DDP, gloo on the CPU): each step still consumes exactly the step's
batch, the watermark noise reaches the right rows on every rank, a run resumes across a change of devices, and
two "nodes" started by torchrun train as one process."""

import json
import socket
import subprocess
import sys

import pytest

import injc
from tests.conftest import CANARIES
from tests.test_cli import assert_user_error
from tests.test_cli import injc as run_injc
from tests.train.conftest import training_project

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

WATERMARK = """
[[experiments]]
name = "gw"
kind = "gaussian-watermark"
steps = [1, 4]
std = 0.5
"""


@pytest.fixture(scope="module")
def build(tmp_path_factory, tokenizer_path):
    root = training_project(tmp_path_factory.mktemp("devices"), tokenizer_path, 20, CANARIES + WATERMARK)
    injc.build(root / "plan.toml", root / "out", progress=False)
    return root


def train(build, out, *args):
    result = run_injc("train", build / "out" / "manifest.json", "--model", build / "tiny.yaml", "--out", out,
                      "--device", "cpu", "--audit", "--micro-batch-size", "1", "--quiet", *args)
    assert result.returncode == 0, result.stderr
    return result


def lines(path, key):
    return [json.loads(line)[key] for line in path.read_text().splitlines()]


def weights(folder):
    return torch.load(folder / "lit_model.pth", weights_only=True)


def test_two_processes_train_the_same_steps_as_one(build, tmp_path):
    train(build, tmp_path / "one", "--steps", "6")
    result = train(build, tmp_path / "two", "--steps", "6", "--devices", "2")
    assert result.stdout.count("trained:") == 1
    assert lines(tmp_path / "two" / "audit.jsonl", "tokens_sha256") == lines(tmp_path / "one" / "audit.jsonl",
                                                                             "tokens_sha256")
    # steps 1 and 4 carry the watermark: a rank that noised the wrong rows would change these losses
    assert lines(tmp_path / "two" / "metrics.jsonl", "loss") == pytest.approx(
        lines(tmp_path / "one" / "metrics.jsonl", "loss"), rel=1e-5)
    one, two = weights(tmp_path / "one" / "final"), weights(tmp_path / "two" / "final")
    assert one.keys() == two.keys() and all(torch.allclose(one[k], two[k], atol=1e-5) for k in one)


def test_a_run_resumes_on_another_number_of_devices(build, tmp_path):
    train(build, tmp_path / "straight", "--steps", "6")
    train(build, tmp_path / "run", "--steps", "3")
    train(build, tmp_path / "run", "--steps", "6", "--devices", "2", "--resume")
    assert lines(tmp_path / "run" / "audit.jsonl", "tokens_sha256") == lines(
        tmp_path / "straight" / "audit.jsonl", "tokens_sha256")
    assert lines(tmp_path / "run" / "metrics.jsonl", "loss") == pytest.approx(
        lines(tmp_path / "straight" / "metrics.jsonl", "loss"), rel=1e-5)
    straight, resumed = weights(tmp_path / "straight" / "final"), weights(tmp_path / "run" / "final")
    assert all(torch.allclose(straight[k], resumed[k], atol=1e-5) for k in straight)


def test_device_counts_that_cannot_split_the_batch_and_other_strategies_are_refused(build, tmp_path):
    manifest = build / "out" / "manifest.json"
    assert_user_error(run_injc("train", manifest, "--model", build / "tiny.yaml", "--out", tmp_path / "r",
                               "--device", "cpu", "--devices", "3"), "--devices × --num-nodes = 3 does not divide")
    assert_user_error(run_injc("train", manifest, "--model", build / "tiny.yaml", "--out", tmp_path / "r",
                               "--device", "cpu", "--devices", "2", "--strategy", "fsdp"), "FSDP is not supported")
    assert not (tmp_path / "r").exists()


def test_two_nodes_started_by_a_cluster_launcher_train_the_same_steps_as_one(build, tmp_path):
    """--num-nodes 2 with one process per node, each started by torchrun as on a cluster (both nodes on this
    machine, sharing --out as a shared file system would)."""
    train(build, tmp_path / "one", "--steps", "6")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank",
         str(node), "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "injc", "train",
         str(build / "out" / "manifest.json"), "--model", str(build / "tiny.yaml"), "--out", str(tmp_path / "two"),
         "--device", "cpu", "--audit", "--micro-batch-size", "1", "--quiet", "--steps", "6", "--devices", "1",
         "--num-nodes", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in range(2)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert sum(out.count("trained:") for out, _ in outputs) == 1
    assert lines(tmp_path / "two" / "audit.jsonl", "tokens_sha256") == lines(tmp_path / "one" / "audit.jsonl",
                                                                             "tokens_sha256")
    # an unsynchronized node would train on half of each step and leave these losses from step 1 on; the final
    # weights are not compared: AdamW turns the all-reduce's other summation order in near-zero gradients into
    # differences up to 1.5e-5 (one bias, measured), of the order of the learning rate
    assert lines(tmp_path / "two" / "metrics.jsonl", "loss") == pytest.approx(
        lines(tmp_path / "one" / "metrics.jsonl", "loss"), rel=1e-5)
    assert (tmp_path / "two" / "final" / "lit_model.pth").is_file()
