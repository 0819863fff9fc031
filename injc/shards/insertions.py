"""The insertions table: one parquet row per placed copy, exactly the tokens written, for audits and evals.

Columns (in this order): experiment (string), item, repetition, offset, length, step, row, col (int64),
tokens (list<int32>). Rows are sorted by offset and written in row groups, so tables of millions of copies
never sit in memory as Python objects.
"""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from injc.shards.layout import Layout
from injc.shards.writer import Overlay, ramp_indices

ROW_GROUP = 1 << 15

SCHEMA = pa.schema([
    ("experiment", pa.string()),
    ("item", pa.int64()),
    ("repetition", pa.int64()),
    ("offset", pa.int64()),
    ("length", pa.int64()),
    ("step", pa.int64()),
    ("row", pa.int64()),
    ("col", pa.int64()),
    ("tokens", pa.list_(pa.int32())),
])


def write_insertions(path: Path, layout: Layout, names: list[str], experiment: np.ndarray, item: np.ndarray,
                     repetition: np.ndarray, overlay: Overlay) -> None:
    """Write the table; `experiment` indexes `names`, the overlay gives offsets, lengths and tokens."""
    name_array = pa.array(names, type=pa.string())
    group = max(1, min(ROW_GROUP, (1 << 30) // layout.seq_len))  # keeps int32 list offsets in range
    with pq.ParquetWriter(path, SCHEMA, compression="zstd") as writer:
        for start in range(0, max(len(item), 1), group):
            rows = slice(start, start + group)
            offset, length = overlay.offset[rows], overlay.length[rows]
            step, row, col = layout.locate(offset)
            list_offsets = np.concatenate([[0], np.cumsum(length)]).astype(np.int32)
            values = overlay.pool[ramp_indices(overlay.source[rows], length)].astype(np.int32)
            columns = [
                name_array.take(pa.array(experiment[rows])),
                pa.array(item[rows], pa.int64()),
                pa.array(repetition[rows], pa.int64()),
                pa.array(offset, pa.int64()),
                pa.array(length, pa.int64()),
                pa.array(step, pa.int64()),
                pa.array(row, pa.int64()),
                pa.array(col, pa.int64()),
                pa.ListArray.from_arrays(pa.array(list_offsets), pa.array(values, pa.int32())),
            ]
            writer.write_table(pa.Table.from_arrays(columns, schema=SCHEMA))


ITEMS_SCHEMA = pa.schema([
    ("experiment", pa.string()),
    ("item", pa.int64()),
    ("copies", pa.int64()),
    ("tokens", pa.list_(pa.int32())),
])


def write_items(path: Path, names: list[str], items: list[list[np.ndarray]], copies: list[np.ndarray]) -> None:
    """items.parquet: every payload item of every experiment (controls with 0 copies too), tokens as written."""
    with pq.ParquetWriter(path, ITEMS_SCHEMA, compression="zstd") as writer:
        for name, experiment_items, experiment_copies in zip(names, items, copies):
            if not experiment_items:
                continue
            lengths = np.array([len(t) for t in experiment_items], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            writer.write_table(pa.Table.from_arrays([
                pa.array([name] * len(experiment_items), pa.string()),
                pa.array(np.arange(len(experiment_items)), pa.int64()),
                pa.array(np.asarray(experiment_copies, dtype=np.int64), pa.int64()),
                pa.ListArray.from_arrays(pa.array(offsets),
                                         pa.array(np.concatenate(experiment_items).astype(np.int32))),
            ], schema=ITEMS_SCHEMA))


def without_eos_wrappers(tokens: np.ndarray, eos_id: int) -> np.ndarray:
    """An item's own tokens: the leading and trailing EOS that wrap it as written removed."""
    start = 1 if len(tokens) and tokens[0] == eos_id else 0
    end = len(tokens) - 1 if len(tokens) > start and tokens[-1] == eos_id else len(tokens)
    return tokens[start:end]


def read_columns(path: Path, columns: list[str]) -> dict[str, np.ndarray]:
    """Columns of a Parquet table as numpy arrays, read from their Arrow buffers (string columns through their
    dictionary, as object arrays). pyarrow's own conversions (to_numpy, to_pylist, as_py) import pandas, about
    0.3 s of every `injc inspect` and `injc locate`; these columns hold no nulls."""
    table = pq.ParquetFile(path, read_dictionary=[c for c in columns if c == "experiment"]).read(columns=columns)
    return {name: _column_values(table.column(name)) for name in columns}


def _column_values(column) -> np.ndarray:
    parts = []
    for chunk in column.chunks:
        if hasattr(chunk, "dictionary"):
            parts.append(np.asarray(_strings(chunk.dictionary), dtype=object)[_numbers(chunk.indices)])
        else:
            parts.append(_numbers(chunk))
    return np.concatenate(parts) if parts else np.zeros(0)


def _numbers(array) -> np.ndarray:
    values = np.frombuffer(array.buffers()[1], dtype=np.dtype(str(array.type)), count=array.offset + len(array))
    return values[array.offset:]


def _strings(array) -> list[str]:
    """A (small) string array's values, from its offsets and data buffers."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32, count=array.offset + len(array) + 1)[array.offset:]
    data = array.buffers()[2].to_pybytes() if len(array) else b""
    return [data[start:end].decode("utf-8") for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


def read_items(path: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """experiment → [(copies, tokens)] in item order."""
    table = pq.ParquetFile(path, read_dictionary=["experiment"]).read(columns=["experiment", "copies", "tokens"])
    result: dict[str, list[tuple[int, np.ndarray]]] = {}
    names, copies = _column_values(table.column("experiment")), _column_values(table.column("copies"))
    tokens = table.column("tokens").combine_chunks()
    offsets, values = _numbers(tokens.offsets), _numbers(tokens.values)
    for row, name in enumerate(names.tolist()):
        result.setdefault(name, []).append((int(copies[row]), values[offsets[row]:offsets[row + 1]].astype(np.int64)))
    return result
