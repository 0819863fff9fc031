"""`injc train --devices 2` (Lightning Fabric, DDP and FSDP, gloo on the CPU): each step still consumes exactly the
step's batch, the watermark noise reaches the right rows on every rank, checkpoints are a single device's, a run
resumes across a change of devices and strategy, and two "nodes" started by torchrun train as one process."""

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


def train(build, out, *args, quiet: bool = True):
    result = run_injc("train", build / "out" / "manifest.json", "--model", build / "tiny.yaml", "--out", out,
                      "--device", "cpu", "--audit", "--micro-batch-size", "1", *(["--quiet"] if quiet else []), *args)
    assert result.returncode == 0, result.stderr
    return result


def lines(path, key):
    return [json.loads(line)[key] for line in path.read_text().splitlines()]


def weights(folder):
    return torch.load(folder / "lit_model.pth", weights_only=True)


def same_weights(a: dict, b: dict) -> bool:
    """Equal to 1e-5, but 1e-4 for attn.qkv.bias: it holds the keys' bias, which gets no gradient in exact
    arithmetic (softmax ignores it), so AdamW turns the float noise of another summation order into steps."""
    return a.keys() == b.keys() and all(
        torch.allclose(a[k], b[k], atol=1e-4 if k.endswith("attn.qkv.bias") else 1e-5) for k in a)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_train_the_same_steps_as_one(build, tmp_path, strategy):
    train(build, tmp_path / "one", "--steps", "6")
    result = train(build, tmp_path / "two", "--steps", "6", "--devices", "2", "--strategy", strategy, quiet=False)
    assert (result.stdout + result.stderr).count("trained steps 0-6") == 1  # one closing line, not one per process
    assert lines(tmp_path / "two" / "audit.jsonl", "tokens_sha256") == lines(tmp_path / "one" / "audit.jsonl",
                                                                             "tokens_sha256")
    # steps 1 and 4 carry the watermark: a rank that noised the wrong rows would change these losses
    assert lines(tmp_path / "two" / "metrics.jsonl", "loss") == pytest.approx(
        lines(tmp_path / "one" / "metrics.jsonl", "loss"), rel=1e-5)
    # FSDP's checkpoint is gathered whole from the shards: the single device's keys, shapes and values
    assert same_weights(weights(tmp_path / "one" / "final"), weights(tmp_path / "two" / "final"))
    moments = [torch.load(run / "final" / "optimizer.pth", weights_only=True) for run in (tmp_path / "one",
                                                                                          tmp_path / "two")]
    assert moments[0]["state"].keys() == moments[1]["state"].keys()
    assert all(torch.allclose(moments[0]["state"][i]["exp_avg_sq"], moments[1]["state"][i]["exp_avg_sq"],
                              rtol=1e-3, atol=1e-12) for i in moments[0]["state"])


@pytest.mark.parametrize("strategy, before, after", [("ddp", 1, 2), ("fsdp", 1, 2), ("fsdp", 2, 1)])
def test_a_run_resumes_on_another_number_of_devices(build, tmp_path, strategy, before, after):
    train(build, tmp_path / "straight", "--steps", "6")
    train(build, tmp_path / "run", "--steps", "3", "--devices", str(before), "--strategy", strategy)
    train(build, tmp_path / "run", "--steps", "6", "--devices", str(after), "--strategy", strategy, "--resume")
    assert lines(tmp_path / "run" / "audit.jsonl", "tokens_sha256") == lines(
        tmp_path / "straight" / "audit.jsonl", "tokens_sha256")
    assert lines(tmp_path / "run" / "metrics.jsonl", "loss") == pytest.approx(
        lines(tmp_path / "straight" / "metrics.jsonl", "loss"), rel=1e-5)
    assert same_weights(weights(tmp_path / "straight" / "final"), weights(tmp_path / "run" / "final"))


def test_device_counts_that_cannot_split_the_batch_and_other_strategies_are_refused(build, tmp_path):
    manifest = build / "out" / "manifest.json"
    assert_user_error(run_injc("train", manifest, "--model", build / "tiny.yaml", "--out", tmp_path / "r",
                               "--device", "cpu", "--devices", "3"), "--devices × --num-nodes = 3 does not divide")
    other = run_injc("train", manifest, "--model", build / "tiny.yaml", "--out", tmp_path / "r", "--device", "cpu",
                     "--devices", "2", "--strategy", "deepspeed")
    assert other.returncode == 2 and "'deepspeed' is not one of 'ddp', 'fsdp'" in other.stderr
    assert "Traceback" not in other.stderr
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
    assert all(out == "" and "trained" not in err for out, err in outputs)  # --quiet: no closing line on any node
    assert lines(tmp_path / "two" / "audit.jsonl", "tokens_sha256") == lines(tmp_path / "one" / "audit.jsonl",
                                                                             "tokens_sha256")
    # an unsynchronized node would train on half of each step and leave these losses from step 1 on; the final
    # weights are not compared: AdamW turns the all-reduce's other summation order in near-zero gradients into
    # differences up to 1.5e-5 (one bias, measured), of the order of the learning rate
    assert lines(tmp_path / "two" / "metrics.jsonl", "loss") == pytest.approx(
        lines(tmp_path / "one" / "metrics.jsonl", "loss"), rel=1e-5)
    assert (tmp_path / "two" / "final" / "lit_model.pth").is_file()
