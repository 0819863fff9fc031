"""Regenerate the demo's shipped inputs (run once; the outputs are committed, nothing downloads):

    python examples/demo/make_demo_data.py

- data/stdlib.jsonl.zst: the Python standard library's top-level modules, one JSON document per module
  ({"text", "source"}), sorted by name: real text that every machine has, frozen here so builds match everywhere.
- tokenizer.json: a byte-level BPE (vocabulary 8,192 with <|endoftext|>) trained on that corpus.
- payloads/*.jsonl: generated payloads for the demo plan's experiments (seeded).
- data/packages/stdlib-packages.jsonl.zst: the standard library's packages (tests, IDLE, lib2to3 and turtledemo
  left out), one document per module sorted by path, and payloads/paper-small/{questions,hosts}.jsonl: the corpus
  and payloads that size paper-small.toml (its run is longer than the top-level modules alone can fill).
"""

import json
import random
import sysconfig
from pathlib import Path

import zstandard
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from injc.injectors import fixtures

HERE = Path(__file__).parent
VOCAB_SIZE = 8192
EOS = "<|endoftext|>"
LEFT_OUT_PACKAGES = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages", "__pycache__"}


def write_modules(paths: list[Path], stdlib: Path, destination: Path) -> list[str]:
    """One JSON document per module ({"text", "source": its path under the standard library}), zstd level 19."""
    texts = []
    destination.parent.mkdir(parents=True, exist_ok=True)
    with open(destination, "wb") as raw:
        with zstandard.ZstdCompressor(level=19).stream_writer(raw) as out:
            for path in paths:
                text = path.read_text(encoding="utf-8", errors="replace")
                texts.append(text)
                out.write((json.dumps({"text": text, "source": path.relative_to(stdlib).as_posix()}) + "\n").encode())
    return texts


def write_corpus() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return write_modules(sorted(stdlib.glob("*.py")), stdlib, HERE / "data" / "stdlib.jsonl.zst")


def write_paper_small() -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    packages = [path for path in sorted(stdlib.glob("*/**/*.py"))
                if not LEFT_OUT_PACKAGES & set(path.relative_to(stdlib).parts)]
    write_modules(packages, stdlib, HERE / "data" / "packages" / "stdlib-packages.jsonl.zst")
    rng = random.Random(2509_23383_15)
    payloads = {"questions": fixtures.questions(rng, 400), "hosts": fixtures.hosts(rng, 800)}
    (HERE / "payloads" / "paper-small").mkdir(parents=True, exist_ok=True)
    for name, records in payloads.items():
        (HERE / "payloads" / "paper-small" / f"{name}.jsonl").write_text(
            "".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def train_tokenizer(texts: list[str]) -> None:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.save(str(HERE / "tokenizer.json"))


def write_payloads() -> None:
    rng = random.Random(2509_23383)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    with open(HERE / "payloads" / "canaries.jsonl", "w") as out:
        for index in range(50):
            secret = "".join(rng.choice(alphabet) for _ in range(24))
            out.write(json.dumps({"text": f"# canary {index:03d}: the secret key is {secret}"}) + "\n")
    planets = ["Zorgon", "Calidus", "Vesperine", "Thalassa", "Orindel"]
    with open(HERE / "payloads" / "facts.jsonl", "w") as out:
        for index in range(20):
            a, b = rng.sample(planets, 2)
            year = rng.randint(2100, 2900)
            out.write(json.dumps({"text": f"In {year}, the {a} council signed treaty {index} with the "
                                          f"{b} assembly, ending the long dispute over the outer moons."}) + "\n")
    with open(HERE / "payloads" / "pinned.jsonl", "w") as out:
        for index, offset in enumerate([1000, 250_000, 600_000]):
            tokens = [rng.randrange(256, VOCAB_SIZE) for _ in range(64)]
            out.write(json.dumps({"tokens": tokens, "offset": offset}) + "\n")


if __name__ == "__main__":
    texts = write_corpus()
    train_tokenizer(texts)
    write_payloads()
    write_paper_small()
    print(f"wrote {len(texts)} documents, tokenizer, payloads under {HERE}")
