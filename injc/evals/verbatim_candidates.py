"""`injc verbatim-candidates`: the paper's selection step before a run. Windows of a build's stream (prefix +
suffix tokens, inside one row, without EOS) whose greedy continuation of the prefix by a checkpoint is the suffix
exactly; their tokens are what `verbatim-removal` takes. The scoring after the run is injc.evals.verbatim.
"""

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from injc.errors import InjcError
from injc.evals.verbatim import PREFIX, SUFFIX
from injc.shards.files import write_atomic
from injc.shards.manifest import load_manifest
from injc.shards.stream import TokenStream

BATCH = 64
"""Windows per batched greedy pass."""


def windows(layout, eos_id: int, stream: TokenStream, width: int, stride: int, start: int = 0):
    """(offsets, [n, width] tokens) of the windows starting every `stride` tokens of each row that fit in the row
    and hold no EOS, row by row from global offset `start`."""
    starts_in_row = np.arange(0, layout.seq_len - width + 1, stride)
    for row in range(start // layout.seq_len, layout.total_tokens // layout.seq_len):
        tokens = stream.tokens(row * layout.seq_len, (row + 1) * layout.seq_len)
        chosen = np.stack([tokens[s:s + width] for s in starts_in_row]) if len(starts_in_row) else np.zeros((0, width))
        keep = ~(chosen == eos_id).any(1)
        yield row * layout.seq_len + starts_in_row[keep], chosen[keep]


def candidates(manifest_path: str | Path, checkpoint: str | Path, out: str | Path, count: int = 1000,
               prefix: int = PREFIX, suffix: int = SUFFIX, stride: int | None = None, max_windows: int | None = None,
               progress: bool = True) -> list[dict]:
    """Scan the build's stream for windows the checkpoint completes verbatim; write up to `count` as JSONL
    (`{"tokens": [...], "offset": g}`: the file `verbatim-removal` takes) and return them."""
    from injc.evals.model import Scorer

    manifest = load_manifest(manifest_path)
    layout, eos_id = manifest.layout, manifest.data["layout"]["eos_id"]
    width = prefix + suffix
    if prefix < 1 or suffix < 1 or width > layout.seq_len:
        raise InjcError(f"--prefix {prefix} + --suffix {suffix} must be ≥ 1 each and fit seq_len {layout.seq_len}")
    scorer = Scorer(checkpoint, eos_id)
    if width > scorer.block + 1:
        raise InjcError(f"--prefix + --suffix = {width} exceeds the checkpoint's context ({scorer.block + 1})")
    stream, found, scanned = TokenStream(manifest), [], 0
    pending_offsets, pending = [], []

    def flush():
        nonlocal pending_offsets, pending
        if pending:
            batch = np.concatenate(pending)
            completions = scorer.greedy_batch(np.c_[np.full(len(batch), eos_id), batch[:, :prefix]], suffix)
            exact = (completions == batch[:, prefix:]).all(1)
            found.extend({"tokens": window.tolist(), "offset": int(offset)}
                         for window, offset in zip(batch[exact], np.concatenate(pending_offsets)[exact]))
        pending_offsets, pending = [], []

    with tqdm(total=max_windows, desc="verbatim scan", unit="window", disable=not progress) as bar:
        for offsets, batch in windows(layout, eos_id, stream, width, stride or width):
            pending_offsets.append(offsets)
            pending.append(batch)
            scanned += len(batch)
            bar.update(len(batch))
            if sum(len(p) for p in pending) >= BATCH:
                flush()
            if len(found) >= count or (max_windows is not None and scanned >= max_windows):
                break
        flush()
    found = found[:count]
    write_atomic(Path(out), "".join(json.dumps(f) + "\n" for f in found).encode())
    return found
