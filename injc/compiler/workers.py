"""Tokenization in worker processes, in order: `--workers N` runs N processes, each tokenizing whole batches
with a single thread; results come back in submission order, so the stream is byte-identical to one process.

At most 2×N batches are in flight, so memory stays bounded however large the corpus. Workers are spawned (not
forked) because the parent may already run the tokenizer's own threads.

`--executor ray` does the same on Ray: one actor per CPU of the cluster (or `--workers N` actors), each holding
the tokenizer, batches handed out round-robin and collected in submission order; each finished shard is written,
synced and hashed by a Ray task (I/O, no CPU reserved), several at once, and recorded by the driver in order. The
driver reads the corpus, fills the shards and keeps the records, so the output, its crash-safe resume and its
progress bar are those of a local build (byte-identical, tested). The output folder must be one every node sees.
"""

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from injc.shards.writer import ShardWriter, write_and_hash

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


@contextmanager
def ray_session(executor: RayExecutor):
    """Ray for the whole build (tokenizer actors and shard writers): joined, or started here and stopped after."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=executor.address, include_dashboard=False, log_to_driver=False, logging_level="warning",
                 num_cpus=None if executor.address else (executor.actors or os.cpu_count()))
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()


def ray_shard_writer() -> ShardWriter:
    """Shard files written and hashed by Ray tasks (they reserve no CPU: the tokenizer actors hold them all)."""
    import ray

    task = ray.remote(num_cpus=0)(write_and_hash)

    def start(path: Path, tokens: np.ndarray) -> Callable[[], str]:
        reference = task.remote(path, tokens)  # the tokens are copied to Ray's object store here
        return lambda: ray.get(reference)

    return start


def encode_on_ray(batches: Iterable[tuple[list, list[str]]], tokenizer_json: str,
                  executor: RayExecutor) -> Iterator[tuple[list, list[np.ndarray]]]:
    """(keys, token arrays) for each (keys, texts) batch, in input order, tokenized by Ray actors."""
    import ray

    with ray_session(executor):
        count = executor.actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        encoder = ray.remote(num_cpus=1)(_RayEncoder)
        actors = [encoder.remote(tokenizer_json) for _ in range(count)]
        try:
            pending: deque = deque()
            for index, (keys, texts) in enumerate(batches):
                pending.append((keys, actors[index % count].encode.remote(texts)))
                if len(pending) >= 2 * count:
                    keys, result = pending.popleft()
                    yield keys, ray.get(result)
            while pending:
                keys, result = pending.popleft()
                yield keys, ray.get(result)
        finally:  # free their CPUs now: the build's next pass starts actors of its own
            for actor in actors:
                ray.kill(actor)
