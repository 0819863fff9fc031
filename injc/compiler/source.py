"""Where the build's base tokens come from: one streaming pass, or a prepared stream when experiments need more.

Most plans stream the corpus straight into the shards (one tokenization pass, bounded memory). A plan that
reserves a held-out tail (`[corpus] holdout_tokens`) or whose experiments must see the base tokens before
placement (verbatim removal) first tokenizes `total_tokens + holdout_tokens` tokens into a temporary raw file in
the build folder (pass 1), then copies from it into the shards with the payloads written over it (pass 2, no
re-tokenization). The tail after the run's tokens is the holdout pool.
"""

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from injc.compiler.corpus import base_stream
from injc.compiler.plan import Plan
from injc.errors import LayoutError
from injc.shards.files import fsync_path, write_atomic
from injc.tokenizer import LoadedTokenizer

CHUNK = 1 << 24


def corpus_too_small(read: int, plan: Plan) -> LayoutError:
    """`read`: tokens read after the skipped ones."""
    layout, holdout, skip = plan.layout, plan.corpus.holdout_tokens, plan.corpus.skip_tokens
    extra = (f" + holdout_tokens {holdout:,}" if holdout else "") + (f" + skip_tokens {skip:,}" if skip else "")
    return LayoutError(f"corpus has {read + skip:,} tokens but the plan needs {layout.total_tokens + holdout + skip:,} "
                       f"(steps × batch_size × seq_len = {layout.steps:,} × {layout.batch_size:,} × "
                       f"{layout.seq_len:,}{extra})")


def first_tokens(plan: Plan, tokenizer: LoadedTokenizer, total: int, workers: int | None) -> Iterator[np.ndarray]:
    """The base stream's chunks, cut off after `total` tokens (fewer if the corpus is shorter)."""
    seen = 0
    for chunk, _ in base_stream(plan.corpus, tokenizer, workers=workers):
        chunk = chunk[: total - seen]
        seen += len(chunk)
        yield chunk
        if seen >= total:
            return


class PreparedStream:
    """Pass 1: the run's base tokens followed by the reserved tail, tokenized once into `path`."""

    def __init__(self, plan: Plan, tokenizer: LoadedTokenizer, path: Path, progress: bool,
                 workers: int | None = None):
        total = plan.layout.total_tokens + plan.corpus.holdout_tokens
        done = path.with_suffix(".done")
        if done.is_file() and path.is_file() and path.stat().st_size == total * tokenizer.dtype.itemsize:
            tokens = np.memmap(path, dtype=tokenizer.dtype, mode="r", shape=(total,))  # a resumed build
        else:
            done.unlink(missing_ok=True)
            tokens = self._tokenize(plan, tokenizer, path, total, progress, workers)
            write_atomic(done, b"complete\n")
        self.tokens = tokens
        self.base = tokens[: plan.layout.total_tokens]
        self.holdout = tokens[plan.layout.total_tokens:]
        self.vocab_size = tokenizer.vocab_size
        self._counts: np.ndarray | None = None

    @staticmethod
    def _tokenize(plan: Plan, tokenizer: LoadedTokenizer, path: Path, total: int, progress: bool,
                  workers: int | None) -> np.memmap:
        tokens = np.memmap(path, dtype=tokenizer.dtype, mode="w+", shape=(total,))
        filled = 0
        with tqdm(total=total, unit="tok", unit_scale=True, desc="tokenize", disable=not progress,
                  file=sys.stderr) as bar:
            for chunk in first_tokens(plan, tokenizer, total, workers):
                tokens[filled:filled + len(chunk)] = chunk
                filled += len(chunk)
                bar.update(len(chunk))
        if filled < total:
            raise corpus_too_small(filled, plan)
        tokens.flush()
        fsync_path(path)
        return tokens

    def chunks(self, start: dict | None = None) -> Iterator[tuple[np.ndarray, Callable[[int], dict]]]:
        """Base-stream chunks with cursors {"offset": g}, from `start` (a cursor) on."""
        for begin in range((start or {}).get("offset", 0), len(self.base), CHUNK):
            yield np.asarray(self.base[begin:begin + CHUNK]), lambda i, begin=begin: {"offset": begin + int(i)}

    def counts(self) -> np.ndarray:
        if self._counts is None:
            self._counts = sum((np.bincount(chunk, minlength=self.vocab_size) for chunk, _ in self.chunks()),
                               np.zeros(self.vocab_size, dtype=np.int64))
        return self._counts


def streaming_counts(plan: Plan, tokenizer: LoadedTokenizer, workers: int | None = None):
    """Token counts of the base stream by an extra tokenization pass (plans without a prepared stream)."""
    cache: list[np.ndarray] = []

    def counts() -> np.ndarray:
        if not cache:
            counts = np.zeros(tokenizer.vocab_size, dtype=np.int64)
            for chunk in first_tokens(plan, tokenizer, plan.layout.total_tokens, workers):
                counts += np.bincount(chunk, minlength=tokenizer.vocab_size)
            cache.append(counts)
        return cache[0]

    return counts
