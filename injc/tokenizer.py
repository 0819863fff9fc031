"""The tokenizer: a Hugging Face `tokenizers` JSON file, its EOS id, and the shard dtype it implies."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from injc.errors import InputError

# Tried in order when the plan names no EOS token.
DEFAULT_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eos|>", "[SEP]")


@dataclass(frozen=True)
class LoadedTokenizer:
    tokenizer: Tokenizer
    path: Path
    sha256: str
    eos: str
    eos_id: int
    vocab_size: int

    @property
    def dtype(self) -> np.dtype:
        """uint16 when every id fits (vocab ≤ 65,536), else uint32: half the disk and page cache for most models."""
        return np.dtype("<u2") if self.vocab_size <= 1 << 16 else np.dtype("<u4")

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids of each text, without special tokens added by the tokenizer's post-processor."""
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]


def ordinary_token_ids(tokenizer: Tokenizer, eos_id: int) -> np.ndarray:
    """Every id except EOS and the tokenizer's special tokens: what random and rare tokens are drawn from."""
    special = {eos_id, *(i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special)}
    return np.setdiff1d(np.arange(tokenizer.get_vocab_size(with_added_tokens=True)), np.fromiter(special, np.int64))


def load_tokenizer(path: Path, eos: str | None) -> LoadedTokenizer:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise InputError(f"tokenizer file {str(path)!r} cannot be read: {error.strerror or error}") from None
    try:
        tokenizer = Tokenizer.from_str(raw.decode("utf-8"))
    except Exception as error:  # tokenizers raises plain Exception subclasses for bad JSON
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"tokenizer file {str(path)!r} is not a tokenizers JSON file: {first_line}") from None
    if eos is None:
        eos = next((c for c in DEFAULT_EOS_CANDIDATES if tokenizer.token_to_id(c) is not None), None)
        if eos is None:
            raise InputError(f"tokenizer {str(path)!r} has none of the usual EOS tokens "
                             f"({', '.join(DEFAULT_EOS_CANDIDATES)}); set [tokenizer] eos in the plan")
    eos_id = tokenizer.token_to_id(eos)
    if eos_id is None:
        raise InputError(f"tokenizer {str(path)!r} has no token {eos!r} ([tokenizer] eos)")
    return LoadedTokenizer(
        tokenizer=tokenizer,
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        eos=eos,
        eos_id=eos_id,
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
    )
