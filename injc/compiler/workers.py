"""Tokenization in worker processes, in order: `--workers N` runs N processes, each tokenizing whole batches
with a single thread; results come back in submission order, so the stream is byte-identical to one process.

At most 2×N batches are in flight, so memory stays bounded however large the corpus. Workers are spawned (not
forked) because the parent may already run the tokenizer's own threads.

`--executor ray` reads and tokenizes on Ray: the driver cuts the corpus into chunks of whole documents without
parsing them (`injc.compiler.readers.corpus_chunks`: byte ranges of uncompressed JSONL that the task reads itself,
blocks of a compressed file decompressed by the driver, parquet row groups, text files); each chunk is a Ray task
(one CPU; as many at a time as the cluster has CPUs, or `--workers N`) that reads and tokenizes it, and results
are collected in submission order. Each finished shard is written, synced and hashed by a Ray task (I/O, no CPU
reserved), several at once, and recorded by the driver in order. The driver fills the shards and keeps the
records, so the output, its crash-safe resume and its progress bar are those of a local build (byte-identical,
tested). Reading tasks run on any node: each reads its own chunk (a byte range, a row group, a file) from where
the corpus is: a corpus in object storage (injc.storage) needs nothing on any node's disk; local corpus files must
be at paths every node sees (a shared file system). A compressed file's blocks travel from the driver. The shard
writers run on the driver's node, which holds the output folder.
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

from injc.compiler.plan import CorpusConfig
from injc.compiler.readers import Chunk, chunk_texts
from injc.errors import InputError
from injc.shards.writer import ShardWriter, write_and_hash

_tokenizer: Tokenizer | None = None
_tokenizer_json: str | None = None


def _start_worker(tokenizer_json: str) -> None:
    """Load the tokenizer in this worker process, once (Ray reuses its worker processes from task to task)."""
    global _tokenizer, _tokenizer_json
    if tokenizer_json != _tokenizer_json:
        os.environ["RAYON_NUM_THREADS"] = "1"  # one process, one thread: the pool provides the parallelism
        _tokenizer, _tokenizer_json = Tokenizer.from_str(tokenizer_json), tokenizer_json


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
    """Read and tokenize on a Ray cluster: `address` None starts a local instance (stopped again after the build)."""

    address: str | None = None
    workers: int | None = None
    """Reading tasks at a time (None: one per CPU of the cluster)."""


def _read_and_encode(tokenizer_json: str, corpus: CorpusConfig, chunk: Chunk) -> list[np.ndarray] | InputError:
    """A Ray task: read one chunk of the corpus and tokenize it. A malformed file's InputError is returned, not
    raised: Ray would wrap it in a traceback."""
    _start_worker(tokenizer_json)
    try:
        texts = chunk_texts(chunk, corpus)
    except InputError as error:
        return error
    return _encode(texts) if texts else []


@contextmanager
def ray_session(executor: RayExecutor):
    """Ray for the whole build (reading tasks and shard writers): joined, or started here and stopped after."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=executor.address, include_dashboard=False, log_to_driver=False, logging_level="warning",
                 num_cpus=None if executor.address else (executor.workers or os.cpu_count()))
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()


def ray_shard_writer() -> ShardWriter:
    """Shard files written and hashed by Ray tasks on the driver's node (the output folder is the driver's: other
    nodes need not see it); they reserve no CPU, the reading tasks hold them all."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    task = ray.remote(num_cpus=0, scheduling_strategy=here)(write_and_hash)

    def start(path: Path, tokens: np.ndarray) -> Callable[[], str]:
        reference = task.remote(path, tokens)  # the tokens are copied to Ray's object store here
        return lambda: ray.get(reference)

    return start


def read_on_ray(chunks: Iterable[Chunk], corpus: CorpusConfig, tokenizer_json: str,
                executor: RayExecutor) -> Iterator[tuple[Chunk, list[np.ndarray]]]:
    """(chunk, token arrays of its documents) for each chunk, in input order, read and tokenized by Ray tasks.

    Tasks (one CPU each), not actors bound round-robin: Ray starts each on whichever worker is free, so a file's
    short last chunk never leaves a worker idle behind a long one, and each worker process loads the tokenizer
    once. At most 2 × (--workers, or the cluster's CPUs) chunks are in flight; results come back in submission
    order. A chunk whose file turns out malformed raises the InputError a local build raises."""
    import ray

    with ray_session(executor):
        count = executor.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        task = ray.remote(num_cpus=1)(_read_and_encode)
        tokenizer, config = ray.put(tokenizer_json), ray.put(corpus)  # once, not with every task
        pending: deque = deque()
        try:
            for chunk in chunks:
                pending.append((chunk, task.remote(tokenizer, config, chunk)))
                if len(pending) >= 2 * count:
                    yield _oldest(pending)
            while pending:
                yield _oldest(pending)
        finally:  # a pass that stops early (it has the tokens it needs) leaves nothing running
            for _, reference in pending:
                ray.cancel(reference)


def _oldest(pending: deque) -> tuple[Chunk, list[np.ndarray]]:
    """The oldest chunk in flight with its tokens, waiting for them; a malformed file's InputError raised here."""
    import ray

    chunk, reference = pending.popleft()
    encoded = ray.get(reference)
    if isinstance(encoded, InputError):
        raise encoded
    return chunk, encoded
