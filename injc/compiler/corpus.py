"""The base stream: corpus files read in order, tokenized, documents joined with EOS.

The readers (injc.compiler.readers) yield document texts (jsonl, parquet, text), streaming with bounded memory.
`base_stream` tokenizes them in batches with `encode_batch_fast` (the Rust tokenizer's own thread pool), or in
worker processes, or reads and tokenizes them on Ray workers chunk by chunk, and yields token chunks: every
document followed by one EOS. Format "tokens" files are already a stream and are passed through as they are.
Every chunk comes with a cursor function, so a build killed midway resumes reading exactly where its last
finished shard ended, without re-tokenizing.
"""

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from injc.compiler.plan import CorpusConfig
from injc.compiler.readers import Chunk, corpus_chunks, iter_documents
from injc.compiler.workers import RayExecutor, encode_in_processes, read_on_ray
from injc.errors import InputError, counted
from injc.shards.files import input_sha256
from injc.storage import READ_BLOCK, STORE_REQUESTS, listed_identities, open_binary, read_pieces, same_object
from injc.storage import identity as remote_identity
from injc.tokenizer import LoadedTokenizer

BATCH_CHARS = 1 << 22
"""Characters of text per tokenizer call: large enough to keep every tokenizer thread busy, small in memory."""
TOKEN_CHUNK = 1 << 24
"""Tokens per chunk read from format = "tokens" files."""
TOKEN_REQUESTS = 8
"""Ranged requests in flight at once when a token corpus is read from object storage (each READ_BLOCK bytes)."""
TOKEN_SAMPLE = 1 << 20
"""Tokens read from the start of each format = "tokens" file to catch a wrong dtype before the build starts."""


def _text_batches(corpus: CorpusConfig, start: tuple[int, int]) -> Iterator[tuple[list, list[str]]]:
    keys, batch, chars = [], [], 0
    for file, document, text in iter_documents(corpus, start):
        keys.append((file, document))
        batch.append(text)
        chars += len(text)
        if chars >= BATCH_CHARS:
            yield keys, batch
            keys, batch, chars = [], [], 0
    if batch:
        yield keys, batch


def _dtype_hint(path: Path, declared: str, vocab_size: int) -> str:
    """'; it looks like uint16' when reading the file with the other dtype gives plausible ids, else ''."""
    other = "uint32" if declared == "uint16" else "uint16"
    if path.stat().st_size % np.dtype(other).itemsize:
        return ""
    sample = _first_tokens(path, np.dtype(other).newbyteorder("<"))
    if len(sample) and int(sample.max()) < vocab_size and not _looks_like_wide_ids(sample):
        return f"; it reads as plausible {other} ids: is dtype = \"{other}\"?"
    return ""


def _looks_like_wide_ids(ids: np.ndarray) -> bool:
    """uint32 ids below 65,536 read as uint16: every second value (the high halves) is 0, the others mostly not."""
    if len(ids) < 64:
        return False
    high, low = ids[1::2], ids[0::2]
    return bool((high == 0).mean() > 0.99 and (low != 0).mean() > 0.5)


def check_token_file(path: Path, declared: str, vocab_size: int, first: bytes | None = None) -> None:
    """Refuse the usual dtype mistakes of a format = "tokens" file, naming the likely dtype.

    Checks the size (a whole number of tokens), the first TOKEN_SAMPLE ids (read here unless the file's first bytes
    are given as `first`) against the vocabulary, and the every-other-zero pattern of little-endian uint32 ids read
    as uint16. The build checks every id as it goes.
    """
    dtype = np.dtype(declared).newbyteorder("<")
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise InputError(f"corpus file {str(path)!r} has {size:,} bytes, not a whole number of {declared} tokens "
                         f"({dtype.itemsize} bytes each)" + _dtype_hint(path, declared, vocab_size))
    sample = (_first_tokens(path, dtype) if first is None
              else np.frombuffer(first[:TOKEN_SAMPLE * dtype.itemsize], dtype=dtype))
    if declared == "uint16" and _looks_like_wide_ids(sample):
        raise InputError(f"corpus file {str(path)!r} looks like uint32 tokens read as uint16 (every second "
                         f"uint16 value is 0): is dtype = \"uint32\"?")
    if len(sample) and int(sample.max()) >= vocab_size:
        _outside_vocabulary(path, sample, 0, vocab_size, declared)


def _first_tokens(path, dtype: np.dtype) -> np.ndarray:
    """The first TOKEN_SAMPLE ids of a token file (on disk, or one ranged read of an object in storage)."""
    if isinstance(path, Path):
        return np.fromfile(path, dtype=dtype, count=TOKEN_SAMPLE)
    with open_binary(path, TOKEN_SAMPLE * dtype.itemsize) as raw:
        data = raw.read(TOKEN_SAMPLE * dtype.itemsize)
    return np.frombuffer(data[:len(data) - len(data) % dtype.itemsize], dtype=dtype)


def _token_file(path: Path, dtype: np.dtype, first: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first token, ids) of a token file's TOKEN_CHUNK-token chunks from token `first`: views of a memory map."""
    tokens = np.memmap(path, dtype=dtype, mode="r")
    for begin in range(first, len(tokens), TOKEN_CHUNK):
        yield begin, tokens[begin:begin + TOKEN_CHUNK]  # a view: the shard writer's copy is the only one


def token_corpus_warnings(files: list[Path], declared: str, eos_id: int) -> list[str]:
    """What a format = "tokens" corpus written with another tokenizer shows even when its ids fit the vocabulary:
    no EOS (this tokenizer's document separator) in the first TOKEN_SAMPLE ids of any file."""
    dtype = np.dtype(declared).newbyteorder("<")
    if any((_first_tokens(path, dtype) == eos_id).any() for path in files):  # stops at the first file with one
        return []
    if not any(path.stat().st_size for path in files):
        return []
    return [f"the token corpus holds no EOS id ({eos_id}) in the first {TOKEN_SAMPLE:,} tokens of any of its "
            f"{counted(len(files), 'file')}: was it tokenized with another tokenizer, or without document "
            f"separators? The payloads are EOS-wrapped, so the model would see EOS only around insertions"]


def _outside_vocabulary(path: Path, chunk: np.ndarray, begin: int, vocab_size: int, declared: str):
    bad = int(np.argmax(chunk >= vocab_size))
    raise InputError(f"corpus file {str(path)!r} token {begin + bad:,} has id {int(chunk[bad]):,}, outside the "
                     f"tokenizer's vocabulary [0, {vocab_size:,})" + _dtype_hint(path, declared, vocab_size))


def _token_chunks(corpus: CorpusConfig, vocab_size: int, start: dict) -> Iterator[tuple[np.ndarray, Callable]]:
    dtype = np.dtype(corpus.dtype).newbyteorder("<")
    for index in range(start.get("file", 0), len(corpus.files)):
        path = corpus.files[index]
        check_token_file(path, corpus.dtype, vocab_size)
        if path.stat().st_size == 0:
            continue
        first = start.get("token", 0) if index == start.get("file", 0) else 0
        for begin, chunk in _token_file(path, dtype, first):
            if chunk.max() >= vocab_size:
                _outside_vocabulary(path, chunk, begin, vocab_size, corpus.dtype)
            yield chunk, lambda i, file=index, begin=begin: {"file": file, "token": begin + int(i)}


def _remote_token_chunks(corpus: CorpusConfig, vocab_size: int, start: dict) -> Iterator[tuple[np.ndarray, Callable]]:
    """`_token_chunks` of objects in storage: READ_BLOCK-byte ranged reads, TOKEN_REQUESTS at once across objects;
    each object's first piece is its dtype sample, so an object is read once, in order (and hashed as it streams)."""
    dtype = np.dtype(corpus.dtype).newbyteorder("<")
    first = (start.get("file", 0), start.get("token", 0) * dtype.itemsize)
    checked = first[0] - 1
    for index, offset, data in read_pieces(corpus.files, first, READ_BLOCK, TOKEN_REQUESTS):
        path = corpus.files[index]
        if index != checked:  # before the bytes are taken as ids: a size that is no whole number of them is refused
            check_token_file(path, corpus.dtype, vocab_size, data if offset == 0 else None)
            checked = index
        chunk, begin = np.frombuffer(data, dtype=dtype), offset // dtype.itemsize
        if chunk.max() >= vocab_size:
            _outside_vocabulary(path, chunk, begin, vocab_size, corpus.dtype)
        yield chunk, lambda i, file=index, begin=begin: {"file": file, "token": begin + int(i)}


def base_stream(corpus: CorpusConfig, tokenizer: LoadedTokenizer, start: dict | None = None,
                workers: int | None = None) -> Iterator[tuple[np.ndarray, Callable[[int], dict]]]:
    """Token chunks of the base stream, in order (each document's ids followed by EOS), each with `locate`:
    locate(i) is the cursor of the chunk's token i, which `base_stream(..., start=cursor)` resumes from.

    workers None or 1: tokenize here with the tokenizer's own thread pool; N ≥ 2: in N processes; a RayExecutor:
    read and tokenized by Ray tasks (injc.compiler.workers). The tokens are the same either way. A fresh stream
    (no `start`) begins `corpus.skip_tokens` tokens in; cursors are absolute, so a resumed one does not skip again.
    """
    if start is None and corpus.skip_tokens:
        yield from _skipping(base_stream(corpus, tokenizer, {}, workers), corpus.skip_tokens)
        return
    start = start or {}
    if corpus.format == "tokens":
        local = all(isinstance(path, Path) for path in corpus.files)
        yield from (_token_chunks if local else _remote_token_chunks)(corpus, tokenizer.vocab_size, start)
        return
    eos = np.array([tokenizer.eos_id], dtype=np.int64)
    skip = start.get("skip", 0)
    first = (start.get("file", 0), start.get("document", 0))
    if isinstance(workers, RayExecutor):
        chunks = read_on_ray(corpus_chunks(corpus, first), corpus, tokenizer.tokenizer.to_str(), workers)
        yield from _encoded(_keyed(chunks, first), eos, tokenizer.dtype, skip)
        return
    batches = _text_batches(corpus, first)
    if workers and workers > 1:
        encoded_batches = encode_in_processes(batches, tokenizer.tokenizer.to_str(), workers)
    else:
        encoded_batches = ((keys, tokenizer.encode_batch(texts)) for keys, texts in batches)
    yield from _encoded(encoded_batches, eos, tokenizer.dtype, skip)


def _keyed(chunks: Iterator[tuple[Chunk, list[np.ndarray]]], start: tuple[int, int]):
    """(keys, token arrays) from (chunk, token arrays): each document's (file, index), counted in order."""
    file, document = start
    for chunk, encoded in chunks:
        if chunk.file != file:
            file, document = chunk.file, 0
        yield [(file, document + i) for i in range(len(encoded))], encoded
        document += len(encoded)


def _encoded(encoded_batches, eos: np.ndarray, dtype, skip: int) -> Iterator[tuple[np.ndarray, Callable]]:
    """Token chunks with their cursors from (keys, token arrays) batches; the first `skip` tokens left out."""
    for keys, encoded in encoded_batches:
        if not encoded:
            continue
        tokens = np.concatenate([part for ids in encoded for part in (ids, eos)]).astype(dtype)
        begins = np.cumsum([0] + [len(ids) + 1 for ids in encoded[:-1]])
        already = skip

        def locate(i: int, keys=keys, begins=begins, already=already) -> dict:
            document = int(np.searchsorted(begins, i + already, side="right")) - 1
            file, index = keys[document]
            return {"file": file, "document": index, "skip": int(i + already - begins[document])}

        if skip:
            tokens, skip = tokens[skip:], 0
        yield tokens, locate


def _skipping(chunks: Iterator[tuple[np.ndarray, Callable]], count: int):
    """The chunks without their first `count` tokens; cursors still point into the whole stream."""
    for tokens, locate in chunks:
        if count >= len(tokens):
            count -= len(tokens)
            continue
        if count:
            tokens, locate, count = tokens[count:], (lambda i, locate=locate, shift=count: locate(i + shift)), 0
        yield tokens, locate


def fingerprint_files(paths: tuple[Path, ...], remote_sha256: bool = True) -> list[dict]:
    """Name, size and sha256 of each file: what the manifest records so a consumer can tell the inputs apart; an
    object in storage by its URL, with the store's content identity (ETag, version) beside injc's sha256.

    remote_sha256=False leaves the objects' sha256 out (a build keys them by their identity and adds the sha256
    it computed while streaming them, `with_streamed_sha256`)."""
    return [{"path": str(path), "size": path.stat().st_size, "sha256": input_sha256(path)} if isinstance(path, Path)
            else {"path": str(path), **remote_identity(path), **({"sha256": input_sha256(path)} if remote_sha256
                                                                else {})} for path in paths]


def with_streamed_sha256(records: list[dict], paths: tuple[Path, ...]) -> list[dict]:
    """The records of `fingerprint_files(paths, remote_sha256=False)` with each object's sha256: the one computed
    while the build read it whole, else read now (an object the stream stopped in or never reached, or one read
    by other processes). An object whose identity changed since the build began is refused: its bytes may differ
    from those built. The store lists each folder once, and the objects left are read at once."""
    remote = [path for record, path in zip(records, paths) if "sha256" not in record]
    found = dict(zip(map(str, remote), listed_identities(remote)))

    def completed(record: dict, path) -> dict:
        if "sha256" in record:
            return record
        now = found[str(path)]
        if not same_object({k: v for k, v in record.items() if k != "path"}, now):
            raise InputError(f"corpus object {str(path)!r} changed while it was being built (size or ETag "
                             f"differs from when the build began): build again")
        return {**record, "sha256": input_sha256(path, now)}

    with ThreadPoolExecutor(STORE_REQUESTS) as pool:
        return list(pool.map(completed, records, paths))
