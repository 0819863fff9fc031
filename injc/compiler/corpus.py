"""The base stream: corpus files read in order, tokenized, documents joined with EOS.

Readers yield batches of document texts (jsonl, parquet, text) straight from pyarrow / zstandard / the file
system, streaming with bounded memory. `base_stream` tokenizes each batch with `encode_batch_fast` (the Rust
tokenizer's own thread pool) and yields token chunks: every document followed by one EOS. Format "tokens"
files are already a stream and are passed through as they are.
"""

import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import zstandard

from injc.compiler.plan import CorpusConfig
from injc.compiler.tokenizer import LoadedTokenizer
from injc.errors import InputError

BATCH_CHARS = 1 << 22
"""Characters of text per tokenizer call: large enough to keep every tokenizer thread busy, small in memory."""
TOKEN_CHUNK = 1 << 24
"""Tokens per chunk read from format = "tokens" files."""


def _open_lines(path: Path) -> io.BufferedReader:
    raw = open(path, "rb")
    if path.name.endswith(".zst"):
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), 1 << 20)
    if path.name.endswith(".gz"):
        return io.BufferedReader(gzip.GzipFile(fileobj=raw), 1 << 20)
    return io.BufferedReader(raw, 1 << 20)


def _jsonl_texts(path: Path, field: str) -> Iterator[str]:
    try:
        with _open_lines(path) as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as error:
                    raise InputError(f"corpus file {str(path)!r} line {number} is not valid JSON: "
                                     f"{getattr(error, 'msg', error)}") from None
                text = record.get(field) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise InputError(f"corpus file {str(path)!r} line {number} has no string field {field!r}")
                yield text
    except (OSError, zstandard.ZstdError, EOFError) as error:
        raise InputError(f"corpus file {str(path)!r} cannot be read: {error}") from None


def _parquet_texts(path: Path, field: str) -> Iterator[str]:
    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError for non-parquet files
        raise InputError(f"corpus file {str(path)!r} is not a parquet file: {error}") from None
    if field not in parquet.schema_arrow.names:
        raise InputError(f"corpus file {str(path)!r} has no column {field!r} "
                         f"(columns: {', '.join(parquet.schema_arrow.names)})")
    for batch in parquet.iter_batches(columns=[field], batch_size=4096):
        for text in batch.column(0).to_pylist():
            if not isinstance(text, str):
                raise InputError(f"corpus file {str(path)!r} column {field!r} holds a non-string value")
            yield text


def _file_text(path: Path) -> Iterator[str]:
    try:
        yield path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"corpus file {str(path)!r} is not valid UTF-8") from None


def iter_documents(corpus: CorpusConfig) -> Iterator[str]:
    """Every document text of the corpus, files in plan order."""
    for path in corpus.files:
        if corpus.format == "jsonl":
            yield from _jsonl_texts(path, corpus.text_field)
        elif corpus.format == "parquet":
            yield from _parquet_texts(path, corpus.text_field)
        else:
            yield from _file_text(path)


def _text_batches(corpus: CorpusConfig) -> Iterator[list[str]]:
    batch, chars = [], 0
    for text in iter_documents(corpus):
        batch.append(text)
        chars += len(text)
        if chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _token_chunks(corpus: CorpusConfig, vocab_size: int) -> Iterator[np.ndarray]:
    dtype = np.dtype(corpus.dtype).newbyteorder("<")
    for path in corpus.files:
        size = path.stat().st_size
        if size % dtype.itemsize:
            raise InputError(f"corpus file {str(path)!r} has {size} bytes, not a whole number of "
                             f"{corpus.dtype} tokens")
        if size == 0:
            continue
        tokens = np.memmap(path, dtype=dtype, mode="r")
        for start in range(0, len(tokens), TOKEN_CHUNK):
            chunk = np.asarray(tokens[start:start + TOKEN_CHUNK])
            if chunk.max() >= vocab_size:
                bad = start + int(np.argmax(chunk >= vocab_size))
                raise InputError(f"corpus file {str(path)!r} token {bad:,} has id {int(tokens[bad])}, outside the "
                                 f"tokenizer's vocabulary [0, {vocab_size})")
            yield chunk


def base_stream(corpus: CorpusConfig, tokenizer: LoadedTokenizer) -> Iterator[np.ndarray]:
    """Token chunks of the base stream, in order: each document's ids followed by EOS."""
    if corpus.format == "tokens":
        yield from _token_chunks(corpus, tokenizer.vocab_size)
        return
    eos = np.array([tokenizer.eos_id], dtype=np.int64)
    for batch in _text_batches(corpus):
        encoded = tokenizer.encode_batch(batch)
        yield np.concatenate([part for ids in encoded for part in (ids, eos)]).astype(tokenizer.dtype)


def fingerprint_files(paths: tuple[Path, ...]) -> list[dict]:
    """Name, size and sha256 of each file: what the manifest records so a consumer can tell the inputs apart."""
    records = []
    for path in paths:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
        records.append({"path": str(path), "size": path.stat().st_size, "sha256": digest.hexdigest()})
    return records
