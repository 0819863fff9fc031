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

A staged build (`injc build --until-step`) exports for olmo-core, megatron and nanogpt: their files have a fixed
layout of the whole run, so they are written at full size with the rows not written yet as zeros, and running the
same `injc export` after the build grew writes the new rows in place (the grown export equals the export of the
grown build). LitData's chunks are LitData's own writer's, written in one pass: its export needs the whole run.
"""

import json
import os
import pickle
import shutil
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from injc.errors import InjcError
from injc.shards.files import sha256_file, write_atomic, write_blocks, written_whole
from injc.shards.litdata import write_litdata
from injc.shards.manifest import MANIFEST_NAME, Manifest, load_manifest, same_stream
from injc.shards.megatron import TESTED_VERSION as MEGATRON_TESTED
from injc.shards.megatron import write_index
from injc.shards.olmo_core import OlmoCoreFiles, olmo_core_loader, olmo_core_parts, olmo_core_rows
from injc.shards.stream import TokenStream
from injc.shards.verify import check_shards
from injc.storage import folder as export_folder
from injc.storage import is_url, load_npy
from injc.tables import did_you_mean

EXPORT_NAME = "export.json"
ROWS_NAME = "rows.npy"
BLOCK_ROWS_BYTES = 64 << 20
"""Rows gathered at a time while writing."""
COPY_BLOCK = 16 << 20
"""Bytes per read when shard files are copied whole."""
TESTED = {"olmo-core": ("ai2-olmo-core", "3.0.0"), "megatron": ("megatron-core", MEGATRON_TESTED),
          "litdata": ("litdata", "0.2.76"), "nanogpt": (None, None)}
TARGETS = tuple(TESTED)
NEEDS_SEED = ("olmo-core", "megatron")


def concatenate_shards(manifest: Manifest, path: Path) -> str:
    """The stream's bytes in manifest order as one file (returns its sha256): shard files copied in blocks (bounded
    memory), or, for a build in a trainer's order, its rows read back in stream order."""
    def blocks():
        if manifest.row_order is not None:
            stream = TokenStream(manifest)
            per_block = max(1, BLOCK_ROWS_BYTES // (manifest.layout.seq_len * manifest.dtype.itemsize))
            for start in range(0, manifest.layout.total_rows, per_block):
                yield stream.rows(np.arange(start, min(start + per_block, manifest.layout.total_rows)))
            return
        for shard in manifest.shards:
            with open(manifest.root / shard["path"], "rb") as source:
                while block := source.read(COPY_BLOCK):
                    yield block

    return write_blocks(path, blocks())


def _installed(package: str | None) -> str | None:
    try:
        return version(package) if package else None
    except PackageNotFoundError:
        return None


def _write_olmo_core(stream: TokenStream, folder: Path, seed: int) -> tuple[list[str], np.ndarray, dict, dict]:
    layout, row_bytes = stream.layout, stream.layout.seq_len * stream.manifest.dtype.itemsize
    rows = olmo_core_rows(layout.total_rows, seed)
    per_block = max(1, BLOCK_ROWS_BYTES // row_bytes)
    parts = olmo_core_parts(layout.total_rows, row_bytes)
    hashes = {}
    if stream.manifest.until_step < layout.steps:
        fill_rows(stream, folder, "olmo-core", seed, 0)
    else:
        for name, first, count in parts:
            hashes[name] = write_blocks(folder / name, (stream.rows(rows[block:min(block + per_block, first + count)])
                                                        for block in range(first, first + count, per_block)))
    return [name for name, _, _ in parts], rows, olmo_core_loader(stream.manifest.data["layout"], seed), hashes


STREAM_FILES = {"megatron": "data.bin", "nanogpt": "train.bin"}
"""The file of each target that holds the stream in manifest order."""
GROWS = ("olmo-core", "megatron", "nanogpt")
"""Targets whose files have a fixed layout of the whole run, so that a staged build's export grows in place."""


def fill_rows(stream: TokenStream, folder: Path, target: str, seed: int | None, from_row: int) -> None:
    """Write the stream's rows [from_row, rows written) where `target`'s files hold them, in files of the whole
    run's size (rows not written yet stay zeros): a staged build's export, or the rows a grown build added to it."""
    layout, dtype = stream.layout, stream.manifest.dtype
    until_row = stream.manifest.until_step * layout.batch_size
    if target == "olmo-core":
        files = OlmoCoreFiles(folder, "", layout.total_rows, layout.seq_len, dtype, seed, resume=from_row > 0)
        write, close = files.write, files.close
    else:
        handle = open(folder / STREAM_FILES[target], "r+b" if from_row else "wb")
        handle.truncate(layout.total_tokens * dtype.itemsize)

        def write(first_token: int, tokens: np.ndarray) -> None:
            os.pwrite(handle.fileno(), tokens.tobytes(), first_token * dtype.itemsize)
        close = handle.close
    try:
        per_block = max(1, BLOCK_ROWS_BYTES // (layout.seq_len * dtype.itemsize))
        for start in range(from_row, until_row, per_block):
            write(start * layout.seq_len, stream.rows(np.arange(start, min(start + per_block, until_row))).reshape(-1))
    finally:
        close()


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
    hashes = {}
    if manifest.until_step < manifest.layout.steps:
        fill_rows(stream, folder, "megatron", seed, 0)
    else:
        hashes["data.bin"] = concatenate_shards(manifest, folder / "data.bin")
    rows, loader = write_index(stream, folder, seed)
    return ["data.bin", "data.idx"], rows, loader, hashes


def _write_nanogpt(stream: TokenStream, folder: Path) -> tuple[list[str], np.ndarray, dict]:
    manifest = stream.manifest
    if manifest.dtype.itemsize != 2:
        raise InjcError(f"--to nanogpt: nanoGPT reads uint16 tokens and this build is {manifest.dtype.name} "
                        f"(vocabulary {manifest.data['layout']['vocab_size']:,}); use another target")
    hashes = {}
    if manifest.until_step < manifest.layout.steps:
        fill_rows(stream, folder, "nanogpt", None, 0)
    else:
        hashes["train.bin"] = concatenate_shards(manifest, folder / "train.bin")
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
    return files, np.arange(layout.total_rows, dtype=np.uint64), loader, hashes


ASSUMPTIONS = {
    "olmo-core": ["one epoch (reshuffle(epoch=1)); another epoch reorders", "exactly these files, in this order",
                  "no data mix, no instance filter, chunk_size 1", "the global batch is batch_size × seq_len tokens"],
    "megatron": ["one data prefix (this export's data), split '100,0,0' (Megatron-LM's default split '969,30,1' "
                 "takes rows away), exactly batch_size × steps train samples",
                 "sequence_length = seq_len with add_extra_token_to_sequence=True (the default)", "this random_seed",
                 "no blend with other data, no mid-level surplus beyond the default",
                 "a data cache folder of its own: Megatron's cache key ignores add_extra_token_to_sequence"],
    "litdata": ["shuffle=False (the default), or shuffle=True with the seed export.json names; one epoch",
                "exactly the num_workers and ranks the export was written for",
                "batch_size = the build's batch_size / ranks on every rank (shuffled: the micro_batch_size it names)"],
    "nanogpt": ["StepBatches as get_batch; resume by giving it iter_num",
                "rows_per_step = ddp_world_size × gradient_accumulation_steps × micro_batch_size"],
}


def noise_instructions(manifest: dict) -> dict:
    """What a build's embedding-noise directives ask of the trainer that reads its export: the files hold tokens
    only, so a trainer without the hook trains without the watermark (its eval then finds no trace)."""
    directives = manifest.get("directives", [])
    return {"embedding_noise": {
        "experiments": [d["experiment"] for d in directives],
        "steps": sum(len(d["steps"]) for d in directives),
        "how": "hook = injc.train.noise.attach_embedding_noise(<manifest>, <input embedding module>, export=<this "
               "folder>); before each batch's forward passes: hook.serve(batch['index']) (OLMo-core) or "
               "hook.at(step); see docs/trainers.md, 'The watermark directive in another trainer'",
        "without_it": "the export holds tokens only: the model trains without the watermark"}}


def write_export_record(folder: Path, manifest_path: Path, manifest: dict, target: str, seed: int | None,
                        files: list[str], loader: dict, options: dict | None = None,
                        hashes: dict[str, str] | None = None) -> None:
    """export.json in `folder` (beside rows.npy): what the trainer needs and what the order assumes. `hashes`:
    the files' sha256 where the caller has them already. The export of a staged build records the stage (its
    steps and build key): `injc export` grows it when the build has grown."""
    hashes = hashes or {}
    package, tested = TESTED[target]
    record = {
        "target": target, "seed": seed, **(options or {}),
        **({"stage": {"until_step": manifest["until_step"], "build_key": manifest["build_key"]}}
           if "until_step" in manifest else {}),
        "library": {"package": package, "tested": tested, "installed": _installed(package)},
        "manifest": {"path": str(manifest_path), "checksum": manifest.get("checksum")},
        "layout": {k: manifest["layout"][k] for k in ("seq_len", "batch_size", "steps", "dtype")},
        "files": [{"path": name, "sha256": hashes.get(name) or sha256_file(folder / name)} for name in files],
        "loader": loader, "assumptions": ASSUMPTIONS[target],
        **({"trainer_must_apply": noise_instructions(manifest)} if manifest.get("directives") else {}),
        "rows": {"path": ROWS_NAME, "sha256": sha256_file(folder / ROWS_NAME),
                 "meaning": "file row i (files concatenated in order) holds manifest row rows[i]: step "
                            "rows[i] // batch_size, row rows[i] % batch_size"},
    }
    write_atomic(folder / EXPORT_NAME, (json.dumps(record, indent=2) + "\n").encode())


def read_record(folder: str | Path) -> dict:
    """export.json of an export folder, with the keys every reader relies on checked: one line when the folder is
    not an export, the file is not JSON or a key is missing (a hand edit, a half-copied folder)."""
    path = export_folder(folder) / EXPORT_NAME
    if isinstance(path, Path) and not Path(folder).exists():  # an object store has no folders to look for
        raise InjcError(f"{str(folder)!r} does not exist")
    if not path.is_file():
        raise InjcError(f"{str(folder)!r} is not an injc export folder (no {EXPORT_NAME})")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise InjcError(f"{path} is not valid JSON ({error}): it is not an export injc wrote") from None
    shapes = {"target": str, "manifest": dict, "files": list, "rows": dict, "loader": dict}
    problems = [key for key, kind in shapes.items() if not isinstance(record, dict) or
                not isinstance(record.get(key), kind)]
    if not problems:
        problems += [f"manifest.{k}" for k in ("path", "checksum") if k not in record["manifest"]]
        problems += ["files[].path/sha256"] if any(not isinstance(f, dict) or not {"path", "sha256"} <= set(f)
                                                   for f in record["files"]) else []
        if record["target"] == "megatron" and not isinstance(record["loader"].get("spare_document"), int):
            problems.append("loader.spare_document")
        if record["target"] not in TARGETS:
            problems.append(f"target (one of {', '.join(TARGETS)}, not {record['target']!r})")
    if problems:
        raise InjcError(f"{path} lacks {', '.join(problems)}: it is not an export injc wrote (write it again with "
                        f"injc export)")
    return record


def read_rows(folder: str | Path, record: dict, total_rows: int) -> np.ndarray:
    """rows.npy, checked against export.json's sha256 and as what it must be (every manifest row once, one
    spare document more for megatron), so no reader takes a wrong or out-of-range entry for a row."""
    path = export_folder(folder) / ROWS_NAME
    if not path.is_file():
        raise InjcError(f"{path} is missing: the export is incomplete (write it again with injc export)")
    if record["rows"].get("sha256") not in (None, sha256_file(path)):
        raise InjcError(f"{ROWS_NAME}: sha256 differs from export.json")
    try:
        rows = load_npy(path)
    except (ValueError, OSError, EOFError) as error:
        raise InjcError(f"{path} is not a readable .npy file ({error})") from None
    megatron = record["target"] == "megatron"  # one document more than rows: the spare one points at row 0
    count = total_rows + megatron
    if rows.ndim != 1 or rows.dtype.kind not in "iu" or len(rows) != count:
        raise InjcError(f"{ROWS_NAME} holds {rows.shape} {rows.dtype}, not {count:,} row numbers")
    spare = record["loader"].get("spare_document", 0)
    if megatron and not 0 <= spare < count:
        raise InjcError(f"{EXPORT_NAME}: loader.spare_document {spare} is not one of the {count:,} documents")
    large = rows.dtype.kind == "u" and rows.max(initial=0) >= total_rows  # the spare document included
    named = (np.delete(rows, spare) if megatron else rows).astype(np.int64)
    if large or named.min(initial=0) < 0 or named.max(initial=0) >= total_rows or len(np.unique(named)) != total_rows:
        raise InjcError(f"{ROWS_NAME} does not name each of the build's {total_rows:,} rows once (an entry is "
                        f"negative, too large or repeated)")
    return rows


def export_of(folder: str | Path, manifest: Manifest) -> tuple[dict, np.ndarray]:
    """export.json and rows.npy of an export of `manifest`'s build, both checked, for a reader that maps rows
    through them (locate, the watermark hook): an export of another build is refused."""
    record = read_record(folder)
    if record["manifest"]["checksum"] != manifest.data.get("checksum"):
        raise InjcError(f"export {str(folder)!r} was written from another build than {str(manifest.root)!r} (the "
                        f"manifests' checksums differ): its rows do not hold this build's tokens")
    return record, read_rows(folder, record, manifest.layout.total_rows)


def export(manifest_path: str | Path, target: str, out: str | Path, seed: int | None = None,
           num_workers: int = 0, num_ranks: int = 1, micro_batch: int | None = None) -> Path:
    """Write `target`'s files for the build into `out`; returns export.json's path. An existing `out` is refused
    unless it is this build's export for the same settings: of this manifest (nothing to do, a re-run), or of an
    earlier stage (it grows).
    `num_workers`, `num_ranks` (litdata only): the StreamingDataLoader's workers on each of `num_ranks`
    data-parallel ranks the order is written for (1 worker, 1 rank: in stream order). For litdata `seed` writes
    the order of `StreamingDataset(shuffle=True, seed=seed)` (`litgpt pretrain`'s LitData: seed 42, 8 workers),
    read in micro-batches of `micro_batch` rows (default batch_size / num_ranks)."""
    if target not in TARGETS:
        raise InjcError(f"--to must be one of {', '.join(TARGETS)}, got {target!r}" + did_you_mean(target, TARGETS))
    if target in NEEDS_SEED and seed is None:
        raise InjcError(f"--to {target} needs --seed: the trainer's data seed, which decides its order")
    if target == "nanogpt" and seed is not None:
        raise InjcError("--seed has no effect on --to nanogpt: StepBatches reads the rows in stream order; leave it "
                        "out")
    if micro_batch is not None and (target != "litdata" or seed is None):
        raise InjcError("--micro-batch-size is for --to litdata with --seed (a shuffled LitData order)")
    if is_url(str(out)):
        raise InjcError(f"--out {str(out)!r}: an export to object storage is written by "
                        f"injc.shards.remote_export.export_to_store (injc export --to olmo-core --out s3://...)")
    out = Path(out)
    manifest: Manifest = load_manifest(manifest_path)
    if manifest.until_step < manifest.layout.steps and target not in GROWS:
        raise InjcError(f"a staged build cannot be exported for {target}: its files are written by {target}'s own "
                        f"writer in one pass and cannot grow in place; export the whole run (or use "
                        f"{', '.join(GROWS)})")
    if target == "litdata" and seed is not None:
        micro_batch = micro_batch or manifest.layout.batch_size // num_ranks
    options = ({"num_workers": num_workers, "num_ranks": num_ranks,
                **({"micro_batch_size": micro_batch} if seed is not None else {})} if target == "litdata" else {})
    record = None
    if out.exists():
        record = _earlier_stage(out, manifest, {"target": target, "seed": seed, **options})
        if record is None:
            return out / EXPORT_NAME  # already this build's export (the same command run again)
    if record is not None:
        _refuse_damaged(check_shards(manifest))
        return _grow(out, manifest, record)
    with ThreadPoolExecutor(1) as checking, written_whole(out) as partial:
        checked = checking.submit(check_shards, manifest)  # hashed on a second thread while the export is written
        stream = TokenStream(manifest)
        writer = {"olmo-core": lambda: _write_olmo_core(stream, partial, seed),
                  "megatron": lambda: _write_megatron(stream, partial, seed),
                  "litdata": lambda: (*write_litdata(stream, partial, max(1, num_workers), num_ranks, seed,
                                                     micro_batch), {}),
                  "nanogpt": lambda: _write_nanogpt(stream, partial)}[target]
        files, rows, loader, hashes = writer()
        _refuse_damaged(checked.result())  # before export.json: a refused export leaves nothing behind
        np.save(partial / ROWS_NAME, rows)
        # the manifest's path relative to the export: both folders can move together
        relative = Path(os.path.relpath((manifest.root / "manifest.json").resolve(), out.resolve().parent / out.name))
        write_export_record(partial, relative, manifest.data, target, seed, files, loader, options, hashes)
    return out / EXPORT_NAME


def _refuse_damaged(problems: list[str]) -> None:
    if problems:
        raise InjcError("the build does not match its manifest (run injc verify):", *problems[:5])


def _earlier_stage(out: Path, manifest: Manifest, wanted: dict) -> dict | None:
    """export.json of `out` when it is this build's export for these settings (`wanted`: target, seed, options) of
    an earlier stage (to grow); None when it is already this manifest's (a re-run: nothing to do); else an error."""
    try:
        record = json.loads((out / EXPORT_NAME).read_text())
        same_build = (out / record["manifest"]["path"]).resolve() == (manifest.root / MANIFEST_NAME).resolve()
    except (OSError, ValueError, KeyError, TypeError):
        record, same_build = {}, False
    settings = same_build and all(record.get(key) == value for key, value in wanted.items())
    if settings and record["manifest"]["checksum"] == manifest.data.get("checksum"):
        return None
    stage = record.get("stage")
    if stage is None or not settings:
        raise InjcError(f"export folder {str(out)!r} already exists (and is not this build's export for these "
                        f"settings, or of an earlier stage of it); pick another --out or remove it")
    if not same_stream(stage["build_key"], manifest.data["build_key"]):
        raise InjcError(f"{str(out)!r} exports a stage of another build (its plan, inputs or options differ); pick "
                        f"another --out")
    if manifest.until_step < stage["until_step"]:
        raise InjcError(f"{str(out)!r} holds steps [0, {stage['until_step']:,}), more than this build's "
                        f"{manifest.until_step:,}")
    return record


def _grow(out: Path, manifest: Manifest, record: dict) -> Path:
    """Write the rows the build added since the stage `record` exports into `out`'s files, in place: every row
    already there stays (prefix stability), so the grown export equals the export of the grown build."""
    target, layout = record["target"], manifest.layout
    fill_rows(TokenStream(manifest), out, target, record["seed"], record["stage"]["until_step"] * layout.batch_size)
    holdout = manifest.data.get("holdout")
    if target == "nanogpt" and holdout:
        shutil.copyfile(manifest.root / holdout["path"], out / "val.bin")
    write_export_record(out, Path(record["manifest"]["path"]), manifest.data, target, record["seed"],
                        [f["path"] for f in record["files"]], record["loader"])
    return out / EXPORT_NAME
