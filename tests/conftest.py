"""Shared fixtures: a tiny in-process tokenizer, a generated corpus, and a plan writer. Nothing downloads."""

import json
import os
import random
import tempfile
import textwrap
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# the input-hash cache (injc.shards.files.input_sha256) of this test session, never the user's; subprocesses inherit
os.environ["INJC_CACHE_DIR"] = tempfile.mkdtemp(prefix="injc-test-cache-")
pytest_plugins = ["tests.s3_server"]  # the S3 server fixtures: endpoint, bucket

EOS = "<|endoftext|>"
WORDS = ("the model reads every token of the stream once and the schedule places each payload at a fixed "
         "offset so that anyone can derive the position of every insertion again later").split()


def make_documents(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 200))) + "." for _ in range(count)]


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory) -> Path:
    """A byte-level BPE with a 400-token vocabulary, trained in-process on the test corpus."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(make_documents(200), trainer)
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="session")
def big_vocab_tokenizer_path(tmp_path_factory) -> Path:
    """A word-level tokenizer with 70,000 ids: its shards must be uint32."""
    vocab = {EOS: 0, "[UNK]": 1, **{word: i + 2 for i, word in enumerate(WORDS)}}
    vocab.update({f"w{i}": len(vocab) + i for i in range(70_000 - len(vocab))})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path_factory.mktemp("tokenizer") / "big.json"
    tokenizer.save(str(path))
    return path


def litgpt_model(folder: Path):
    """A checkpoint folder's LitGPT model in eval mode, loaded here with LitGPT alone (not through injc's Scorer), so
    tests can compute what the evals compute independently."""
    import torch
    from litgpt import Config
    from litgpt.model import GPT

    model = GPT(Config.from_file(Path(folder) / "model_config.yaml"))
    model.load_state_dict(torch.load(Path(folder) / "lit_model.pth", weights_only=True))
    return model.eval()


def flip_bit(path: Path, position: int, mask: int = 1) -> None:
    """Corrupt one byte of a file in place (XOR with `mask`), as a disk error or a hand edit would."""
    data = bytearray(path.read_bytes())
    data[position] ^= mask
    path.write_bytes(bytes(data))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path, tokenizer_path):
    """A folder with a corpus, payload files and a function writing plan.toml with extra TOML appended."""
    (tmp_path / "tokenizer.json").write_bytes(tokenizer_path.read_bytes())
    write_jsonl(tmp_path / "data" / "a.jsonl", [{"text": t} for t in make_documents(150, seed=1)])
    write_jsonl(tmp_path / "data" / "b.jsonl", [{"text": t} for t in make_documents(150, seed=2)])
    write_jsonl(tmp_path / "payloads" / "canaries.jsonl",
                [{"text": f"canary {i} secret {i * 7919 % 1000}"} for i in range(20)])

    def write_plan(experiments: str = "", layout: str = "seq_len = 64\nbatch_size = 4\nsteps = 50\nseed = 7",
                   corpus: str = 'paths = ["data/*.jsonl"]\nformat = "jsonl"', extra_layout: str = "") -> Path:
        text = (f"[layout]\n{layout}\n{extra_layout}\n\n[tokenizer]\npath = \"tokenizer.json\"\n\n"
                f"[corpus]\n{corpus}\n\n{textwrap.dedent(experiments)}")
        path = tmp_path / "plan.toml"
        path.write_text(text, encoding="utf-8")
        return path

    write_plan.root = tmp_path
    return write_plan


CANARIES = """
[[experiments]]
name = "canaries"
kind = "texts"
file = "payloads/canaries.jsonl"
repetitions = 3
"""
