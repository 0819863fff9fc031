"""Every corpus format yields the same base stream: documents in file order, each followed by EOS."""

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from injc.compiler.corpus import base_stream
from injc.compiler.plan import CorpusConfig
from injc.errors import InputError
from injc.tokenizer import load_tokenizer
from tests.conftest import make_documents

DOCS = make_documents(30, seed=5)


@pytest.fixture
def tokenizer(tokenizer_path):
    return load_tokenizer(tokenizer_path, None)


def stream(files, fmt, tokenizer, dtype=None):
    return np.concatenate([c for c, _ in base_stream(CorpusConfig(tuple(files), fmt, "text", dtype), tokenizer)])


def expected(tokenizer, docs=DOCS):
    return np.concatenate([np.r_[ids, tokenizer.eos_id] for ids in tokenizer.encode_batch(docs)])


def test_jsonl_plain_gzip_and_zstd_agree(tmp_path, tokenizer):
    lines = "".join(json.dumps({"text": d, "other": 1}) + "\n" for d in DOCS).encode()
    (tmp_path / "a.jsonl").write_bytes(lines)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    want = expected(tokenizer)
    for name in ("a.jsonl", "a.jsonl.gz", "a.jsonl.zst"):
        assert np.array_equal(stream([tmp_path / name], "jsonl", tokenizer), want), name


def test_default_eos_is_found_and_documents_are_eos_separated(tokenizer):
    assert tokenizer.eos == "<|endoftext|>"
    tokens = expected(tokenizer, ["a b", "c"])
    assert (tokens == tokenizer.eos_id).sum() == 2 and tokens[-1] == tokenizer.eos_id


def test_parquet_and_text_files(tmp_path, tokenizer):
    half = len(DOCS) // 2
    pq.write_table(pa.table({"text": DOCS[:half]}), tmp_path / "a.parquet", row_group_size=4)
    pq.write_table(pa.table({"text": DOCS[half:]}), tmp_path / "b.parquet")
    assert np.array_equal(stream([tmp_path / "a.parquet", tmp_path / "b.parquet"], "parquet", tokenizer),
                          expected(tokenizer))
    for i, doc in enumerate(DOCS[:3]):
        (tmp_path / f"{i}.txt").write_text(doc)
    assert np.array_equal(stream([tmp_path / f"{i}.txt" for i in range(3)], "text", tokenizer),
                          expected(tokenizer, DOCS[:3]))


def test_token_files_pass_through_and_are_range_checked(tmp_path, tokenizer):
    ids = np.arange(300, dtype="<u2")
    ids.tofile(tmp_path / "a.bin")
    assert np.array_equal(stream([tmp_path / "a.bin"], "tokens", tokenizer, "uint16"), ids)
    np.array([1, 2, 60000], dtype="<u2").tofile(tmp_path / "bad.bin")
    with pytest.raises(InputError, match=r"token 2 has id 60,000, outside the tokenizer's vocabulary"):
        stream([tmp_path / "bad.bin"], "tokens", tokenizer, "uint16")
    (tmp_path / "odd.bin").write_bytes(b"\x01\x02\x03")
    with pytest.raises(InputError, match="not a whole number of uint16 tokens"):
        stream([tmp_path / "odd.bin"], "tokens", tokenizer, "uint16")


def test_malformed_corpus_lines_name_file_and_line(tmp_path, tokenizer):
    (tmp_path / "a.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(InputError, match=r"a.jsonl' line 2 is not valid JSON"):
        stream([tmp_path / "a.jsonl"], "jsonl", tokenizer)
    (tmp_path / "b.jsonl").write_text('{"text": "ok"}\n{"body": "x"}\n')
    with pytest.raises(InputError, match=r"b.jsonl' line 2 has no string field 'text'"):
        stream([tmp_path / "b.jsonl"], "jsonl", tokenizer)
    (tmp_path / "c.jsonl.zst").write_bytes(b"not zstd at all")
    with pytest.raises(InputError, match="cannot be read"):
        stream([tmp_path / "c.jsonl.zst"], "jsonl", tokenizer)


def test_bad_tokenizer_files(tmp_path):
    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(InputError, match="is not a tokenizers JSON file"):
        load_tokenizer(tmp_path / "t.json", None)


def test_worker_processes_give_the_same_stream_and_cursors(tmp_path, tokenizer, monkeypatch):
    lines = "".join(json.dumps({"text": d}) + "\n" for d in DOCS * 20)
    (tmp_path / "a.jsonl").write_text(lines)
    corpus = CorpusConfig((tmp_path / "a.jsonl",), "jsonl", "text", None)
    monkeypatch.setattr("injc.compiler.corpus.BATCH_CHARS", 2000)  # many batches: the pool really interleaves
    here = list(base_stream(corpus, tokenizer))
    pooled = list(base_stream(corpus, tokenizer, workers=2))
    assert len(here) == len(pooled) > 5
    for (a, locate_a), (b, locate_b) in zip(here, pooled):
        assert np.array_equal(a, b) and locate_a(7) == locate_b(7)


@pytest.mark.parametrize("fmt", ["jsonl", "tokens"])
def test_skip_tokens_starts_later_and_cursors_stay_absolute(tmp_path, tokenizer, fmt):
    """A window `skip` tokens in is the whole stream's tail; a cursor taken in it resumes without skipping again."""
    if fmt == "jsonl":
        (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
        whole = expected(tokenizer)
    else:
        whole = np.tile(np.arange(1, 300, dtype="<u2"), 20)
        whole.tofile(tmp_path / "a.jsonl")
    corpus = CorpusConfig((tmp_path / "a.jsonl",), fmt, "text", "uint16" if fmt == "tokens" else None, 0, 777)
    chunks = list(base_stream(corpus, tokenizer))
    window = np.concatenate([c for c, _ in chunks])
    assert np.array_equal(window, whole[777:])
    cursor = chunks[0][1](100)  # the cursor of the window's token 100, i.e. the stream's token 877
    resumed = np.concatenate([c for c, _ in base_stream(corpus, tokenizer, cursor)])
    assert np.array_equal(resumed, whole[877:])
