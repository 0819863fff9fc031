"""LitData's own order for an export: chunks written with LitData's `BinaryWriter` and `TokensLoader` (int32),
one chunk per step and rank, placed so that `StreamingDataset(dir, item_loader=TokensLoader(block_size=L))`
(shuffle=False, its default) read by data loaders with `num_workers` workers on `num_ranks` ranks serves step k at
batch k."""

from pathlib import Path

import numpy as np

from injc.errors import InjcError
from injc.shards.stream import TokenStream


def litdata_order(steps: int, batch_size: int, workers: int = 1, ranks: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The (step, rank) each LitData chunk holds, in item order, so that on every one of `ranks` ranks a
    StreamingDataLoader with `workers` workers and batch_size B/R serves rank r's rows of step k at batch k.

    Each chunk is one rank's slice of one step (B/R rows). LitData numbers the global workers g = r·W + w and gives
    each a contiguous run of S/W batches, in that order (`_associate_chunks_and_intervals_to_workers`); a rank's
    data loader takes one batch from each of its workers in turn. So the j-th batch of worker (r, w) must be
    rank r's slice of step j·W + w."""
    if steps % workers:
        raise InjcError(f"--num-workers {workers} does not divide the {steps:,} steps: LitData would give its "
                        f"workers unequal shares")
    if batch_size % ranks:
        raise InjcError(f"--num-ranks {ranks} does not divide the batch of {batch_size} rows")
    worker, batch = np.divmod(np.arange(steps * ranks), steps // workers)
    rank, worker = np.divmod(worker, workers)
    return batch * workers + worker, rank


def write_litdata(stream: TokenStream, folder: Path, workers: int, ranks: int) -> tuple[list[str], np.ndarray, dict]:
    try:
        import torch
        from litdata import TokensLoader
        from litdata.streaming.writer import BinaryWriter
    except ImportError as error:
        raise InjcError(f"--to litdata needs litdata and torch ({error.name} is missing): "
                        "pip install -e '.[interop]'") from None
    layout = stream.layout
    share = layout.batch_size // ranks
    rows = litdata_rows(layout.steps, layout.batch_size, workers, ranks)
    writer = BinaryWriter(str(folder), chunk_size=share * layout.seq_len, item_loader=TokensLoader())
    for item, first in enumerate(range(0, len(rows), share)):  # one chunk per (step, rank): workers split whole ones
        chunk = stream.rows(rows[first:first + share]).reshape(-1).astype(np.int32)
        writer[item] = torch.from_numpy(chunk)
    writer.done()
    writer.merge()
    files = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".json"))
    loader = {
        "dataset": f"StreamingDataset(dir, item_loader=TokensLoader(block_size={layout.seq_len}))  # shuffle=False",
        "data_loader": f"StreamingDataLoader(dataset, batch_size={share}, num_workers={workers})  # on each rank",
        "ranks": f"{ranks} data-parallel rank(s) (LitData reads the world size from torch.distributed); rank r "
                 f"gets rows [r·{share}, (r+1)·{share}) of each step",
    }
    return files, rows, loader


def litdata_rows(steps: int, batch_size: int, workers: int, ranks: int) -> np.ndarray:
    """rows.npy of a LitData export: item i of the chunks (in order) is manifest row rows[i]."""
    share = batch_size // ranks
    step_of, rank_of = litdata_order(steps, batch_size, workers, ranks)
    return (step_of[:, None] * batch_size + rank_of[:, None] * share + np.arange(share)).reshape(-1).astype(np.uint64)
