"""An export checked where it lies (a folder, or a prefix in object storage): its files' hashes against
export.json, and its rows, read in the trainer's order, against the manifest's steps. `injc verify EXPORT` runs it.
"""

from pathlib import Path

import numpy as np

from injc.errors import InjcError
from injc.shards.exports import BLOCK_ROWS_BYTES, ROWS_NAME, read_record, read_rows
from injc.shards.files import sha256_file
from injc.shards.litdata import litdata_rows, shuffled_rows
from injc.shards.manifest import load_manifest
from injc.shards.megatron import index_pointers
from injc.shards.olmo_core import olmo_core_rows
from injc.shards.stream import TokenStream
from injc.storage import folder as export_folder
from injc.storage import row_blocks


def verify_export(folder: str | Path) -> list[str]:
    """Problems of an export folder: file hashes, and whether its rows, read in the trainer's order, are the
    manifest's steps ([] when it is right)."""
    record = read_record(folder)
    folder = export_folder(folder)
    problems = [f"{f['path']}: sha256 differs from export.json" for f in record["files"]
                if not (folder / f["path"]).is_file() or sha256_file(folder / f["path"]) != f["sha256"]]
    if problems:
        return problems
    named = Path(record["manifest"]["path"])  # relative to the export, or absolute (an export in object storage)
    manifest = load_manifest(named if named.is_absolute() else folder / named)
    if manifest.data.get("checksum") != record["manifest"]["checksum"]:
        grown = record.get("stage") and manifest.until_step > record["stage"]["until_step"]
        return ["the manifest changed since the export (checksum differs)"
                + (": the build grew; run the same injc export again to grow the export" if grown else "")]
    stream, layout = TokenStream(manifest), manifest.layout
    try:
        rows = read_rows(folder, record, layout.total_rows)
    except InjcError as error:
        return error.problems
    if record["target"] == "litdata":
        workers, ranks = max(1, record["num_workers"]), record["num_ranks"]
        expected = (litdata_rows(layout.steps, layout.batch_size, workers, ranks) if record["seed"] is None else
                    shuffled_rows(layout.steps, layout.batch_size, workers, ranks, record["seed"],
                                  record["micro_batch_size"]))
        return [] if np.array_equal(rows, expected) else [f"{ROWS_NAME} is not the order LitData reads"]
    if record["target"] == "olmo-core":
        if not np.array_equal(rows, olmo_core_rows(layout.total_rows, record["seed"])):
            return ["rows.npy is not the inverse of OLMo-core's order for this seed"]
        files, dtype = [folder / f["path"] for f in record["files"]], manifest.dtype
    elif record["target"] == "nanogpt":
        files, dtype = [folder / "train.bin"], np.dtype(np.uint16)
    else:  # megatron
        count = len(rows)
        pointers = index_pointers(folder / "data.idx", count)
        if not np.array_equal(pointers, rows.astype(np.int64) * layout.seq_len * manifest.dtype.itemsize):
            return ["data.idx does not point each document at the row rows.npy names"]
        rows = np.arange(layout.total_rows, dtype=np.uint64)  # data.bin itself is the stream in manifest order
        files, dtype = [folder / "data.bin"], manifest.dtype
    first_row, per_block = 0, max(1, BLOCK_ROWS_BYTES // (layout.seq_len * manifest.dtype.itemsize))
    until_row = manifest.until_step * layout.batch_size  # rows past it (a staged build's export) must be zeros
    for data in files:
        file_rows = 0
        for start, block in row_blocks(data, dtype, layout.seq_len, per_block):
            file_rows = start + len(block)
            names = rows[first_row + start:first_row + start + len(block)].astype(np.int64)
            wanted = np.zeros_like(block)
            written = names < until_row
            wanted[written] = stream.rows(names[written])
            wrong = np.flatnonzero((block != wanted).any(axis=1))
            if len(wrong):
                return [f"file row {first_row + start + int(wrong[0]):,} is not manifest row "
                        f"{int(rows[first_row + start + wrong[0]]):,}"]
        first_row += file_rows
    return []
