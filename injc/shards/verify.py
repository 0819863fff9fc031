"""`injc verify manifest.json`: re-read every byte and check the build against its manifest and the contract.

Checks: the manifest's own checksum; each shard's size and sha256; shards tile the run; the insertions table's
sha256 and row count; `offset = step*B*L + row*L + col`; `length = len(tokens)`; intervals sorted and disjoint;
random/range copies inside one instance and EOS-wrapped (range copies inside their steps); per-experiment counts;
and, for injected builds, that the shards hold exactly each row's tokens at [offset, offset+length).
"""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from injc.errors import ManifestError
from injc.shards.files import sha256_file
from injc.shards.manifest import Manifest, content_checksum, load_manifest
from injc.shards.stream import TokenStream
from injc.shards.writer import ramp_indices
from injc.storage import describe, is_url, remote_path
from injc.storage import identity as remote_identity

MAX_REPORTED = 20


def check_shards(manifest: Manifest) -> list[str]:
    """The shard files (and row map) against the manifest: tiling, sizes, sha256 ([] when they match)."""
    problems, expected_first = [], 0
    for shard in manifest.shards:
        path = manifest.root / shard["path"]
        if shard["first_token"] != expected_first:
            problems.append(f"shard {shard['path']}: starts at token {shard['first_token']:,}, expected "
                            f"{expected_first:,}")
        expected_first = shard["first_token"] + shard["num_tokens"]
        if not path.is_file():
            problems.append(f"shard {shard['path']}: missing")
            continue
        size, expected = path.stat().st_size, shard["num_tokens"] * manifest.dtype.itemsize
        if size != expected:
            problems.append(f"shard {shard['path']}: {size:,} bytes, expected {expected:,}")
        elif sha256_file(path) != shard["sha256"]:
            problems.append(f"shard {shard['path']}: sha256 differs from the manifest")
    order = manifest.row_order
    needed = manifest.written_tokens if order is None else manifest.layout.total_tokens  # full-size files
    if expected_first != needed:
        problems.append(f"shards hold {expected_first:,} tokens, the manifest needs {needed:,}")
    if order is not None and (not (manifest.root / order["path"]).is_file()
                              or sha256_file(manifest.root / order["path"]) != order["sha256"]):
        problems.append(f"row map {order['path']}: missing or its sha256 differs from the manifest")
    return problems


def _check_rows(manifest: Manifest, stream: TokenStream | None) -> list[str]:
    layout, problems, eos = manifest.layout, [], manifest.data["layout"]["eos_id"]
    modes = {e["name"]: e["placement"] for e in manifest.experiments}
    counts = dict.fromkeys(modes, 0)
    table = pq.ParquetFile(manifest.insertions_path)
    previous_end = 0
    for group in range(table.num_row_groups):
        batch = table.read_row_group(group)
        names = batch.column("experiment").to_numpy(zero_copy_only=False)
        offset, length = (batch.column(c).to_numpy() for c in ("offset", "length"))
        step, row, col, item = (batch.column(c).to_numpy() for c in ("step", "row", "col", "item"))
        tokens = batch.column("tokens").combine_chunks()
        list_offsets, values = tokens.offsets.to_numpy(), tokens.values.to_numpy()
        nonempty = list_offsets[1:] > list_offsets[:-1]
        wrapped = np.zeros(len(offset), dtype=bool)
        wrapped[nonempty] = ((values[list_offsets[:-1][nonempty]] == eos)
                             & (values[list_offsets[1:][nonempty] - 1] == eos))
        for name, count in zip(*np.unique(names, return_counts=True)):
            if name not in counts:
                problems.append(f"insertions: experiment {name!r} is not in the manifest")
                continue
            counts[name] += int(count)
        outside = (row >= layout.batch_size) | (col >= layout.seq_len)
        if (offset != layout.offset(step, row, col)).any() or outside.any():
            problems.append(f"insertions row group {group}: step/row/col disagree with offset")
        if (np.diff(list_offsets) != length).any():
            problems.append(f"insertions row group {group}: length differs from the number of tokens")
        ends = offset + length
        if len(offset) and (offset[0] < previous_end or (offset[1:] < ends[:-1]).any()):
            problems.append(f"insertions row group {group}: intervals overlap or are not sorted by offset")
        previous_end = ends[-1] if len(ends) else previous_end
        for name in np.unique(names):
            placement = modes.get(name)
            if placement is None or placement["mode"] == "explicit":
                continue
            mine = names == name
            if (col[mine] + length[mine] > layout.seq_len).any():
                problems.append(f"insertions: experiment {name!r} has copies crossing an instance boundary")
            if not (wrapped[mine] | (length[mine] == layout.seq_len)).all():
                problems.append(f"insertions: experiment {name!r} has copies not wrapped in EOS")
            end_step = placement["end_step"] or layout.steps
            if placement["mode"] == "range" and ((step[mine] < placement["start_step"])
                                                 | (step[mine] >= end_step)).any():
                problems.append(f"insertions: experiment {name!r} has copies outside steps "
                                f"[{placement['start_step']}, {end_step})")
        if stream is not None and len(offset):
            written = stream.gather(ramp_indices(offset, length))
            differs = written != values
            if differs.any():
                copy = np.searchsorted(np.cumsum(length), np.flatnonzero(differs)[0], side="right")
                problems.append(f"shards differ from insertions: experiment {names[copy]!r} item {item[copy]} at "
                                f"offset {offset[copy]:,} ({int(differs.sum()):,} tokens differ in row group {group})")
        if len(problems) >= MAX_REPORTED:
            break
    for entry in manifest.experiments:
        if counts.get(entry["name"]) != entry["insertions"]:
            problems.append(f"experiment {entry['name']!r}: {counts.get(entry['name'])} rows in the insertions "
                            f"table, the manifest says {entry['insertions']}")
    return problems


def verify(manifest_path: str | Path) -> list[str]:
    """Every problem found (empty when the build is intact). Reads every byte of the shards and the table."""
    manifest = load_manifest(manifest_path)
    problems = []
    if manifest.data.get("checksum") != content_checksum(manifest.data):
        problems.append("manifest.json was changed after the build (its checksum differs)")
    shard_problems = check_shards(manifest)
    problems += shard_problems
    path = manifest.insertions_path
    if not path.is_file():
        return problems + [f"insertions table {manifest.data['insertions']['path']}: missing"]
    if sha256_file(path) != manifest.data["insertions"]["sha256"]:
        return problems + [f"insertions table {manifest.data['insertions']['path']}: sha256 differs from the manifest"]
    rows = pq.ParquetFile(path).metadata.num_rows
    if rows != manifest.data["insertions"]["count"]:
        expected = manifest.data["insertions"]["count"]
        problems.append(f"insertions table has {rows:,} rows, the manifest says {expected:,}")
    side_files = [("payload items", manifest.data.get("items")), ("reserved tail", manifest.data.get("holdout"))]
    side_files += [("eval records", entry.get("eval_records")) for entry in manifest.experiments]
    for label, reference in side_files:
        if reference and (not (manifest.root / reference["path"]).is_file()
                          or sha256_file(manifest.root / reference["path"]) != reference["sha256"]):
            problems.append(f"{label} {reference['path']}: missing or sha256 differs from the manifest")
    stream = None
    if not shard_problems and manifest.variant == "injected":
        try:
            stream = TokenStream(manifest)
        except ManifestError as error:
            problems.extend(error.problems)
    return (problems + _check_rows(manifest, stream))[:MAX_REPORTED]


def check_inputs(manifest_path: str | Path) -> list[str]:
    """The build's corpus files, read again where they are (on disk or in object storage), against the manifest's
    record of each: size, the store's ETag and version where recorded, and the sha256 of every byte."""
    import tomllib

    manifest = load_manifest(manifest_path)
    corpus = manifest.data["corpus"]
    if corpus.get("format") == "hf":
        return ["--inputs: a Hugging Face dataset's files are checked by datasets' own fingerprint, not re-read here"]
    options = tomllib.loads(manifest.data["plan"]["toml"]).get("corpus", {}).get("storage_options", {})
    problems = []
    for record in corpus["files"]:
        where = record["path"]
        try:
            if is_url(where):
                path = remote_path(where, options)
                found = remote_identity(path, fresh=True)
            else:
                path = Path(where)
                found = {"size": path.stat().st_size}
            differing = [key for key in ("size", "etag", "versionid")
                         if key in record and found.get(key) != record[key]]
            if differing:
                problems.append(f"corpus file {where}: {' and '.join(differing)} "
                                f"{'differ' if len(differing) > 1 else 'differs'} from the manifest")
            elif sha256_file(path) != record["sha256"]:
                problems.append(f"corpus file {where}: sha256 differs from the manifest")
        except Exception as error:  # OSError, InjcError, or a store client's own (botocore's, aiohttp's)
            problems.append(f"corpus file {where}: cannot be read ({describe(error)})")
    return problems
