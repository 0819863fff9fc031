"""A drop-in `get_batch` for nanoGPT that reads an `injc export --to nanogpt` folder step-exact, inside nanoGPT's
own training loop (evaluation included) on any number of ranks.

nanoGPT's own `get_batch` samples random offsets from train.bin, which discards the schedule. In nanoGPT's
train.py, right after its own `def get_batch(split): ...` (which this replaces) and before the model is built::

    from injc.shards.nanogpt import StepBatches
    batches = StepBatches(data_dir, seq_len=L, rows_per_step=B, micro_batch_size=batch_size, device=device)
    get_batch = batches.get_batch
    block_size = L - 1
    gradient_accumulation_steps = batches.gradient_accumulation_steps

and right before its first `X, Y = get_batch('train') # fetch the very first batch` (after a resumed checkpoint
has set iter_num)::

    batches.start_at(iter_num)

The rank and world size come from the environment torchrun sets (RANK, WORLD_SIZE), as nanoGPT's own setup reads
them; one process is rank 0 of 1. nanoGPT calls `get_batch('train')` once per micro-step (gradient_accumulation_steps
per iteration, plus one prefetch before the loop), so training call c serves iteration c // accumulation,
micro-step c % accumulation. Step k's B rows are split as: micro-step m of rank r takes rows
[(m·world + r)·mbs, (m·world + r + 1)·mbs), with B = world × accumulation × mbs. Inputs are row[:-1], targets
row[1:]. A fetch past the last step wraps to step 0: nanoGPT prefetches one micro-batch after its last iteration
that it never trains on (and runs max_iters + 1 iterations: set max_iters = S − 1).

Evaluation: nanoGPT's `estimate_loss` (rank 0 only, under `torch.no_grad()`) also calls `get_batch('train')`,
eval_iters times. A call made while gradients are off is an evaluation fetch: it samples random windows of
train.bin, as nanoGPT's own get_batch does, from its own seeded generator, and does not advance the training
order, so evaluation never shifts a step and ranks never drift apart. `get_batch('val')` samples val.bin (the
reserved tail); a build without one has no val.bin, and then 'val' samples train.bin too (said once on stderr).
"""

import os
import sys
from pathlib import Path

import numpy as np


class StepBatches:
    def __init__(self, data_dir: str | Path, *, seq_len: int, rows_per_step: int, micro_batch_size: int,
                 ddp_rank: int | None = None, ddp_world_size: int | None = None, iter_num: int = 0,
                 device: str = "cpu", seed: int = 0):
        rank = int(os.environ.get("RANK", 0)) if ddp_rank is None else ddp_rank
        world = int(os.environ.get("WORLD_SIZE", 1)) if ddp_world_size is None else ddp_world_size
        if rows_per_step % (micro_batch_size * world):
            raise ValueError(f"rows_per_step {rows_per_step} is not a multiple of micro_batch_size × "
                             f"world size = {micro_batch_size * world}")
        self.data_dir, self.seq_len, self.rows_per_step = Path(data_dir), seq_len, rows_per_step
        self.micro_batch_size, self.rank, self.world = micro_batch_size, rank, world
        self.accumulation = rows_per_step // (micro_batch_size * world)
        self.calls = iter_num * self.accumulation
        self.device = device
        self.rng = np.random.default_rng(seed)
        self.warned_no_val = False

    @property
    def gradient_accumulation_steps(self) -> int:
        """What nanoGPT's gradient_accumulation_steps must be (per rank)."""
        return self.accumulation

    def start_at(self, iter_num: int) -> None:
        """Serve iteration `iter_num` next (a resumed run: the checkpoint's iter_num, before the prefetch)."""
        self.calls = iter_num * self.accumulation

    def rows(self, call: int) -> np.ndarray:
        """Global row indices of the `call`-th training micro-batch of this rank."""
        step, micro = divmod(call, self.accumulation)
        first = step * self.rows_per_step + (micro * self.world + self.rank) * self.micro_batch_size
        return np.arange(first, first + self.micro_batch_size)

    def _windows(self, path: Path) -> np.ndarray:
        """Random seq_len-token windows of a .bin file, as nanoGPT's own get_batch samples them."""
        data = np.memmap(path, dtype=np.uint16, mode="r")
        starts = self.rng.integers(0, len(data) - self.seq_len, self.micro_batch_size)
        return np.stack([np.asarray(data[s:s + self.seq_len], dtype=np.int64) for s in starts])

    def get_batch(self, split: str):
        import torch

        train = self.data_dir / "train.bin"
        if split == "train" and torch.is_grad_enabled():
            data = np.memmap(train, dtype=np.uint16, mode="r").reshape(-1, self.seq_len)
            rows = np.asarray(data[self.rows(self.calls) % len(data)], dtype=np.int64)
            self.calls += 1
        elif split == "train" or (self.data_dir / "val.bin").is_file():
            rows = self._windows(train if split == "train" else self.data_dir / "val.bin")
        else:
            if not self.warned_no_val:
                print(f"injc: {self.data_dir} has no val.bin (the build has no held-out tail): 'val' batches are "
                      f"sampled from train.bin", file=sys.stderr)
                self.warned_no_val = True
            rows = self._windows(train)
        x, y = torch.from_numpy(rows[:, :-1].copy()), torch.from_numpy(rows[:, 1:].copy())
        return x.to(self.device), y.to(self.device)
