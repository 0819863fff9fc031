"""Chunked reading (what Ray workers do): the chunks of a corpus hold exactly its documents, in order, from any
resume point, whatever the chunk size; compared with the files read directly here."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from injc.compiler.plan import CorpusConfig
from injc.compiler.readers import chunk_texts, corpus_chunks, iter_documents
from injc.errors import InputError
from tests.conftest import make_documents


def chunked(corpus: CorpusConfig, start=(0, 0), chunk_bytes=None) -> list[tuple[int, str]]:
    return [(chunk.file, text) for chunk in corpus_chunks(corpus, start, chunk_bytes)
            for text in chunk_texts(chunk, corpus)]


@pytest.fixture
def jsonl_corpus(tmp_path):
    """Three files: plain (blank lines, CRLF ends, non-ASCII text, no final newline), gzip, zstd."""
    docs = make_documents(40, seed=11)
    docs[3] = "naïve café — 東京 " + docs[3]
    lines = [json.dumps({"text": d, "n": i}, ensure_ascii=i % 2 == 0).encode() for i, d in enumerate(docs)]
    plain = b"\n".join(lines[:14]) + b"\n\n   \n" + b"\r\n".join(lines[14:20])
    packed = b"".join(line + b"\n" for line in lines[20:30])
    (tmp_path / "a.jsonl").write_bytes(plain)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(packed))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        b"\n".join(line for line in lines[30:]) + b"\n"))
    files = (tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz", tmp_path / "c.jsonl.zst")
    by_file = [(0, d) for d in docs[:20]] + [(1, d) for d in docs[20:30]] + [(2, d) for d in docs[30:]]
    return CorpusConfig(files, "jsonl", "text", None), by_file


@pytest.mark.parametrize("chunk_bytes", [1, 50, 700, None])
def test_jsonl_chunks_hold_every_document_once_in_order_from_any_start(jsonl_corpus, chunk_bytes):
    corpus, by_file = jsonl_corpus
    for start in [(0, 0), (0, 7), (0, 19), (0, 20), (1, 0), (1, 4), (2, 9), (2, 10)]:
        first = next((i for i, (f, _) in enumerate(by_file) if f == start[0]), len(by_file)) + start[1]
        assert chunked(corpus, start, chunk_bytes) == by_file[first:], (start, chunk_bytes)


def test_small_chunks_really_split_the_files(jsonl_corpus):
    corpus, _ = jsonl_corpus
    files = [chunk.file for chunk in corpus_chunks(corpus, chunk_bytes=50)]
    assert files.count(0) >= 10 and files.count(1) >= 5 and files.count(2) >= 5
    assert sorted(files) == files


def test_parquet_row_groups_and_text_files(tmp_path):
    docs = make_documents(23, seed=12)
    pq.write_table(pa.table({"text": docs[:10]}), tmp_path / "a.parquet", row_group_size=4)
    pq.write_table(pa.table({"text": docs[10:], "id": list(range(13))}), tmp_path / "b.parquet", row_group_size=5)
    corpus = CorpusConfig((tmp_path / "a.parquet", tmp_path / "b.parquet"), "parquet", "text", None)
    by_file = [(0, d) for d in docs[:10]] + [(1, d) for d in docs[10:]]
    assert len(list(corpus_chunks(corpus))) == 3 + 3
    for start, first in [((0, 0), 0), ((0, 5), 5), ((0, 8), 8), ((1, 0), 10), ((1, 12), 22), ((1, 13), 23)]:
        assert chunked(corpus, start) == by_file[first:], start

    for i, doc in enumerate(docs[:3]):
        (tmp_path / f"{i}.txt").write_text(doc, encoding="utf-8")
    texts = CorpusConfig(tuple(tmp_path / f"{i}.txt" for i in range(3)), "text", "text", None)
    assert chunked(texts) == [(0, docs[0]), (1, docs[1]), (2, docs[2])]
    assert chunked(texts, (1, 1)) == [(2, docs[2])]


@pytest.mark.parametrize("name", ["bad.jsonl", "bad.jsonl.zst"])
def test_a_malformed_line_in_a_late_chunk_is_named_by_its_line_in_the_file(tmp_path, name):
    lines = [json.dumps({"text": d}) for d in make_documents(30, seed=13)]
    lines[17] = '{"text": "cut off'
    lines[25] = json.dumps({"body": "no text field"})
    data = ("\n".join(lines[:10]) + "\n\n" + "\n".join(lines[10:]) + "\n").encode()
    (tmp_path / name).write_bytes(zstandard.ZstdCompressor().compress(data) if name.endswith(".zst") else data)
    corpus = CorpusConfig((tmp_path / name,), "jsonl", "text", None)
    with pytest.raises(InputError, match=r"line 19 is not valid JSON") as chunked_error:
        chunked(corpus, chunk_bytes=100)
    with pytest.raises(InputError) as local_error:
        list(iter_documents(corpus))
    assert str(chunked_error.value) == str(local_error.value)
    with pytest.raises(InputError, match=r"line 27 has no string field 'text'"):
        chunked(corpus, (0, 20), chunk_bytes=100)
