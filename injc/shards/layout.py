"""Index math of the layout contract, as pure functions.

The token stream is cut into optimizer steps of `batch_size` rows of `seq_len` tokens each::

    g (global token offset)  ->  step = g // (batch_size * seq_len)
                                 row  = (g // seq_len) % batch_size
                                 col  = g % seq_len

and back: ``g = step * batch_size * seq_len + row * seq_len + col``. Every function here works elementwise on
numpy arrays as well as on plain integers.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layout:
    """The contract with the trainer: how the flat stream is cut into steps, rows and columns."""

    seq_len: int
    """Tokens per training instance (one row of a batch)."""
    batch_size: int
    """Instances (rows) per optimizer step."""
    steps: int
    """Optimizer steps in the run."""

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.batch_size

    @property
    def total_tokens(self) -> int:
        return self.steps * self.tokens_per_step

    @property
    def total_rows(self) -> int:
        return self.steps * self.batch_size

    def locate(self, offset):
        """Global offset(s) -> (step, row, col)."""
        offset = np.asarray(offset, dtype=np.int64) if not isinstance(offset, int) else offset
        return (
            offset // self.tokens_per_step,
            (offset // self.seq_len) % self.batch_size,
            offset % self.seq_len,
        )

    def offset(self, step, row, col):
        """(step, row, col) -> global offset(s)."""
        return step * self.tokens_per_step + row * self.seq_len + col


def inverse_permutation(order: np.ndarray, dtype=np.int64) -> np.ndarray:
    """The permutation that undoes `order`: inverse[order[i]] = i (file row ↔ stream row maps, both ways)."""
    inverse = np.empty(len(order), dtype=dtype)
    inverse[order] = np.arange(len(order), dtype=dtype)
    return inverse
