"""A drop-in `get_batch` for nanoGPT that reads an `injc export --to nanogpt` folder step-exact.

nanoGPT's own `get_batch` samples random offsets from train.bin, which discards the schedule. In nanoGPT's
train.py, replace it with::

    from injc.shards.nanogpt import StepBatches
    batches = StepBatches(data_dir, seq_len=L, rows_per_step=B, micro_batch_size=batch_size,
                          ddp_rank=ddp_rank, ddp_world_size=ddp_world_size, iter_num=iter_num, device=device)
    get_batch = batches.get_batch          # and set block_size = L - 1

nanoGPT calls `get_batch('train')` once per micro-step (gradient_accumulation_steps per iteration, plus one
prefetch before the loop), so call c serves iteration c // accumulation, micro-step c % accumulation. Step k's
B rows are split as: micro-step m of rank r takes rows [(m·world + r)·mbs, (m·world + r + 1)·mbs), with
B = world × accumulation × mbs. Inputs are row[:-1], targets row[1:]. Resuming from a checkpoint: pass its
`iter_num`. A fetch past the last step wraps to step 0: nanoGPT prefetches one micro-batch after its last
iteration that it never trains on. `get_batch('val')` samples random windows of val.bin (the reserved tail),
as nanoGPT does.
"""

from pathlib import Path

import numpy as np


class StepBatches:
    def __init__(self, data_dir: str | Path, *, seq_len: int, rows_per_step: int, micro_batch_size: int,
                 ddp_rank: int = 0, ddp_world_size: int = 1, iter_num: int = 0, device: str = "cpu", seed: int = 0):
        if rows_per_step % (micro_batch_size * ddp_world_size):
            raise ValueError(f"rows_per_step {rows_per_step} is not a multiple of micro_batch_size × "
                             f"ddp_world_size = {micro_batch_size * ddp_world_size}")
        self.data_dir, self.seq_len, self.rows_per_step = Path(data_dir), seq_len, rows_per_step
        self.micro_batch_size, self.rank, self.world = micro_batch_size, ddp_rank, ddp_world_size
        self.accumulation = rows_per_step // (micro_batch_size * ddp_world_size)
        self.calls = iter_num * self.accumulation
        self.device = device
        self.rng = np.random.default_rng(seed)

    @property
    def gradient_accumulation_steps(self) -> int:
        """What nanoGPT's gradient_accumulation_steps must be (per rank)."""
        return self.accumulation

    def rows(self, call: int) -> np.ndarray:
        """Global row indices of the `call`-th micro-batch of this rank."""
        step, micro = divmod(call, self.accumulation)
        first = step * self.rows_per_step + (micro * self.world + self.rank) * self.micro_batch_size
        return np.arange(first, first + self.micro_batch_size)

    def get_batch(self, split: str):
        import torch

        if split == "train":
            data = np.memmap(self.data_dir / "train.bin", dtype=np.uint16, mode="r").reshape(-1, self.seq_len)
            rows = np.asarray(data[self.rows(self.calls) % len(data)], dtype=np.int64)
            self.calls += 1
        else:
            data = np.memmap(self.data_dir / "val.bin", dtype=np.uint16, mode="r")
            starts = self.rng.integers(0, len(data) - self.seq_len, self.micro_batch_size)
            rows = np.stack([np.asarray(data[s:s + self.seq_len], dtype=np.int64) for s in starts])
        x, y = torch.from_numpy(rows[:, :-1].copy()), torch.from_numpy(rows[:, 1:].copy())
        return x.to(self.device), y.to(self.device)
