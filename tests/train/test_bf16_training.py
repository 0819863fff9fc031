"""Training under bf16 autocast (`precision="bf16-mixed"`, the default on CUDA): still step-exact (every step's
batch is the manifest's, hashed here independently), bf16 really used, and a resumed run continues the straight
one. On the CPU everywhere (CPU autocast); the same tests run on CUDA, and FSDP over NCCL on 2 GPUs, where there
are GPUs."""

import hashlib
import json

import numpy as np
import pytest

import injc
from tests.train.conftest import run

torch = pytest.importorskip("torch")
pytest.importorskip("litgpt")

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
TWO_GPUS = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                              reason="FSDP over NCCL needs 2 GPUs")


def read_jsonl(path, key):
    return [json.loads(line)[key] for line in path.read_text().splitlines()]


def weights(folder):
    return torch.load(folder / "lit_model.pth", weights_only=True, map_location="cpu")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_bf16_training_is_step_exact_and_resumes_exactly(built, tmp_path, device):
    straight = run(built, tmp_path / "straight", steps=6, audit=True, device=device, precision="bf16-mixed")
    stream = injc.open_stream(built / "out")
    expected = [hashlib.sha256(np.ascontiguousarray(stream.batch(step), dtype="<u4").tobytes()).hexdigest()
                for step in range(6)]
    assert read_jsonl(tmp_path / "straight" / "audit.jsonl", "tokens_sha256") == expected
    full = run(built, tmp_path / "float32", steps=6, device=device, precision="32-true")
    bf16_losses = read_jsonl(tmp_path / "straight" / "metrics.jsonl", "loss")
    assert bf16_losses != read_jsonl(tmp_path / "float32" / "metrics.jsonl", "loss")  # bf16 really ran
    assert bf16_losses == pytest.approx(read_jsonl(tmp_path / "float32" / "metrics.jsonl", "loss"), abs=0.05)
    run(built, tmp_path / "resumed", steps=3, save_steps=(3,), audit=True, device=device, precision="bf16-mixed")
    resumed = run(built, tmp_path / "resumed", steps=6, resume=True, audit=True, device=device,
                  precision="bf16-mixed")
    assert read_jsonl(tmp_path / "resumed" / "audit.jsonl", "tokens_sha256") == expected
    a, b = weights(straight), weights(resumed)
    tolerance = 0 if device == "cpu" else 1e-3  # CUDA's bf16 kernels may sum in another order from run to run
    assert all(torch.allclose(a[name], b[name], rtol=0, atol=tolerance) for name in a)
    assert weights(full).keys() == a.keys()


@TWO_GPUS
def test_fsdp_over_nccl_is_step_exact_and_resumes_on_two_gpus(built, tmp_path):
    from tests.test_cli import injc as run_injc

    def train(out, *args):
        result = run_injc("train", built / "out" / "manifest.json", "--model", built / "tiny.yaml", "--out", out,
                          "--device", "cuda", "--audit", "--micro-batch-size", "1", "--quiet", *args)
        assert result.returncode == 0, result.stderr

    train(tmp_path / "straight", "--steps", "6")
    train(tmp_path / "run", "--steps", "3", "--devices", "2", "--strategy", "fsdp")
    train(tmp_path / "run", "--steps", "6", "--devices", "2", "--strategy", "fsdp", "--resume")
    assert read_jsonl(tmp_path / "run" / "audit.jsonl", "tokens_sha256") == read_jsonl(
        tmp_path / "straight" / "audit.jsonl", "tokens_sha256")
    assert read_jsonl(tmp_path / "run" / "metrics.jsonl", "loss") == pytest.approx(
        read_jsonl(tmp_path / "straight" / "metrics.jsonl", "loss"), abs=0.02)
