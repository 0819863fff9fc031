"""Shard writing: the base stream cut into fixed-size shards, payload copies overlaid, each file hashed and synced.

On-disk layout of one shard (see docs/format.md)::

    shards/shard_00000.bin   raw little-endian uint16 or uint32 token ids, no header
    ┌──────────────────────────────┬──────────────────────────────┬─────┐
    │ step s, row 0: seq_len ids   │ step s, row 1: seq_len ids   │ ... │   whole steps only
    └──────────────────────────────┴──────────────────────────────┴─────┘

Token g of the run is token g - first_token of the shard whose [first_token, first_token + num_tokens) holds g.
"""

import mmap
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from injc.shards.files import sha256_array, write_synced
from injc.shards.manifest import SHARDS_FOLDER

SHARD_NAME = SHARDS_FOLDER + "/shard_{index:05d}.bin"
BLOCK_TOKENS = 1 << 20


@dataclass(frozen=True)
class ShardInfo:
    path: str | None
    """Relative to the manifest's folder (None when a sink took the tokens)."""
    first_token: int
    num_tokens: int
    sha256: str


def ramp_indices(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ranges [start, start+length) for every pair, without a Python loop.

    One cumulative sum over an array of ones with a jump at each range's first slot (cheaper than repeat + arange).
    """
    keep = lengths > 0
    starts, lengths = np.asarray(starts, dtype=np.int64)[keep], np.asarray(lengths, dtype=np.int64)[keep]
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    steps = np.ones(total, dtype=np.int64)
    firsts = np.cumsum(lengths) - lengths
    steps[firsts[1:]] = starts[1:] - (starts[:-1] + lengths[:-1] - 1)
    steps[0] = starts[0]
    return np.cumsum(steps, out=steps)


@dataclass(frozen=True)
class Overlay:
    """Payload copies to write over the base stream: intervals sorted by offset, tokens drawn from one pool."""

    offset: np.ndarray
    length: np.ndarray
    source: np.ndarray
    """Start of each copy's tokens in `pool`."""
    pool: np.ndarray

    def apply(self, buffer: np.ndarray, first_token: int) -> None:
        """Overwrite `buffer` (the stream's tokens [first_token, first_token+len)) with the copies inside it.

        Copies go in blocks of about BLOCK_TOKENS tokens, so the index arrays stay small and reuse memory.
        """
        last_token = first_token + len(buffer)
        end = self.offset + self.length
        low = np.searchsorted(end, first_token, side="right")
        high = np.searchsorted(self.offset, last_token, side="left")
        if high <= low:
            return
        start = np.maximum(self.offset[low:high], first_token)
        stop = np.minimum(end[low:high], last_token)
        source = self.source[low:high] + (start - self.offset[low:high])
        block_ends = np.searchsorted(np.cumsum(stop - start), np.arange(BLOCK_TOKENS, int((stop - start).sum()),
                                                                        BLOCK_TOKENS), side="right")
        for a, b in zip(np.r_[0, block_ends], np.r_[block_ends, len(start)]):
            lengths = stop[a:b] - start[a:b]
            buffer[ramp_indices(start[a:b] - first_token, lengths)] = self.pool[ramp_indices(source[a:b], lengths)]


def write_and_hash(path: Path, tokens: np.ndarray) -> str:
    """Write one shard file (synced) and return its sha256: the unit of work a shard writer does. The hash runs on
    a second thread while the file is written (hashlib and file writes release the GIL): both read the same
    memory, so the shard costs the longer of the two rather than their sum."""
    with ThreadPoolExecutor(1) as pool:
        digest = pool.submit(sha256_array, tokens)
        write_synced(Path(path), tokens)
        return digest.result()


ShardWriter = Callable[[Path, np.ndarray], Callable[[], str]]
"""Starts writing one shard file and returns what waits for its sha256 (e.g. on a Ray task); the tokens may be
reused once it returns."""


def write_here(path: Path, tokens: np.ndarray) -> Callable[[], str]:
    digest = write_and_hash(path, tokens)
    return lambda: digest


def write_shards(
    chunks: Iterable[tuple[np.ndarray, Callable[[int], dict]]],
    out_dir: Path,
    dtype: np.dtype,
    shard_tokens: int,
    total_tokens: int,
    overlay: Overlay | None,
    progress=None,
    first_index: int = 0,
    sink: Callable[[int, np.ndarray], None] | None = None,
    writer: ShardWriter = write_here,
    in_flight: int = 0,
) -> Iterator[tuple[ShardInfo, dict]]:
    """Fill shards of `shard_tokens` from `chunks` until `total_tokens`, starting with shard `first_index`.

    Yields each shard, in order, once it is written (synced), with the cursor of the next shard's first token,
    from which the chunk source can resume. Returns early when the chunks run out; the caller checks the total.
    `writer` writes and hashes each shard file, with up to `in_flight` shards more still being written while the
    next are filled (`injc build --executor ray` writes them on Ray tasks). A `sink` (first_token, tokens) takes
    each shard's tokens, durably, instead of a shard file (its ShardInfo then has no path; its hash is that of the
    tokens, for a resumed build to check them against what the sink wrote).
    """
    (out_dir / SHARDS_FOLDER).mkdir(parents=True, exist_ok=True)
    count = min(shard_tokens, total_tokens)  # page-aligned (anonymous mmap), as O_DIRECT writes want it
    buffer = np.frombuffer(mmap.mmap(-1, max(count, 1) * dtype.itemsize), dtype=dtype)[:count]
    first_token, index = first_index * shard_tokens, first_index
    chunks = iter(chunks)
    pending, locate, used = np.zeros(0, dtype=dtype), None, 0
    writing: deque = deque()
    while first_token < total_tokens:
        size, filled = min(shard_tokens, total_tokens - first_token), 0
        while filled < size:
            if used == len(pending):
                item = next(chunks, None)
                if item is None:
                    break
                (pending, locate), used = item, 0
            take = min(size - filled, len(pending) - used)
            buffer[filled:filled + take] = pending[used:used + take]
            used += take
            filled += take
            if progress is not None:
                progress.update(take)
        if filled < size:
            break
        shard = buffer[:size]
        if overlay is not None:
            overlay.apply(shard, first_token)
        if sink:
            sink(first_token, shard)
            digest = sha256_array(shard)
            writing.append((None, first_token, size, lambda digest=digest: digest, locate(used)))
        else:
            relative = SHARD_NAME.format(index=index)
            writing.append((relative, first_token, size, writer(out_dir / relative, shard), locate(used)))
        while len(writing) > in_flight:
            relative, first, count, digest, cursor = writing.popleft()
            yield ShardInfo(relative, first, count, digest()), cursor
        first_token += size
        index += 1
    while writing:
        relative, first, count, digest, cursor = writing.popleft()
        yield ShardInfo(relative, first, count, digest()), cursor
