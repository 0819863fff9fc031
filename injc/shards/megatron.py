"""Megatron's own order for an export: `data.idx` over the stream's bytes in `data.bin`.

Megatron's `GPTDataset` shuffles documents and samples with its own seeded generators. With every row a document
of exactly L tokens and samples of L + 1 tokens (Megatron-LM's default add_extra_token_to_sequence), sample j starts
at one document. injc asks megatron-core itself which document each sample k starts at (a `GPTDataset` over an
identity index) and points that document at manifest row k: the order lives in the index, the tokens stay in
manifest order.
"""

import struct
from pathlib import Path

import numpy as np

from injc.errors import InjcError
from injc.shards.stream import TokenStream

TESTED_VERSION = "0.16.1"
"""The megatron-core whose order the tests verify."""
INDEX_HEADER = b"MMIDIDX\x00\x00"
DTYPE_CODES = {"uint16": 8, "uint32": 4}
"""Megatron's IndexedDataset dtype codes; a uint32 build is read as int32 (same bytes for ids < 2^31)."""


def megatron_index(path: Path, dtype_code: int, seq_len: int, pointers: np.ndarray) -> None:
    """Megatron's .idx: header, version, dtype, counts, lengths (int32), byte pointers (int64), document
    boundaries (every sequence its own document)."""
    count = len(pointers)
    with open(path, "wb") as handle:
        handle.write(INDEX_HEADER + struct.pack("<Q", 1) + struct.pack("<B", dtype_code))
        handle.write(struct.pack("<Q", count) + struct.pack("<Q", count + 1))
        handle.write(np.full(count, seq_len, dtype=np.int32).tobytes())
        handle.write(np.asarray(pointers, dtype=np.int64).tobytes())
        handle.write(np.arange(count + 1, dtype=np.int64).tobytes())


class _OrderTokenizer:
    """What GPTDatasetConfig asks of a tokenizer while injc computes Megatron's order (no token is read)."""

    eod = pad = 0
    vocab_size = 1
    unique_identifiers = {"class": "injc-export"}


def megatron_config(prefix: Path, seed: int, seq_len: int, tokenizer, cache: Path | None = None) -> "object":
    """The GPTDatasetConfig the export's order holds for: what Megatron-LM's pretrain_gpt.py builds from
    `--seed SEED --seq-length L --data-path <export>/data --split 100,0,0` (add_extra_token_to_sequence keeps its
    default, True: each sample is a row plus one token; the trainer passes its own tokenizer)."""
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    return GPTDatasetConfig(random_seed=seed, sequence_length=seq_len, blend=([str(prefix)], None), split="100,0,0",
                            path_to_cache=None if cache is None else str(cache), tokenizer=tokenizer,
                            reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False)


def megatron_documents(prefix: Path, seed: int, seq_len: int, samples: int) -> np.ndarray:
    """The document each of the first `samples` samples of Megatron's GPTDataset reads, per megatron-core.

    With every document exactly L = seq_len tokens and samples of L + 1 tokens, sample j starts at the start of
    the j-th document of Megatron's document order and takes one token of the next. Megatron's index cache is
    written to a temporary folder and removed: its cache key ignores add_extra_token_to_sequence, so a cache left
    beside the data could later serve another configuration's samples.
    """
    import tempfile
    import warnings

    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset

    with warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="injc-megatron-cache-") as cache:
        warnings.simplefilter("ignore")
        config = megatron_config(prefix, seed, seq_len, _OrderTokenizer(), Path(cache))
        dataset = BlendedMegatronDatasetBuilder(GPTDataset, [samples, None, None], lambda: True, config).build()[0]
        starts = dataset.sample_index[dataset.shuffle_index[np.arange(samples)]]
        # a sample that starts at the end of one document (offset L) starts at the next one
        return np.asarray(dataset.document_index[starts[:, 0] + starts[:, 1] // seq_len], dtype=np.int64)


def index_pointers(path: Path, count: int) -> np.ndarray:
    """The byte pointers of a .idx written by `megatron_index` (its `count` documents)."""
    return np.fromfile(path, dtype=np.int64, count=count, offset=len(INDEX_HEADER) + 8 + 1 + 16 + 4 * count)


def write_index(stream: TokenStream, folder: Path, seed: int) -> tuple[np.ndarray, dict]:
    """data.idx in `folder` (beside the stream's data.bin) in Megatron's order for `seed`; returns (rows.npy:
    document d → manifest row, the loader settings for export.json)."""
    manifest, layout = stream.manifest, stream.layout
    row_bytes = layout.seq_len * manifest.dtype.itemsize
    code = DTYPE_CODES[manifest.dtype.name]
    # one document more than rows: samples of L + 1 tokens need (rows + 1)·L tokens for `rows` samples in one epoch
    documents_count = layout.total_rows + 1
    megatron_index(folder / "data.idx", code, layout.seq_len, np.zeros(documents_count, dtype=np.int64))
    documents = megatron_documents(folder / "data", seed, layout.seq_len, layout.total_rows)
    if len(np.unique(documents)) != layout.total_rows:
        raise InjcError("megatron-core's order does not read every row exactly once; this megatron-core version "
                        f"is not supported (tested: {TESTED_VERSION})")
    # document d is pointed at manifest row rows[d]; the one document no sample starts at (only its first token is
    # read, as the last label of one sample) points at row 0
    rows = np.zeros(documents_count, dtype=np.uint64)
    rows[documents] = np.arange(layout.total_rows, dtype=np.uint64)
    spare = int(np.setdiff1d(np.arange(documents_count), documents)[0])
    megatron_index(folder / "data.idx", code, layout.seq_len, rows.astype(np.int64) * row_bytes)
    loader = {
        "megatron_lm": f"pretrain_gpt.py --data-path <export>/data --split 100,0,0 --seed {seed} "
                       f"--seq-length {layout.seq_len} --global-batch-size {layout.batch_size} --train-iters "
                       f"{layout.steps} --data-cache-path <a new folder>",
        "config": f"GPTDatasetConfig(random_seed={seed}, sequence_length={layout.seq_len}, "
                  "blend=([<export>/data], None), split='100,0,0', tokenizer=<yours>, reset_position_ids=False, "
                  "reset_attention_mask=False, eod_mask_loss=False); add_extra_token_to_sequence stays True",
        "builder": f"BlendedMegatronDatasetBuilder(GPTDataset, [{layout.total_rows}, ...], ...).build()[0]",
        "samples": f"sample j's tokens are manifest row j (its labels: the row shifted by one, then one token of "
                   f"another row): global batch {layout.batch_size} (micro-batches × data-parallel ranks) in "
                   "Megatron's sample order gives step k at step k",
        "files": "data.bin holds the stream in manifest order; data.idx points document d at row rows[d] (one "
                 "document more than rows: the one no sample starts at points at row 0)",
        "spare_document": spare,
    }
    return rows, loader
