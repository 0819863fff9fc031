"""Tokenization in worker processes, in order: `--workers N` runs N processes, each tokenizing whole batches
with a single thread; results come back in submission order, so the stream is byte-identical to one process.

At most 2×N batches are in flight, so memory stays bounded however large the corpus. Workers are spawned (not
forked) because the parent may already run the tokenizer's own threads.
"""

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np
from tokenizers import Tokenizer

_tokenizer: Tokenizer | None = None


def _start_worker(tokenizer_json: str) -> None:
    global _tokenizer
    os.environ["RAYON_NUM_THREADS"] = "1"  # one process, one thread: the pool provides the parallelism
    _tokenizer = Tokenizer.from_str(tokenizer_json)


def _encode(texts: list[str]) -> list[np.ndarray]:
    return [np.asarray(e.ids, dtype=np.int64) for e in _tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


def encode_in_processes(batches: Iterable[tuple[list, list[str]]], tokenizer_json: str,
                        workers: int) -> Iterator[tuple[list, list[np.ndarray]]]:
    """(keys, token arrays) for each (keys, texts) batch, in input order."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=(tokenizer_json,)) as pool:
        pending: deque = deque()
        for keys, texts in batches:
            pending.append((keys, pool.apply_async(_encode, (texts,))))
            if len(pending) >= 2 * workers:
                keys, result = pending.popleft()
                yield keys, result.get()
        while pending:
            keys, result = pending.popleft()
            yield keys, result.get()
