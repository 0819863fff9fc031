"""`injc locate MANIFEST (--text S | --tokens 1,2,3 | --experiment NAME [--item I])`: every occurrence of a token
sequence in the stream, inserted or natural, with its step, row and column (and, given an export folder, the
file and row a trainer reads it from).

The search is vectorized per block of the stream: positions holding the sequence's first token are found with
one comparison, then checked in full with a gather; blocks overlap by the sequence's length so that nothing on
a block boundary is missed. An occurrence is *inserted* when it lies inside a recorded insertion (the
insertions table says which experiment, item and repetition), *natural* otherwise.
"""

from pathlib import Path

import numpy as np

from injc.errors import InjcError, some_of
from injc.shards.exports import export_of
from injc.shards.insertions import read_columns, read_items, without_eos_wrappers
from injc.shards.layout import inverse_permutation
from injc.shards.manifest import Manifest, load_manifest
from injc.shards.stream import TokenStream
from injc.storage import folder

BLOCK_TOKENS = 1 << 26


def find_sequence(stream: TokenStream, sequence: np.ndarray) -> np.ndarray:
    """Sorted global offsets where `sequence` starts in the stream."""
    sequence = np.asarray(sequence, dtype=np.int64)
    if len(sequence) == 0:
        raise InjcError("the sequence to locate is empty")
    total, width, found = len(stream), len(sequence), []
    for start in range(0, total, BLOCK_TOKENS):
        block = stream.tokens(start, min(start + BLOCK_TOKENS + width - 1, total))
        candidates = np.flatnonzero(block[:len(block) - width + 1] == sequence[0])
        for low in range(0, len(candidates), 1 << 20):
            chunk = candidates[low:low + (1 << 20)]
            window = block[chunk[:, None] + np.arange(width)]
            found.append(start + chunk[(window == sequence).all(axis=1)])
    hits = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    return np.unique(hits)


def item_tokens(manifest: Manifest, experiment: str, item: int | None) -> list[tuple[int, np.ndarray]]:
    """(item index, its own tokens without EOS wrappers) of one or all items of an experiment."""
    items = read_items(manifest.root / manifest.data["items"]["path"])
    if experiment not in items:
        raise InjcError(f"the build has no experiment {experiment!r}; it has {', '.join(sorted(items))}")
    eos = manifest.data["layout"]["eos_id"]
    chosen = range(len(items[experiment])) if item is None else [item]
    if item is not None and not 0 <= item < len(items[experiment]):
        raise InjcError(f"experiment {experiment!r} has items 0 to {len(items[experiment]) - 1}, not {item}")
    return [(index, without_eos_wrappers(items[experiment][index][1], eos)) for index in chosen]


def token_ids(tokens: str, vocab_size: int) -> list[int]:
    """`--tokens 1,2,3` as ids: comma-separated integers in [0, vocab_size), none empty."""
    parts = [part.strip() for part in tokens.split(",")]
    if any(not part for part in parts):
        raise InjcError(f"--tokens {tokens!r} has an empty item: give comma-separated integers like 17,402,9")
    try:
        ids = [int(part) for part in parts]
    except ValueError:
        raise InjcError(f"--tokens expects comma-separated integers, got {tokens!r}") from None
    outside = [i for i in ids if not 0 <= i < vocab_size]
    if outside:
        raise InjcError(f"--tokens: {some_of(outside)} outside the build's vocabulary of ids 0 to {vocab_size - 1:,}")
    return ids


def text_forms(tokenizer, text: str) -> list[tuple[str, list[int]]]:
    """The token forms a text takes in the stream: as given and, mid-document, after a space (a byte-level BPE
    merges the space into the next word: " written" is another token than "written"). Both are searched."""
    forms = [text] if text.startswith(" ") else [text, " " + text]
    return [(form, tokenizer.encode(form, add_special_tokens=False).ids) for form in forms]


def _export_position(export, manifest: Manifest):
    """A function global row -> (file, row in file) for an export folder of this manifest's build."""
    record, rows = export_of(export, manifest)
    if record["target"] == "megatron":  # one document more than rows: the spare one is read by no sample
        documents = np.delete(np.arange(len(rows)), record["loader"]["spare_document"])
        file_row_of = np.empty(len(documents), dtype=np.int64)
        file_row_of[rows[documents].astype(np.int64)] = documents
    else:
        file_row_of = inverse_permutation(rows, rows.dtype)
    seq_len, itemsize = manifest.layout.seq_len, manifest.dtype.itemsize
    data_files = [f["path"] for f in record["files"] if f["path"].endswith((".npy", ".bin")) and
                  f["path"] != "val.bin"]
    counts = [(export / name).stat().st_size // (seq_len * itemsize) for name in data_files]
    if record["target"] == "litdata":  # one chunk per (step, rank): B / num_ranks items (rows) each
        per_chunk = manifest.layout.batch_size // record.get("num_ranks", 1)
        return lambda row: (f"litdata chunk {int(file_row_of[row]) // per_chunk}", int(file_row_of[row]))
    if record["target"] == "megatron":
        return lambda row: ("data.idx document", int(file_row_of[row]))
    bounds = np.cumsum([0] + counts)

    def position(row: int) -> tuple[str, int]:
        file_row = int(file_row_of[row])
        index = int(np.searchsorted(bounds, file_row, side="right")) - 1
        return data_files[index], file_row - int(bounds[index])

    return position


def locate(manifest: Manifest | str | Path, sequence, export: str | Path | None = None) -> list[dict]:
    """Every occurrence of `sequence` (token ids): offset, step, row, col, inserted or natural (with experiment,
    item, repetition), and the export file and row when `export` is given."""
    manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    stream = TokenStream(manifest)
    offsets = find_sequence(stream, sequence)
    table = read_columns(manifest.insertions_path, ["experiment", "item", "repetition", "offset", "length"])
    starts, lengths = table["offset"], table["length"]
    inside = np.searchsorted(starts, offsets, side="right") - 1
    layout = manifest.layout
    position = _export_position(folder(export), manifest) if export else None  # on disk or in object storage
    found = []
    for offset, index in zip(offsets.tolist(), inside.tolist()):
        step, row, col = (int(v) for v in layout.locate(offset))
        record = {"offset": offset, "step": step, "row": row, "col": col, "kind": "natural"}
        if index >= 0 and offset + len(sequence) <= starts[index] + lengths[index]:
            record.update(kind="inserted", experiment=str(table["experiment"][index]), item=int(table["item"][index]),
                          repetition=int(table["repetition"][index]))
        if position is not None:
            record["file"], record["file_row"] = position(offset // layout.seq_len)
        found.append(record)
    return found
