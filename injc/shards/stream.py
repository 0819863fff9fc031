"""Reading a build back: the token stream of a manifest as memmaps, addressed by global offset or by step.

This is the reader a trainer needs (nanoGPT style: no copy, no shuffling)::

    stream = injc.open_stream("out/demo/manifest.json")
    batch = stream.batch(step)          # [batch_size, seq_len] = stream[step*B*L : (step+1)*B*L]
"""

from pathlib import Path

import numpy as np

from injc.errors import ManifestError
from injc.shards.layout import inverse_permutation
from injc.shards.manifest import Manifest, load_manifest


class TokenStream:
    """All shards of a manifest as one read-only stream of its written tokens (`total_tokens`, or the steps
    before `until_step` of a staged build).

    `batch(k)` is step k as the contract defines it. Readers that take the stream in this order: `injc train`,
    DataTrove's `DatatroveFolderDataset` on the shards (without shuffle). OLMo-core, Megatron, LitData and
    nanoGPT read in their own order and need `injc export` (docs/trainers.md).

    A build written in a trainer's order (`row_order`, `injc build --target`) is read through its row map: stream
    row r is file row `file_row[r]` of the shards concatenated, so every method still addresses the stream.
    """

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.layout = manifest.layout
        dtype = manifest.dtype
        self.first = np.array([s["first_token"] for s in manifest.shards], dtype=np.int64)
        self.shards = []
        for shard in manifest.shards:
            path = manifest.root / shard["path"]
            expected = shard["num_tokens"] * dtype.itemsize
            try:
                size = path.stat().st_size
            except OSError:
                raise ManifestError(f"shard {str(path)!r} is missing") from None
            if size != expected:
                raise ManifestError(f"shard {str(path)!r} has {size:,} bytes, the manifest says {expected:,}")
            self.shards.append(np.memmap(path, dtype=dtype, mode="r"))
        self.file_row = None
        if manifest.row_order is not None:
            path = manifest.root / manifest.row_order["path"]
            try:
                rows = np.load(path, mmap_mode="r")
            except (OSError, ValueError):
                raise ManifestError(f"row map {str(path)!r} is missing or unreadable") from None
            if len(rows) != manifest.layout.total_rows:
                raise ManifestError(f"row map {str(path)!r} has {len(rows):,} rows, the run "
                                    f"{manifest.layout.total_rows:,}")
            self.file_row = inverse_permutation(rows)

    def __len__(self) -> int:
        return self.manifest.written_tokens

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the run, copied out of the shards they span."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"token range [{start}, {stop}) is outside the {len(self):,} tokens written")
        if self.file_row is not None:
            seq_len = self.layout.seq_len
            first, last = start // seq_len, -(-stop // seq_len)
            return self.rows(np.arange(first, last)).reshape(-1)[start - first * seq_len:stop - first * seq_len]
        parts = []
        index = int(np.searchsorted(self.first, start, side="right")) - 1
        while start < stop:
            shard = self.shards[index]
            local = start - int(self.first[index])
            take = min(stop - start, len(shard) - local)
            parts.append(np.asarray(shard[local:local + take]))
            start += take
            index += 1
        return np.concatenate(parts) if parts else np.zeros(0, dtype=self.manifest.dtype)

    def batch(self, step: int) -> np.ndarray:
        """The tokens of optimizer step `step`, as [batch_size, seq_len] rows in order."""
        if not 0 <= step < self.manifest.until_step:
            raise IndexError(f"step {step} is outside the {self.manifest.until_step:,} steps written")
        size = self.layout.tokens_per_step
        return self.tokens(step * size, (step + 1) * size).reshape(self.layout.batch_size, self.layout.seq_len)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """The stream's rows at these global row indices, [len(rows), seq_len] (vectorized per shard)."""
        seq_len, rows = self.layout.seq_len, np.asarray(rows, dtype=np.int64)
        file_rows = rows if self.file_row is None else self.file_row[rows]
        out = np.empty((len(rows), seq_len), dtype=self.manifest.dtype)
        first_rows = self.first // seq_len
        shard_of = np.searchsorted(first_rows, file_rows, side="right") - 1
        for index in np.unique(shard_of):
            mine = np.flatnonzero(shard_of == index)
            out[mine] = self.shards[index].reshape(-1, seq_len)[file_rows[mine] - first_rows[index]]
        return out

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """Tokens at sorted global positions (vectorized per shard)."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.file_row is not None:
            seq_len = self.layout.seq_len
            in_files = self.file_row[positions // seq_len] * seq_len + positions % seq_len
            by_file = np.argsort(in_files, kind="stable")
            out = np.empty(len(positions), dtype=self.manifest.dtype)
            out[by_file] = self._gather_sorted(in_files[by_file])
            return out
        return self._gather_sorted(positions)

    def _gather_sorted(self, positions: np.ndarray) -> np.ndarray:
        """Tokens at sorted positions of the shards concatenated."""
        out = np.empty(len(positions), dtype=self.manifest.dtype)
        end = int(self.first[-1]) + len(self.shards[-1]) if self.shards else 0  # full-size files of a staged target
        bounds = np.searchsorted(positions, np.r_[self.first, end])
        for index, shard in enumerate(self.shards):
            low, high = bounds[index], bounds[index + 1]
            if high > low:
                out[low:high] = shard[positions[low:high] - self.first[index]]
        return out


def open_stream(manifest: str | Path | Manifest) -> TokenStream:
    return TokenStream(manifest if isinstance(manifest, Manifest) else load_manifest(manifest))
