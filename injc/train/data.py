"""Step-exact batches for the trainer: step s is stream[s*B*L:(s+1)*B*L] as [B, L] rows, in order, nothing else.

No shuffling, no random offsets, no dropped remainder: inputs are row[:-1], targets row[1:], and micro-batches
split the rows in order.
"""

import hashlib

import numpy as np
import torch


def batch_sha256(batch: np.ndarray) -> str:
    """The audit hash: sha256 of the [batch_size, seq_len] batch as little-endian uint32, row-major."""
    return hashlib.sha256(np.ascontiguousarray(batch, dtype="<u4").tobytes()).hexdigest()


def micro_batches(batch: torch.Tensor, micro_batch_size: int):
    """(rows, inputs, targets) for each micro-batch, rows in order."""
    for start in range(0, batch.shape[0], micro_batch_size):
        rows = batch[start:start + micro_batch_size]
        yield range(start, start + len(rows)), rows[:, :-1], rows[:, 1:]

