"""Regenerate the demo's shipped inputs (run once; the outputs are committed, nothing downloads):

    python examples/demo/make_demo_data.py

- data/stdlib.jsonl.zst: the Python standard library's top-level modules, one JSON document per module
  ({"text", "source"}), sorted by name: real text that every machine has, frozen here so builds match everywhere.
- tokenizer.json: a byte-level BPE (vocabulary 8,192 with <|endoftext|>) trained on that corpus.
- payloads/*.jsonl: generated payloads for the demo plan's experiments (seeded).
"""

import json
import random
import sysconfig
from pathlib import Path

import zstandard
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = Path(__file__).parent
VOCAB_SIZE = 8192
EOS = "<|endoftext|>"


def write_corpus() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    with open(HERE / "data" / "stdlib.jsonl.zst", "wb") as raw:
        with zstandard.ZstdCompressor(level=19).stream_writer(raw) as out:
            for path in sorted(stdlib.glob("*.py")):
                text = path.read_text(encoding="utf-8", errors="replace")
                texts.append(text)
                out.write((json.dumps({"text": text, "source": path.name}) + "\n").encode())
    return texts


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
    print(f"wrote {len(texts)} documents, tokenizer, payloads under {HERE}")
