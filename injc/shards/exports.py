"""`injc export MANIFEST --to TARGET --out DIR`: the build in a trainer's own order and format, so that the
trainer's own loader, with the settings export.json states, serves the manifest's step k at step k.

Every target reads rows of the stream (row r = stream tokens [r·L, (r+1)·L), step r // B, position r % B in it)
and writes them where the trainer's loader will look for them:

- `olmo-core`: raw token files for `NumpyFSLDataset`. OLMo-core's data loader serves, at step k, the instances
  `perm[k·B : (k+1)·B]` of the concatenated files, where `perm` is `arange(rows)` shuffled by
  `np.random.Generator(PCG64(seed + epoch))` (`NumpyFSLDataLoader._build_global_indices`, epoch 1 after
  `reshuffle(epoch=1)`). So manifest row r is written as file instance `perm[r]`: the inverse permutation.
- `megatron`: `data.bin` (the stream's bytes) and `data.idx` for `GPTDataset`. Megatron shuffles documents
  and samples with its own seeded generators; with every row a document of exactly L tokens and samples of
  L + 1 tokens (Megatron-LM's default add_extra_token_to_sequence), sample j starts at one document. The export
  asks megatron-core itself which document each sample k reads (a `GPTDataset` over an identity index) and
  points that document at manifest row k: the order lives in the index, the tokens are not permuted.
- `litdata`: chunks written with LitData's own `BinaryWriter` and `TokensLoader` (int32), one chunk per step and
  rank, in stream order, or in the order that data loaders with `num_workers` workers on `num_ranks` ranks read
  back as stream order (`litdata_order`); `StreamingDataset(dir, item_loader=TokensLoader(block_size=L))` does
  not shuffle by default.
- `nanogpt`: `train.bin` (the stream as uint16), `val.bin` (the reserved tail, when the build has one) and
  `meta.pkl`; nanoGPT's own `get_batch` samples random offsets, so `injc.shards.nanogpt.StepBatches` is the
  drop-in that reads it step-exact.

Each export folder has `export.json`: target, seed, the library version the order was tested against, the
manifest's path and checksum, the files in the order the trainer must be given them with their sha256, the
loader settings, what breaks the guarantee, and `rows.npy` (uint64): file row i holds manifest row rows[i].
"""

import json
import os
import pickle
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from injc.errors import InjcError
from injc.shards.files import sha256_file, write_atomic
from injc.shards.layout import inverse_permutation
from injc.shards.manifest import Manifest, load_manifest
from injc.shards.megatron import TESTED_VERSION as MEGATRON_TESTED
from injc.shards.megatron import index_pointers, write_index
from injc.shards.stream import TokenStream
from injc.shards.verify import check_shards
from injc.tables import did_you_mean

EXPORT_NAME = "export.json"
ROWS_NAME = "rows.npy"
FILE_BYTES = 1 << 30
"""Largest olmo-core token file written (whole rows)."""
BLOCK_ROWS_BYTES = 64 << 20
"""Rows gathered at a time while writing."""
TESTED = {"olmo-core": ("ai2-olmo-core", "3.0.0"), "megatron": ("megatron-core", MEGATRON_TESTED),
          "litdata": ("litdata", "0.2.76"), "nanogpt": (None, None)}
TARGETS = tuple(TESTED)
NEEDS_SEED = ("olmo-core", "megatron")


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


def concatenate_shards(manifest: Manifest, path: Path) -> None:
    """The stream's bytes in manifest order as one file: shard files copied in blocks (bounded memory), or, for a
    build in a trainer's order, its rows read back in stream order."""
    with open(path, "wb") as out:
        if manifest.row_order is not None:
            stream = TokenStream(manifest)
            per_block = max(1, BLOCK_ROWS_BYTES // (manifest.layout.seq_len * manifest.dtype.itemsize))
            for start in range(0, manifest.layout.total_rows, per_block):
                out.write(stream.rows(np.arange(start, min(start + per_block, manifest.layout.total_rows))).tobytes())
            return
        for shard in manifest.shards:
            with open(manifest.root / shard["path"], "rb") as source:
                shutil.copyfileobj(source, out, 1 << 24)


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


def _installed(package: str | None) -> str | None:
    try:
        return version(package) if package else None
    except PackageNotFoundError:
        return None


def _write_olmo_core(stream: TokenStream, folder: Path, seed: int) -> tuple[list[str], np.ndarray, dict]:
    layout, row_bytes = stream.layout, stream.layout.seq_len * stream.manifest.dtype.itemsize
    rows = olmo_core_rows(layout.total_rows, seed)
    per_block = max(1, BLOCK_ROWS_BYTES // row_bytes)
    parts = olmo_core_parts(layout.total_rows, row_bytes)
    for name, first, count in parts:
        with open(folder / name, "wb") as handle:
            for block in range(first, first + count, per_block):
                handle.write(stream.rows(rows[block:min(block + per_block, first + count)]).tobytes())
    return [name for name, _, _ in parts], rows, olmo_core_loader(stream.manifest.data["layout"], seed)


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


def _write_megatron(stream: TokenStream, folder: Path, seed: int) -> tuple[list[str], np.ndarray, dict]:
    try:
        import megatron.core  # noqa: F401
    except ImportError as error:
        raise InjcError(f"--to megatron needs megatron-core ({error.name} is missing): "
                        "pip install -e '.[interop]'") from None
    manifest = stream.manifest
    if manifest.data["layout"]["vocab_size"] > 2 ** 31:
        raise InjcError(f"--to megatron: token ids reach {manifest.data['layout']['vocab_size'] - 1:,}; Megatron "
                        f"reads int32, so ids must stay below 2^31")
    concatenate_shards(manifest, folder / "data.bin")
    rows, loader = write_index(stream, folder, seed)
    return ["data.bin", "data.idx"], rows, loader


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


def _write_litdata(stream: TokenStream, folder: Path, workers: int, ranks: int) -> tuple[list[str], np.ndarray, dict]:
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


def _write_nanogpt(stream: TokenStream, folder: Path) -> tuple[list[str], np.ndarray, dict]:
    manifest = stream.manifest
    if manifest.dtype.itemsize != 2:
        raise InjcError(f"--to nanogpt: nanoGPT reads uint16 tokens and this build is {manifest.dtype.name} "
                        f"(vocabulary {manifest.data['layout']['vocab_size']:,}); use another target")
    concatenate_shards(manifest, folder / "train.bin")
    files = ["train.bin", "meta.pkl"]
    holdout = manifest.data.get("holdout")
    if holdout:
        shutil.copyfile(manifest.root / holdout["path"], folder / "val.bin")
        files.insert(1, "val.bin")
    (folder / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": manifest.data["layout"]["vocab_size"]}))
    layout = stream.layout
    loader = {
        "get_batch": f"injc.shards.nanogpt.StepBatches(data_dir, seq_len={layout.seq_len}, "
                     f"rows_per_step={layout.batch_size}, micro_batch_size=..., ddp_rank=..., ddp_world_size=...)",
        "block_size": layout.seq_len - 1,
        "note": "nanoGPT's own get_batch samples random offsets and discards the schedule",
    }
    return files, np.arange(layout.total_rows, dtype=np.uint64), loader


ASSUMPTIONS = {
    "olmo-core": ["one epoch (reshuffle(epoch=1)); another epoch reorders", "exactly these files, in this order",
                  "no data mix, no instance filter, chunk_size 1", "the global batch is batch_size × seq_len tokens"],
    "megatron": ["one data prefix (this export's data), split '100,0,0' (Megatron-LM's default split '969,30,1' "
                 "takes rows away), exactly batch_size × steps train samples",
                 "sequence_length = seq_len with add_extra_token_to_sequence=True (the default)", "this random_seed",
                 "no blend with other data, no mid-level surplus beyond the default",
                 "a data cache folder of its own: Megatron's cache key ignores add_extra_token_to_sequence"],
    "litdata": ["shuffle=False (the default)", "exactly the num_workers and ranks the export was written for",
                "batch_size = the build's batch_size / ranks on every rank"],
    "nanogpt": ["StepBatches as get_batch; resume by giving it iter_num",
                "rows_per_step = ddp_world_size × gradient_accumulation_steps × micro_batch_size"],
}


def write_export_record(folder: Path, manifest_path: Path, manifest: dict, target: str, seed: int | None,
                        files: list[str], loader: dict, options: dict | None = None,
                        hashes: dict[str, str] | None = None) -> None:
    """export.json in `folder` (beside rows.npy): what the trainer needs and what the order assumes. `hashes`:
    the files' sha256 where the caller has them already."""
    hashes = hashes or {}
    package, tested = TESTED[target]
    record = {
        "target": target, "seed": seed, **(options or {}),
        "library": {"package": package, "tested": tested, "installed": _installed(package)},
        "manifest": {"path": str(manifest_path), "checksum": manifest.get("checksum")},
        "layout": {k: manifest["layout"][k] for k in ("seq_len", "batch_size", "steps", "dtype")},
        "files": [{"path": name, "sha256": hashes.get(name) or sha256_file(folder / name)} for name in files],
        "loader": loader, "assumptions": ASSUMPTIONS[target],
        "rows": {"path": ROWS_NAME, "sha256": sha256_file(folder / ROWS_NAME),
                 "meaning": "file row i (files concatenated in order) holds manifest row rows[i]: step "
                            "rows[i] // batch_size, row rows[i] % batch_size"},
    }
    write_atomic(folder / EXPORT_NAME, (json.dumps(record, indent=2) + "\n").encode())


def export(manifest_path: str | Path, target: str, out: str | Path, seed: int | None = None,
           num_workers: int = 0, num_ranks: int = 1) -> Path:
    """Write `target`'s files for the build into `out` (refused if it exists); returns export.json's path.
    `num_workers`, `num_ranks` (litdata only): the StreamingDataLoader's workers on each of `num_ranks`
    data-parallel ranks the order is written for (1 worker, 1 rank: in stream order)."""
    if target not in TARGETS:
        raise InjcError(f"--to must be one of {', '.join(TARGETS)}, got {target!r}" + did_you_mean(target, TARGETS))
    if target in NEEDS_SEED and seed is None:
        raise InjcError(f"--to {target} needs --seed: the trainer's data seed, which decides its order")
    if target not in NEEDS_SEED and seed is not None:
        raise InjcError(f"--seed has no effect on --to {target}: "
                        + ("its order is set by --num-workers and --num-ranks" if target == "litdata" else
                           "StepBatches reads the rows in stream order") + "; leave it out")
    out = Path(out)
    if out.exists():
        raise InjcError(f"export folder {str(out)!r} already exists; pick another --out or remove it")
    manifest: Manifest = load_manifest(manifest_path)
    if manifest.until_step < manifest.layout.steps:
        raise InjcError("a staged build cannot be exported: grow it to the whole run first (injc build)")
    problems = check_shards(manifest)
    if problems:
        raise InjcError("the build does not match its manifest (run injc verify):", *problems[:5])
    partial = out.parent / f".{out.name}.injc-partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        stream = TokenStream(manifest)
        writer = {"olmo-core": lambda: _write_olmo_core(stream, partial, seed),
                  "megatron": lambda: _write_megatron(stream, partial, seed),
                  "litdata": lambda: _write_litdata(stream, partial, max(1, num_workers), num_ranks),
                  "nanogpt": lambda: _write_nanogpt(stream, partial)}[target]
        files, rows, loader = writer()
        np.save(partial / ROWS_NAME, rows)
        options = {"num_workers": num_workers, "num_ranks": num_ranks} if target == "litdata" else {}
        # the manifest's path relative to the export: both folders can move together
        relative = Path(os.path.relpath((manifest.root / "manifest.json").resolve(), out.resolve().parent / out.name))
        write_export_record(partial, relative, manifest.data, target, seed, files, loader, options)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out / EXPORT_NAME


def verify_export(folder: str | Path) -> list[str]:
    """Problems of an export folder: file hashes, and whether its rows, read in the trainer's order, are the
    manifest's steps ([] when it is right)."""
    folder = Path(folder)
    record = json.loads((folder / EXPORT_NAME).read_text())
    problems = [f"{f['path']}: sha256 differs from export.json" for f in record["files"]
                if not (folder / f["path"]).is_file() or sha256_file(folder / f["path"]) != f["sha256"]]
    if problems:
        return problems
    manifest = load_manifest(folder / record["manifest"]["path"])  # relative: the build's own folder (--target)
    if manifest.data.get("checksum") != record["manifest"]["checksum"]:
        return ["the manifest changed since the export (checksum differs)"]
    stream, layout = TokenStream(manifest), manifest.layout
    if record["rows"].get("sha256") not in (None, sha256_file(folder / ROWS_NAME)):
        return [f"{ROWS_NAME}: sha256 differs from export.json"]
    rows = np.load(folder / ROWS_NAME)
    if record["target"] == "litdata":
        expected = litdata_rows(layout.steps, layout.batch_size, max(1, record["num_workers"]), record["num_ranks"])
        return [] if np.array_equal(rows, expected) else [f"{ROWS_NAME} is not the order LitData reads"]
    if record["target"] == "olmo-core":
        if not np.array_equal(rows, olmo_core_rows(layout.total_rows, record["seed"])):
            return ["rows.npy is not the inverse of OLMo-core's order for this seed"]
        files = [np.memmap(folder / f["path"], dtype=manifest.dtype, mode="r") for f in record["files"]]
    elif record["target"] == "nanogpt":
        files = [np.memmap(folder / "train.bin", dtype=np.uint16, mode="r")]
    else:  # megatron
        count = len(rows)
        pointers = index_pointers(folder / "data.idx", count)
        if not np.array_equal(pointers, rows.astype(np.int64) * layout.seq_len * manifest.dtype.itemsize):
            return ["data.idx does not point each document at the row rows.npy names"]
        rows = np.arange(layout.total_rows, dtype=np.uint64)  # data.bin itself is the stream in manifest order
        files = [np.memmap(folder / "data.bin", dtype=manifest.dtype, mode="r")]
    first_row, per_block = 0, max(1, BLOCK_ROWS_BYTES // (layout.seq_len * manifest.dtype.itemsize))
    for data in files:
        file_rows = data.reshape(-1, layout.seq_len)
        for start in range(0, len(file_rows), per_block):
            block = np.asarray(file_rows[start:start + per_block])
            wanted = stream.rows(rows[first_row + start:first_row + start + len(block)].astype(np.int64))
            wrong = np.flatnonzero((block != wanted).any(axis=1))
            if len(wrong):
                return [f"file row {first_row + start + int(wrong[0]):,} is not manifest row "
                        f"{int(rows[first_row + start + wrong[0]]):,}"]
        first_row += len(file_rows)
    return []
