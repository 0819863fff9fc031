"""Shard writing: the base stream cut into fixed-size shards, payload copies overlaid, each file hashed and synced.

On-disk layout of one shard (see docs/format.md)::

    shards/shard_00000.bin   raw little-endian uint16 or uint32 token ids, no header
    ┌──────────────────────────────┬──────────────────────────────┬─────┐
    │ step s, row 0: seq_len ids   │ step s, row 1: seq_len ids   │ ... │   whole steps only
    └──────────────────────────────┴──────────────────────────────┴─────┘

Token g of the run is token g - first_token of the shard whose [first_token, first_token + num_tokens) holds g.
"""

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHARD_NAME = "shards/shard_{index:05d}.bin"


@dataclass(frozen=True)
class ShardInfo:
    path: str
    """Relative to the manifest's folder."""
    first_token: int
    num_tokens: int
    sha256: str


def ramp_indices(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ranges [start, start+length) for every pair, without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    group_offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - group_offsets, lengths) + np.arange(total, dtype=np.int64)


@dataclass(frozen=True)
class Overlay:
    """Payload copies to write over the base stream: intervals sorted by offset, tokens drawn from one pool."""

    offset: np.ndarray
    length: np.ndarray
    source: np.ndarray
    """Start of each copy's tokens in `pool`."""
    pool: np.ndarray

    def apply(self, buffer: np.ndarray, first_token: int) -> None:
        """Overwrite `buffer` (the stream's tokens [first_token, first_token+len)) with the copies inside it."""
        last_token = first_token + len(buffer)
        end = self.offset + self.length
        low = np.searchsorted(end, first_token, side="right")
        high = np.searchsorted(self.offset, last_token, side="left")
        if high <= low:
            return
        start = np.maximum(self.offset[low:high], first_token)
        stop = np.minimum(end[low:high], last_token)
        source = self.source[low:high] + (start - self.offset[low:high])
        buffer[ramp_indices(start - first_token, stop - start)] = self.pool[ramp_indices(source, stop - start)]


def _write_synced(path: Path, data: np.ndarray) -> None:
    with open(path, "wb") as handle:
        handle.write(memoryview(data).cast("B"))
        handle.flush()
        os.fsync(handle.fileno())


def write_shards(
    chunks: Iterable[np.ndarray],
    out_dir: Path,
    dtype: np.dtype,
    shard_tokens: int,
    total_tokens: int,
    overlay: Overlay | None,
    progress=None,
) -> Iterator[ShardInfo]:
    """Fill shards of `shard_tokens` from `chunks` until `total_tokens`; yields each shard as it is written.

    Returns early (yielding fewer tokens than asked) when the chunks run out; the caller checks the total.
    """
    (out_dir / "shards").mkdir(parents=True, exist_ok=True)
    buffer = np.empty(min(shard_tokens, total_tokens), dtype=dtype)
    filled, first_token, index = 0, 0, 0
    chunks = iter(chunks)
    pending = np.zeros(0, dtype=dtype)
    while first_token < total_tokens:
        size = min(shard_tokens, total_tokens - first_token)
        while filled < size:
            if len(pending) == 0:
                pending = next(chunks, None)
                if pending is None:
                    return
            take = min(size - filled, len(pending))
            buffer[filled:filled + take] = pending[:take]
            pending = pending[take:]
            filled += take
            if progress is not None:
                progress.update(take)
        shard = buffer[:size]
        if overlay is not None:
            overlay.apply(shard, first_token)
        relative = SHARD_NAME.format(index=index)
        _write_synced(out_dir / relative, shard)
        yield ShardInfo(relative, first_token, size, hashlib.sha256(memoryview(shard).cast("B")).hexdigest())
        first_token += size
        filled = 0
        index += 1
