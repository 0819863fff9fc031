"""Corpus readers: files → document texts, in plan order, straight from pyarrow / zstandard / the file system
(a Hugging Face dataset through `datasets`: injc.compiler.hf_corpus). A corpus file may be an object in storage
(`injc.storage`): it is read in large ranged requests, never copied to local disk.

Two ways to read the same documents:
- `iter_documents` streams them in one process (the local build);
- `corpus_chunks` cuts the corpus into `Chunk`s of whole documents, in order, without parsing anything, and
  `chunk_texts` reads one chunk anywhere the file is visible (a Ray worker): an uncompressed JSONL file is cut
  into byte ranges at line ends (the worker reads its own range), a compressed one is decompressed here and its
  blocks of whole lines shipped, a parquet file is cut into row groups, a text file is one chunk. A chunk's
  texts are exactly the texts `iter_documents` yields for the same documents, so the streams are identical.
"""

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import zstandard

from injc.compiler.plan import CorpusConfig
from injc.errors import InputError
from injc.storage import READ_BLOCK, open_binary

CHUNK_BYTES = 1 << 22
"""Bytes of JSONL per chunk: about one local tokenizer batch (BATCH_CHARS characters)."""


def _open_lines(path: Path, block_size: int = READ_BLOCK) -> io.BufferedReader:
    raw = open_binary(path, block_size, digest=True)  # read whole, in order: its sha256 comes with it
    if path.name.endswith(".zst"):
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), 1 << 20)
    if path.name.endswith(".gz"):
        return io.BufferedReader(gzip.GzipFile(fileobj=raw), 1 << 20)
    return io.BufferedReader(raw, 1 << 20)


def _compressed(path: Path) -> bool:
    return path.name.endswith((".zst", ".gz"))


def _json_text(line: bytes, field: str, path: Path, number: int) -> str:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"corpus file {str(path)!r} line {number} is not valid JSON: "
                         f"{getattr(error, 'msg', error)}") from None
    text = record.get(field) if isinstance(record, dict) else None
    if not isinstance(text, str):
        raise InputError(f"corpus file {str(path)!r} line {number} has no string field {field!r}")
    return text


def _unreadable(path: Path, error: Exception) -> InputError:
    return InputError(f"corpus file {str(path)!r} cannot be read: {error}")


def _jsonl_texts(path: Path, field: str, skip: int) -> Iterator[str]:
    try:
        with _open_lines(path) as lines:
            number = 0
            for line in lines:
                number += 1
                if not line.strip():
                    continue
                if skip:
                    skip -= 1
                    continue
                yield _json_text(line, field, path, number)
    except (OSError, zstandard.ZstdError, EOFError) as error:
        raise _unreadable(path, error) from None


def _parquet_file(path: Path, field: str) -> pq.ParquetFile:
    try:
        parquet = pq.ParquetFile(path if isinstance(path, Path) else open_binary(path))
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError for non-parquet files
        raise InputError(f"corpus file {str(path)!r} is not a parquet file: {error}") from None
    if field not in parquet.schema_arrow.names:
        raise InputError(f"corpus file {str(path)!r} has no column {field!r} "
                         f"(columns: {', '.join(parquet.schema_arrow.names)})")
    return parquet


def _strings(values: list, path: Path, field: str) -> list[str]:
    if not all(isinstance(text, str) for text in values):
        raise InputError(f"corpus file {str(path)!r} column {field!r} holds a non-string value")
    return values


def _parquet_texts(path: Path, field: str, skip: int) -> Iterator[str]:
    for batch in _parquet_file(path, field).iter_batches(columns=[field], batch_size=4096):
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        yield from _strings(batch.column(0).to_pylist()[skip:], path, field)
        skip = 0


def _file_text(path: Path) -> str:
    with open_binary(path, digest=True) as raw:  # read whole, in order: its sha256 comes with it
        data = raw.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"corpus file {str(path)!r} is not valid UTF-8") from None


def iter_documents(corpus: CorpusConfig, start: tuple[int, int] = (0, 0)) -> Iterator[tuple[int, int, str]]:
    """(file index, document index, text) of every document, files in plan order, from document `start`."""
    first_file, first_document = start
    if corpus.format == "hf":
        from injc.compiler.hf_corpus import hf_documents  # datasets is imported only for such a corpus

        yield from hf_documents(corpus, start)
        return
    for index in range(first_file, len(corpus.files)):
        path, skip = corpus.files[index], first_document if index == first_file else 0
        if corpus.format == "jsonl":
            texts = _jsonl_texts(path, corpus.text_field, skip)
        elif corpus.format == "parquet":
            texts = _parquet_texts(path, corpus.text_field, skip)
        else:
            texts = iter([] if skip else [_file_text(path)])
        for document, text in enumerate(texts, start=skip):
            yield index, document, text


@dataclass(frozen=True)
class Chunk:
    """Whole documents of one corpus file, readable anywhere the file is: see the module docstring."""

    file: int
    """The file's index in the plan's corpus files."""
    path: Path
    begin: int = 0
    """Uncompressed JSONL: the range's first byte (a line start)."""
    end: int = 0
    """Uncompressed JSONL: one past the range's last byte (a line end or the file's end)."""
    data: bytes | None = None
    """Compressed JSONL: the block of whole lines, decompressed here."""
    first_line: int = 0
    """Compressed JSONL: the line number of the block's first line (uncompressed ranges count theirs on error)."""
    row_group: int = 0
    """Parquet: the row group."""
    skip: int = 0
    """Parquet: rows of the row group before the first document wanted (a resumed build); a `datasets` builder's
    data file: rows before the first document wanted. A saved Hugging Face dataset's chunk is rows [begin, end)."""


def _skip_lines(lines: io.BufferedReader, documents: int) -> int:
    """Read past `documents` non-blank lines; the number of lines read."""
    number = 0
    while documents:
        line = lines.readline()
        if not line:
            break
        number += 1
        documents -= bool(line.strip())
    return number


def _jsonl_chunks(index: int, path: Path, skip: int, chunk_bytes: int) -> Iterator[Chunk]:
    try:  # an uncompressed file is only scanned for line ends here: small blocks around each cut
        with _open_lines(path, READ_BLOCK if _compressed(path) else 1 << 16) as lines:
            line = _skip_lines(lines, skip) + 1
            if _compressed(path):
                while block := lines.read(chunk_bytes) + lines.readline():
                    yield Chunk(index, path, data=block, first_line=line)
                    line += block.count(b"\n")
                return
            begin, size = lines.tell(), path.stat().st_size
            while begin < size:
                lines.seek(begin + chunk_bytes)
                lines.readline()
                end = min(lines.tell(), size)
                yield Chunk(index, path, begin, end)
                begin = end
    except (OSError, zstandard.ZstdError, EOFError) as error:
        raise _unreadable(path, error) from None


def _parquet_chunks(index: int, path: Path, field: str, skip: int) -> Iterator[Chunk]:
    metadata = _parquet_file(path, field).metadata
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        if skip >= rows:
            skip -= rows
            continue
        yield Chunk(index, path, row_group=group, skip=skip)
        skip = 0


def corpus_chunks(corpus: CorpusConfig, start: tuple[int, int] = (0, 0),
                  chunk_bytes: int | None = None) -> Iterator[Chunk]:
    """The documents of `iter_documents(corpus, start)` as chunks, in order."""
    first_file, first_document = start
    if corpus.format == "hf" and corpus.builder is None:
        from injc.compiler.hf_corpus import ROWS_PER_CHUNK, saved_rows

        total = saved_rows(corpus)
        for begin in range(first_document, total, ROWS_PER_CHUNK):
            yield Chunk(0, corpus.dataset, begin, min(begin + ROWS_PER_CHUNK, total))
        return
    for index in range(first_file, len(corpus.files)):
        path, skip = corpus.files[index], first_document if index == first_file else 0
        if corpus.format == "jsonl":
            yield from _jsonl_chunks(index, path, skip, chunk_bytes or CHUNK_BYTES)
        elif corpus.format == "parquet":
            yield from _parquet_chunks(index, path, corpus.text_field, skip)
        elif corpus.format == "hf":
            yield Chunk(index, path, skip=skip)
        elif not skip:
            yield Chunk(index, path)


def _line_number(path: Path, offset: int) -> int:
    """The number of the line starting at byte `offset` of an uncompressed file (only read to name an error)."""
    count = 0
    with open_binary(path) as raw:
        while offset > 0:
            block = raw.read(min(offset, 1 << 24))
            count, offset = count + block.count(b"\n"), offset - len(block)
    return count + 1


def _block_texts(block: bytes, field: str, path: Path, first_line: int | None, begin: int) -> list[str]:
    texts = []
    for number, line in enumerate(io.BytesIO(block)):  # lines as a file gives them: ends kept, as json saw them
        if line.strip():
            try:
                texts.append(_json_text(line, field, path, (first_line or 1) + number))
            except InputError:
                if first_line is None:  # an uncompressed range: count the lines before it now, then name the line
                    return _block_texts(block, field, path, _line_number(path, begin), begin)
                raise
    return texts


def chunk_texts(chunk: Chunk, corpus: CorpusConfig) -> list[str]:
    """The texts of a chunk's documents, in order (read where the chunk is handled)."""
    if corpus.format == "hf":
        from injc.compiler.hf_corpus import builder_texts, saved_texts

        if corpus.builder is None:
            return saved_texts(corpus, chunk.begin, chunk.end)
        return list(builder_texts(corpus, chunk.file, chunk.skip))
    if corpus.format == "parquet":
        field = corpus.text_field
        table = _parquet_file(chunk.path, field).read_row_group(chunk.row_group, columns=[field])
        return _strings(table.column(0).to_pylist()[chunk.skip:], chunk.path, field)
    if corpus.format != "jsonl":
        return [_file_text(chunk.path)]
    if chunk.data is not None:
        return _block_texts(chunk.data, corpus.text_field, chunk.path, chunk.first_line, 0)
    try:
        with open_binary(chunk.path, max(1, chunk.end - chunk.begin)) as raw:  # one ranged read of the chunk
            raw.seek(chunk.begin)
            block = raw.read(chunk.end - chunk.begin)
    except OSError as error:
        raise _unreadable(chunk.path, error) from None
    return _block_texts(block, corpus.text_field, chunk.path, None, chunk.begin)
