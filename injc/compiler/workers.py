"""Tokenization in worker processes, in order: `--workers N` runs N processes, each tokenizing whole batches
with a single thread; results come back in submission order, so the stream is byte-identical to one process.

At most 2×N batches are in flight, so memory stays bounded however large the corpus. Workers are spawned (not
forked) because the parent may already run the tokenizer's own threads.

`--executor ray` does the same on Ray: one actor per CPU of the cluster (or `--workers N` actors), each holding
the tokenizer, batches handed out round-robin and collected in submission order. The driver reads the corpus and
writes, hashes and records the shards, so the output, its crash-safe resume and its progress bar are those of a
local build (byte-identical, tested).
"""

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

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


@dataclass(frozen=True)
class RayExecutor:
    """Tokenize on a Ray cluster: `address` None starts a local instance (stopped again after the build)."""

    address: str | None = None
    actors: int | None = None
    """Tokenizer actors (None: one per CPU of the cluster)."""


class _RayEncoder:
    """A Ray actor holding one single-threaded tokenizer."""

    def __init__(self, tokenizer_json: str):
        _start_worker(tokenizer_json)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        return _encode(texts)


def encode_on_ray(batches: Iterable[tuple[list, list[str]]], tokenizer_json: str,
                  executor: RayExecutor) -> Iterator[tuple[list, list[np.ndarray]]]:
    """(keys, token arrays) for each (keys, texts) batch, in input order, tokenized by Ray actors."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=executor.address, include_dashboard=False, log_to_driver=False, logging_level="warning",
                 num_cpus=None if executor.address else (executor.actors or os.cpu_count()))
    try:
        count = executor.actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        encoder = ray.remote(num_cpus=1)(_RayEncoder)
        actors = [encoder.remote(tokenizer_json) for _ in range(count)]
        pending: deque = deque()
        for index, (keys, texts) in enumerate(batches):
            pending.append((keys, actors[index % count].encode.remote(texts)))
            if len(pending) >= 2 * count:
                keys, result = pending.popleft()
                yield keys, ray.get(result)
        while pending:
            keys, result = pending.popleft()
            yield keys, ray.get(result)
    finally:
        if started_here:
            ray.shutdown()
