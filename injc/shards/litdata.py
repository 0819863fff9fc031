"""LitData's own order for an export: chunks written with LitData's `BinaryWriter` and `TokensLoader` (int32), one
chunk per step and rank.

Unshuffled (`StreamingDataset(dir, item_loader=TokensLoader(block_size=L))`, shuffle=False, its default), the
chunks are placed so that data loaders with `num_workers` workers on `num_ranks` ranks serve step k at batch k
(`litdata_order`: LitData's worker assignment in closed form).

Shuffled with a seed (`shuffle=True, seed=SEED`, as `litgpt pretrain`'s LitData data module reads: seed 42, 8
workers), LitData permutes chunks and items by its own seeded generators, per epoch. injc asks LitData itself which
item each batch holds: it writes a probe dataset of the same chunk shapes whose items are their own indices (one
token each), reads it back with the same dataset and data loader settings for each rank, and writes manifest row
rows[i] as item i, so that on rank r micro-batch b serves the rows of step b // A (A = B / (M·R) micro-batches of M
rows a step on each of R ranks) that rank r's micro-batch b % A takes.
"""

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


def _write_chunks(folder: Path, tokens_of, count: int, share: int, tokens_per_item: int) -> None:
    """`count` items in chunks of `share` items (one per step and rank), item i's tokens from tokens_of(i, j)."""
    import torch
    from litdata import TokensLoader
    from litdata.streaming.writer import BinaryWriter

    writer = BinaryWriter(str(folder), chunk_size=share * tokens_per_item, item_loader=TokensLoader())
    for chunk, first in enumerate(range(0, count, share)):  # workers and shuffles move whole chunks
        writer[chunk] = torch.from_numpy(tokens_of(first, min(first + share, count)).reshape(-1).astype(np.int32))
    writer.done()
    writer.merge()


def write_litdata(stream: TokenStream, folder: Path, workers: int, ranks: int, seed: int | None = None,
                  micro_batch: int | None = None) -> tuple[list[str], np.ndarray, dict]:
    try:
        import litdata  # noqa: F401
        import torch  # noqa: F401
    except ImportError as error:
        raise InjcError(f"--to litdata needs litdata and torch ({error.name} is missing): "
                        "pip install -e '.[interop]'") from None
    layout = stream.layout
    share = layout.batch_size // ranks
    micro = micro_batch or share
    if seed is None:
        rows = litdata_rows(layout.steps, layout.batch_size, workers, ranks)
    else:
        rows = shuffled_rows(layout.steps, layout.batch_size, workers, ranks, seed, micro)
    _write_chunks(folder, lambda first, stop: stream.rows(rows[first:stop]), len(rows), share, layout.seq_len)
    files = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".json"))
    shuffle = "shuffle=False" if seed is None else f"shuffle=True, seed={seed}"
    loader = {
        "dataset": f"StreamingDataset(dir, item_loader=TokensLoader(block_size={layout.seq_len}), {shuffle})",
        "data_loader": f"StreamingDataLoader(dataset, batch_size={micro}, num_workers={workers}"
                       f"{', drop_last=True' if seed is not None else ''})  # on each rank",
        "ranks": f"{ranks} data-parallel rank(s) (LitData reads the world size from torch.distributed)"
                 + (f"; rank r gets rows [r·{share}, (r+1)·{share}) of each step" if seed is None else
                    f"; {layout.batch_size // (micro * ranks)} micro-batch(es) of {micro} rows a step on each rank"),
        **({"litgpt_pretrain": f"--data LitData --data.data_path <export> --data.seed {seed} --data.num_workers "
                               f"{workers} --train.global_batch_size {layout.batch_size} --train.micro_batch_size "
                               f"{micro} --devices {ranks}, model block_size {layout.seq_len - 1} (LitGPT reads "
                               f"block_size + 1 tokens a row)"} if seed is not None else {}),
    }
    return files, rows, loader


def shuffled_rows(steps: int, batch_size: int, workers: int, ranks: int, seed: int, micro: int) -> np.ndarray:
    """rows.npy of a shuffled LitData export, from LitData itself (see the module docstring)."""
    import tempfile

    from litdata import StreamingDataLoader, StreamingDataset, TokensLoader
    from litdata.utilities.env import _DistributedEnv

    if batch_size % (micro * ranks):
        raise InjcError(f"--micro-batch-size {micro} × --num-ranks {ranks} does not divide the batch of "
                        f"{batch_size} rows")
    total, share, per_step = steps * batch_size, batch_size // ranks, batch_size // (micro * ranks)
    rows = np.full(total, -1, dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="injc-litdata-order-") as probe:
        _write_chunks(Path(probe), lambda first, stop: np.arange(first, stop), total, share, 1)
        for rank in range(ranks):
            dataset = StreamingDataset(probe, item_loader=TokensLoader(block_size=1), shuffle=True, seed=seed)
            if ranks > 1:  # what LitData detects under torch.distributed (and then always drops the last batch)
                dataset.distributed_env = _DistributedEnv(world_size=ranks, global_rank=rank, num_nodes=1)
                dataset.drop_last = True
            loader = StreamingDataLoader(dataset, batch_size=micro, num_workers=workers, drop_last=True)
            for batch, items in enumerate(loader):
                step, part = divmod(batch, per_step)
                first = step * batch_size + (part * ranks + rank) * micro
                rows[np.asarray(items).reshape(-1)] = first + np.arange(micro)
    if (rows < 0).any() or len(np.unique(rows)) != total:
        raise InjcError(f"LitData's shuffled order with {workers} workers on {ranks} rank(s) does not read every "
                        f"row exactly once in one epoch; this litdata version is not supported (tested: 0.2.76)")
    return rows.astype(np.uint64)


def litdata_rows(steps: int, batch_size: int, workers: int, ranks: int) -> np.ndarray:
    """rows.npy of a LitData export: item i of the chunks (in order) is manifest row rows[i]."""
    share = batch_size // ranks
    step_of, rank_of = litdata_order(steps, batch_size, workers, ranks)
    return (step_of[:, None] * batch_size + rank_of[:, None] * share + np.arange(share)).reshape(-1).astype(np.uint64)
