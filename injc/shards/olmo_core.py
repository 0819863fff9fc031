"""OLMo-core's own order for an export (and for `injc build --target olmo-core:SEED`): raw token files for
`NumpyFSLDataset`, each manifest row written where OLMo-core's data loader will look for it.

OLMo-core's data loader serves, at step k, the instances `perm[k·B : (k+1)·B]` of the concatenated files, where
`perm` is `arange(rows)` shuffled by `np.random.Generator(PCG64(seed + epoch))`
(`NumpyFSLDataLoader._build_global_indices`, epoch 1 after `reshuffle(epoch=1)`). So manifest row r is written as
file instance `perm[r]`: the inverse permutation.
"""

import os
from pathlib import Path

import numpy as np

from injc.shards.layout import inverse_permutation

FILE_BYTES = 1 << 30
"""Largest token file written (whole rows)."""


def olmo_core_order(rows: int, seed: int, epoch: int = 1) -> np.ndarray:
    """OLMo-core's global instance order for one epoch: position p of the epoch serves instance order[p]."""
    order = np.arange(rows, dtype=np.uint32)
    np.random.Generator(np.random.PCG64(seed=seed + epoch)).shuffle(order)
    return order


def olmo_core_rows(rows: int, seed: int) -> np.ndarray:
    """rows.npy of an OLMo-core layout: file row i holds manifest row rows[i] (the inverse of OLMo-core's order:
    manifest row r is written as instance order[r], which the loader serves at position r)."""
    return inverse_permutation(olmo_core_order(rows, seed), np.uint64)


def olmo_core_parts(total_rows: int, row_bytes: int) -> list[tuple[str, int, int]]:
    """(file name, first row, rows) of each raw token file: whole rows, up to FILE_BYTES each."""
    per_file = max(1, FILE_BYTES // row_bytes)
    return [(f"part-{number:05d}.npy", first, min(per_file, total_rows - first))
            for number, first in enumerate(range(0, total_rows, per_file))]


class OlmoCoreFiles:
    """A build's rows written straight into OLMo-core's order (`injc build --target olmo-core:SEED`): stream row r
    goes to row order[r] of the files concatenated, exactly where `injc export --to olmo-core` would put it, so
    the build is written once. Files of up to FILE_BYTES (whole rows) are made at full size up front; each batch of
    rows is sorted by destination and written in runs of consecutive rows (no page faults of a memory map)."""

    def __init__(self, folder: Path, prefix: str, total_rows: int, seq_len: int, dtype: np.dtype, seed: int,
                 resume: bool = False):
        """`resume`: open the files a killed build left (their finished rows are kept); else make them anew."""
        self.order = olmo_core_order(total_rows, seed)
        self.seq_len, self.dtype, self.row_bytes = seq_len, dtype, seq_len * dtype.itemsize
        parts = olmo_core_parts(total_rows, self.row_bytes)
        self.paths = [prefix + name for name, _, _ in parts]
        self.first_rows = np.array([first for _, first, _ in parts], dtype=np.int64)
        self.row_counts = [count for _, _, count in parts]
        self.handles = []
        for path, count in zip(self.paths, self.row_counts):
            self.handles.append(open(folder / path, "r+b" if resume else "wb"))
            self.handles[-1].truncate(count * self.row_bytes)

    def _runs(self, first_token: int, count: int):
        """For stream rows [first_token/L, +count): (positions in that range, file, byte offset) per run of rows
        that are consecutive in one file, in file order."""
        first_row = first_token // self.seq_len
        file_rows = self.order[first_row:first_row + count].astype(np.int64)
        by_destination = np.argsort(file_rows)
        file_rows = file_rows[by_destination]
        runs = np.flatnonzero(np.diff(file_rows, prepend=-2) != 1)  # starts of runs of consecutive file rows
        file_of = np.searchsorted(self.first_rows, file_rows, side="right") - 1
        runs = np.union1d(runs, np.flatnonzero(np.diff(file_of, prepend=-1) != 0))  # a run never spans two files
        for start, stop in zip(runs.tolist(), np.r_[runs[1:], len(file_rows)].tolist()):
            index = int(file_of[start])
            yield (by_destination[start:stop], self.handles[index].fileno(),
                   int(file_rows[start] - self.first_rows[index]) * self.row_bytes)

    def write(self, first_token: int, tokens: np.ndarray) -> None:
        """Write the stream's tokens from `first_token` (whole rows) to their rows in the files."""
        rows = tokens.reshape(-1, self.seq_len)
        for positions, handle, offset in self._runs(first_token, len(rows)):
            os.pwrite(handle, memoryview(np.ascontiguousarray(rows[positions])).cast("B"), offset)

    def read(self, first_token: int, num_tokens: int) -> np.ndarray:
        """The stream's tokens [first_token, first_token + num_tokens) (whole rows) read back from the files."""
        rows = np.empty((num_tokens // self.seq_len, self.seq_len), dtype=self.dtype)
        for positions, handle, offset in self._runs(first_token, len(rows)):
            data = os.pread(handle, len(positions) * self.row_bytes, offset)
            rows[positions] = np.frombuffer(data, dtype=self.dtype).reshape(-1, self.seq_len)
        return rows.reshape(-1)

    def rows(self) -> np.ndarray:
        """rows.npy: file row i holds stream row rows[i]."""
        return inverse_permutation(self.order, np.uint64)

    def write_synced(self, first_token: int, tokens: np.ndarray) -> None:
        """`write`, then sync every file: a build records a shard as done only once its rows are on disk."""
        self.write(first_token, tokens)
        for handle in self.handles:
            os.fsync(handle.fileno())

    def close(self) -> None:
        for handle in self.handles:
            handle.close()
        self.handles = []


def olmo_core_loader(layout: dict, seed: int) -> dict:
    """The OLMo-core settings under which the files serve step k at step k (export.json's `loader`)."""
    return {
        "dataset": f"NumpyFSLDataset(*files, sequence_length={layout['seq_len']}, dtype=np.{layout['dtype']}, "
                   f"eos_token_id={layout['eos_id']}, pad_token_id=<any>, vocab_size={layout['vocab_size']})",
        "data_loader": f"NumpyDataLoaderConfig(global_batch_size={layout['tokens_per_step']}, seed={seed})"
                       ".build(dataset)",
        "epoch": "data_loader.reshuffle(epoch=1), then iterate: batch k is step k",
        "ranks": "each data-parallel rank gets its slice of the step's rows, as OLMo-core splits every batch",
    }
