"""The trainer tests' shared build: 50 steps of 4 rows × 64 tokens with canaries, and a 1-layer LitGPT model."""

import pytest

import injc
from tests.conftest import CANARIES, make_documents, write_jsonl

TINY = """name: tiny
n_layer: 1
n_head: 2
n_embd: 32
intermediate_size: 64
block_size: 63
vocab_size: 400
bias: true
parallel_residual: false
norm_class_name: LayerNorm
mlp_class_name: GptNeoxMLP
"""


def training_project(root, tokenizer_path, steps: int, experiments: str = CANARIES):
    """A folder with a corpus, canaries, the tiny model and plan.toml: `steps` steps of 4 rows × 64 tokens."""
    (root / "tokenizer.json").write_bytes(tokenizer_path.read_bytes())
    write_jsonl(root / "data" / "a.jsonl", [{"text": t} for t in make_documents(300, seed=1)])
    write_jsonl(root / "payloads" / "canaries.jsonl", [{"text": f"canary {i}"} for i in range(20)])
    (root / "plan.toml").write_text(f"[layout]\nseq_len = 64\nbatch_size = 4\nsteps = {steps}\nseed = 7\n"
                                    "[tokenizer]\npath = \"tokenizer.json\"\n[corpus]\npaths = [\"data/*.jsonl\"]\n"
                                    + experiments)
    (root / "tiny.yaml").write_text(TINY)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory, tokenizer_path):
    """One small build shared by the module: 50 steps of 4 rows × 64 tokens."""
    root = training_project(tmp_path_factory.mktemp("train"), tokenizer_path, 50)
    injc.build(root / "plan.toml", root / "out", progress=False)
    return root


def run(built, out, **kwargs):
    """injc.train on the shared build with the tiny model; returns the final checkpoint folder."""
    from injc.train.trainer import TrainConfig, train

    config = TrainConfig(model=str(built / "tiny.yaml"), out=out, **kwargs)
    return train(built / "out" / "manifest.json", config, progress=False)
