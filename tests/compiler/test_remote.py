"""Corpus files in object storage: a real S3 endpoint (moto's standalone server, started here on a free port)
read through s3fs. A build from s3:// URLs is byte-identical to the build of the same files on disk."""

import hashlib
import json

import pytest
from click.testing import CliRunner

import injc
from injc.cli import main
from tests.conftest import CANARIES
from tests.s3_server import CREDENTIALS, free_port, remote_corpus, start_server


def files_of(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def test_a_build_from_s3_urls_is_byte_identical_to_the_local_build(endpoint, bucket, project, tmp_path, monkeypatch):
    """... and records each object's sha256 from the bytes its stream read, without reading it again."""
    from injc.shards import files

    fs, name = bucket
    local = project(CANARIES)
    injc.build(local, tmp_path / "local", progress=False)
    remote = project(CANARIES, corpus=remote_corpus(endpoint, f"s3://{name}/data/*.jsonl"))
    monkeypatch.setattr(files, "sha256_file", lambda path: pytest.fail(f"{path} read again for its sha256"))
    result = injc.build(remote, tmp_path / "remote", progress=False)
    assert result.total_tokens == 50 * 4 * 64
    assert files_of(tmp_path / "remote") == files_of(tmp_path / "local")
    manifest = json.loads((tmp_path / "remote" / "manifest.json").read_text())
    recorded = manifest["corpus"]["files"]
    assert [f["path"] for f in recorded] == [f"s3://{name}/data/a.jsonl", f"s3://{name}/data/b.jsonl"]
    for record, local_file in zip(recorded, sorted((project.root / "data").iterdir())):
        data = local_file.read_bytes()
        assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["size"] == len(data)
        assert record["etag"] == hashlib.md5(data).hexdigest()  # S3's ETag of a single-part upload
    assert "testing" not in (tmp_path / "remote" / "manifest.json").read_text()  # no credential recorded


def test_a_text_corpus_from_s3_is_hashed_as_it_is_read(endpoint, bucket, project, tmp_path, monkeypatch):
    """format = "text" (one document per object): the manifest's sha256 of each object comes from the read that
    built it."""
    from injc.shards import files

    fs, name = bucket
    texts = [" ".join(f"word{i * j % 97}" for j in range(3000)) for i in range(1, 4)]
    for index, text in enumerate(texts):
        fs.pipe_file(f"{name}/text/{index}.txt", text.encode())
    plan = project(CANARIES, corpus=f'paths = ["s3://{name}/text/*.txt"]\nformat = "text"\n'
                                    f'storage_options = {{ endpoint_url = "{endpoint}" }}')
    hashed, original = [], files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda path: hashed.append(str(path)) or original(path))
    injc.build(plan, tmp_path / "out", progress=False)
    recorded = json.loads((tmp_path / "out" / "manifest.json").read_text())["corpus"]["files"]
    assert [r["sha256"] for r in recorded] == [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    assert [h for h in hashed if h.startswith("s3://")] == []


@pytest.mark.parametrize("pattern, message", [
    ("s3://no-such-bucket/data/*.jsonl", "bucket 'no-such-bucket' does not exist"),
    ("s3://BUCKET/data/missing.jsonl", "'s3://BUCKET/data/missing.jsonl' matches no file"),
    ("s3://BUCKET/other/*.jsonl", "'s3://BUCKET/other/*.jsonl' matches no file"),
])
def test_missing_remote_inputs_are_one_line_each_and_nothing_is_written(endpoint, bucket, project, tmp_path,
                                                                        pattern, message):
    _, name = bucket
    plan = project(CANARIES, corpus=remote_corpus(endpoint, pattern.replace("BUCKET", name)))
    result = CliRunner().invoke(main, ["build", str(plan), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message.replace("BUCKET", name) in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_an_unreachable_store_and_a_credential_in_the_plan_are_refused(project, tmp_path):
    port = free_port()  # nothing listens there
    once = "config_kwargs = { retries = { max_attempts = 1 } }"  # botocore's retries would take 20 s to give up
    plan = project(CANARIES, corpus='paths = ["s3://corpus/data/*.jsonl"]\n'
                                    f'storage_options = {{ endpoint_url = "http://127.0.0.1:{port}", {once} }}')
    result = CliRunner().invoke(main, ["build", str(plan), "--out", str(tmp_path / "out")], env=CREDENTIALS)
    assert result.exit_code == 2 and "cannot be listed" in result.output and "Traceback" not in result.output
    secret = project(CANARIES, corpus='paths = ["s3://corpus/data/*.jsonl"]\n'
                                      'storage_options = { key = "AKIA", secret = "abc", endpoint_url = "http://x" }')
    result = CliRunner().invoke(main, ["build", str(secret), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "'key' is a credential" in result.output and "'secret' is a credential" in \
        result.output
    assert not (tmp_path / "out").exists()


def test_ray_chunks_of_a_remote_file_read_their_own_byte_ranges(endpoint, bucket, project):
    """What a Ray task does with a remote JSONL file: the driver cuts it at line ends (small reads around each cut),
    each task reads its own range; the texts are the local stream's."""
    from injc.compiler.plan import load_plan
    from injc.compiler.readers import chunk_texts, corpus_chunks, iter_documents

    _, name = bucket
    remote = load_plan(project(CANARIES, corpus=remote_corpus(endpoint, f"s3://{name}/data/*.jsonl"))).corpus
    local = load_plan(project(CANARIES)).corpus
    chunks = list(corpus_chunks(remote, (0, 3), chunk_bytes=2048))
    assert len(chunks) > 20 and all(not isinstance(c.path, type(local.files[0])) for c in chunks)
    from_chunks = [text for chunk in chunks for text in chunk_texts(chunk, remote)]
    assert from_chunks == [text for _, _, text in iter_documents(local, (0, 3))]
    assert [text for _, _, text in iter_documents(remote, (1, 5))] == [t for _, _, t in iter_documents(local, (1, 5))]


def test_verify_inputs_reads_the_objects_again_and_names_a_changed_one(endpoint, bucket, project, tmp_path):
    fs, name = bucket
    plan = project(CANARIES, corpus=remote_corpus(endpoint, f"s3://{name}/data/*.jsonl"))
    injc.build(plan, tmp_path / "out", progress=False)
    manifest = str(tmp_path / "out" / "manifest.json")
    assert CliRunner().invoke(main, ["verify", manifest, "--inputs"]).exit_code == 0
    original = fs.cat_file(f"{name}/data/b.jsonl")
    fs.pipe_file(f"{name}/data/b.jsonl", original.replace(b"the", b"THE", 1))  # same size, other bytes
    result = CliRunner().invoke(main, ["verify", manifest, "--inputs"])
    assert result.exit_code == 1
    assert f"corpus file s3://{name}/data/b.jsonl: etag differs from the manifest" in result.output
    assert "a.jsonl" not in result.output
    fs.rm_file(f"{name}/data/a.jsonl")
    result = CliRunner().invoke(main, ["verify", manifest, "--inputs"])
    assert result.exit_code == 1 and f"corpus file s3://{name}/data/a.jsonl: cannot be read" in result.output
    assert CliRunner().invoke(main, ["verify", manifest]).exit_code == 0  # the build itself is intact


def test_verify_inputs_rehashes_local_corpus_files(project, tmp_path):
    plan = project(CANARIES)
    injc.build(plan, tmp_path / "out", progress=False)
    corpus = project.root / "data" / "a.jsonl"
    data = corpus.read_bytes()
    corpus.write_bytes(data.replace(b"the", b"THE", 1))
    result = CliRunner().invoke(main, ["verify", str(tmp_path / "out"), "--inputs"])
    assert result.exit_code == 1 and f"corpus file {corpus}: sha256 differs from the manifest" in result.output


def test_a_token_corpus_in_s3_streams_the_local_files_ids_and_resumes_mid_file(endpoint, bucket, project, tmp_path):
    """Token files (uint16) read in ranged chunks: the stream, every cursor and a build equal the local files';
    a wrong dtype is caught from the first ranged read, as locally."""
    import numpy as np

    from injc.compiler import corpus as corpus_module
    from injc.compiler.corpus import base_stream
    from injc.compiler.plan import load_plan
    from injc.tokenizer import load_tokenizer

    fs, name = bucket
    rng = np.random.default_rng(3)
    (project.root / "tokens").mkdir()
    for index, length in enumerate((30_000, 25_001)):
        ids = rng.integers(1, 360, length).astype("<u2")  # inside the test tokenizer's 369 ids
        ids[::97] = 0  # EOS now and then
        ids.tofile(project.root / "tokens" / f"{index}.bin")
        fs.put_file(str(project.root / "tokens" / f"{index}.bin"), f"{name}/tokens/{index}.bin")
    options = f'storage_options = {{ endpoint_url = "{endpoint}" }}'
    local = project(CANARIES, corpus='paths = ["tokens/*.bin"]\nformat = "tokens"\ndtype = "uint16"')
    remote = project(CANARIES, corpus=f'paths = ["s3://{name}/tokens/*.bin"]\nformat = "tokens"\n'
                                      f'dtype = "uint16"\n{options}')
    injc.build(local, tmp_path / "local", progress=False)
    injc.build(remote, tmp_path / "remote", progress=False)
    assert files_of(tmp_path / "remote") == files_of(tmp_path / "local")
    plan = load_plan(remote)
    tokenizer = load_tokenizer(plan.tokenizer.path, plan.tokenizer.eos)
    original = corpus_module.READ_BLOCK
    corpus_module.READ_BLOCK = 8192  # 4096 ids a ranged read: many reads, and a resume inside a file
    try:
        chunks = list(base_stream(plan.corpus, tokenizer, {}))
        cursor = chunks[9][1](123)
        resumed = np.concatenate([c for c, _ in base_stream(plan.corpus, tokenizer, cursor)])
    finally:
        corpus_module.READ_BLOCK = original
    expected = np.concatenate([np.fromfile(project.root / "tokens" / f"{i}.bin", dtype="<u2") for i in (0, 1)])
    assert np.array_equal(np.concatenate([c for c, _ in chunks]), expected)
    assert cursor == {"file": 1, "token": 4096 + 123}  # chunks 0-7 are file 0's 30,000 ids, chunk 8 file 1's first
    assert np.array_equal(resumed, expected[30_000 + 4096 + 123:])
    wide = project(CANARIES, corpus=f'paths = ["s3://{name}/tokens/0.bin"]\nformat = "tokens"\n'
                                    f'dtype = "uint32"\n{options}')
    result = CliRunner().invoke(main, ["build", str(wide), "--out", str(tmp_path / "wide")])
    assert result.exit_code == 2 and "outside the tokenizer's vocabulary" in result.output


def test_credentials_the_store_refuses_are_one_line(project, tmp_path):
    """A server that checks credentials (moto with its IAM authentication on): an unknown key is refused."""
    server, url = start_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        once = "config_kwargs = { retries = { max_attempts = 1 } }"
        plan = project(CANARIES, corpus=f'paths = ["s3://corpus/data/*.jsonl"]\n'
                                        f'storage_options = {{ endpoint_url = "{url}", {once} }}')
        result = CliRunner().invoke(main, ["build", str(plan), "--out", str(tmp_path / "out")],
                                    env={**CREDENTIALS, "AWS_ACCESS_KEY_ID": "not-a-key"})
    finally:
        server.terminate()
        server.wait()
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "cannot be listed: The AWS Access Key Id you provided does not exist in our records" in result.output
    assert not (tmp_path / "out").exists()


def test_payload_files_in_s3_give_the_local_payloads(endpoint, bucket, project, tmp_path, monkeypatch):
    """An experiment's file given as an s3:// URL (the endpoint from AWS_ENDPOINT_URL, as for any AWS tool): the
    build equals the one reading the same file on disk; the manifest records the URL with its ETag and sha256."""
    fs, name = bucket
    fs.put_file(str(project.root / "payloads" / "canaries.jsonl"), f"{name}/payloads/canaries.jsonl")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    injc.build(project(CANARIES), tmp_path / "local", progress=False)
    remote = project(CANARIES.replace('"payloads/canaries.jsonl"', f'"s3://{name}/payloads/canaries.jsonl"'))
    injc.build(remote, tmp_path / "remote", progress=False)
    assert files_of(tmp_path / "remote") == files_of(tmp_path / "local")
    recorded = json.loads((tmp_path / "remote" / "manifest.json").read_text())["experiments"][0]["files"]["file"]
    data = (project.root / "payloads" / "canaries.jsonl").read_bytes()
    assert recorded["path"] == f"s3://{name}/payloads/canaries.jsonl"
    assert (recorded["sha256"], recorded["etag"]) == (hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest())
    missing = project(CANARIES.replace('"payloads/canaries.jsonl"', f'"s3://{name}/payloads/gone.jsonl"'))
    result = CliRunner().invoke(main, ["build", str(missing), "--out", str(tmp_path / "missing")])
    assert result.exit_code == 2 and f"'s3://{name}/payloads/gone.jsonl' is not an object in its store" in \
        result.output and not (tmp_path / "missing").exists()


def test_a_datasets_builder_streams_data_files_from_s3(endpoint, bucket, project, tmp_path):
    """format = "hf" with builder = "parquet": `datasets` streams the objects through fsspec with the plan's
    storage_options (offline, nothing downloaded); the build equals the one of the same files on disk. A saved
    dataset at a URL is refused: it is read from a local folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, name = bucket
    (project.root / "pq").mkdir()
    for path in sorted((project.root / "data").glob("*.jsonl")):
        texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
        pq.write_table(pa.table({"text": texts}), project.root / "pq" / f"{path.stem}.parquet", row_group_size=40)
        fs.put_file(str(project.root / "pq" / f"{path.stem}.parquet"), f"{name}/pq/{path.stem}.parquet")
    injc.build(project(CANARIES, corpus='paths = ["pq/*.parquet"]\nformat = "hf"\nbuilder = "parquet"'),
               tmp_path / "local", progress=False)
    injc.build(project(CANARIES, corpus=f'paths = ["s3://{name}/pq/*.parquet"]\nformat = "hf"\nbuilder = "parquet"\n'
                                        f'storage_options = {{ endpoint_url = "{endpoint}" }}'),
               tmp_path / "remote", progress=False)
    assert files_of(tmp_path / "remote") == files_of(tmp_path / "local")
    saved = project(CANARIES, corpus=f'paths = ["s3://{name}/saved"]\nformat = "hf"')
    result = CliRunner().invoke(main, ["build", str(saved), "--out", str(tmp_path / "saved")])
    assert result.exit_code == 2 and "a saved dataset is read from a local folder" in result.output


def test_an_object_read_whole_in_order_leaves_its_sha256_and_no_other_read_does(endpoint, bucket):
    """What lets a build record an object's sha256 without reading it again: the digest of a whole, in-order read
    (in odd pieces, through a buffered reader), and none after a partial read or a skip, or where not asked for."""
    import io

    from injc.storage import identity_key, open_binary, remote_path, streamed_sha256

    fs, name = bucket
    data = bytes(range(256)) * 3001
    keys = ("whole", "part", "again", "undigested")
    for key in keys:
        fs.pipe_file(f"{name}/{key}.bin", data)
    path = {key: remote_path(f"s3://{name}/{key}.bin", {"endpoint_url": endpoint}) for key in keys}
    with io.BufferedReader(open_binary(path["whole"], 5000, digest=True), 777) as reader:
        pieces = [reader.read(1001)] + list(iter(lambda: reader.read(4093), b""))
    assert b"".join(pieces) == data
    assert streamed_sha256(identity_key(path["whole"])) == hashlib.sha256(data).hexdigest()
    with open_binary(path["part"], digest=True) as raw:
        raw.read(len(data) - 1)
    with open_binary(path["again"], digest=True) as raw:
        raw.read(10)
        raw.seek(0)
        raw.read()
    assert streamed_sha256(identity_key(path["part"])) is None and streamed_sha256(identity_key(path["again"])) is None
    with open_binary(path["undigested"]) as raw:  # only a corpus reader asks for the digest
        assert raw.read() == data
    assert streamed_sha256(identity_key(path["undigested"])) is None


def test_a_remote_token_corpus_is_read_once_where_the_build_reads_it_whole(endpoint, bucket, project, tmp_path,
                                                                           monkeypatch):
    """The manifest's sha256 of an object the build streamed whole comes from that stream; the object the build
    stopped in is read once more for its sha256. Both equal the sha256 of the uploaded bytes."""
    import numpy as np

    from injc.compiler import corpus as corpus_module
    from injc.shards import files

    fs, name = bucket
    uploaded = []
    for index, length in enumerate((5_000, 200_000)):
        ids = np.random.default_rng(index).integers(1, 360, length).astype("<u2")
        ids[::97] = 0
        fs.pipe_file(f"{name}/tokens/{index}.bin", ids.tobytes())
        uploaded.append(ids.tobytes())
    plan = project(CANARIES, corpus=f'paths = ["s3://{name}/tokens/*.bin"]\nformat = "tokens"\ndtype = "uint16"\n'
                                    f'storage_options = {{ endpoint_url = "{endpoint}" }}')
    hashed, original = [], files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda path: hashed.append(str(path)) or original(path))
    monkeypatch.setattr(corpus_module, "READ_BLOCK", 8192)  # 4096 ids a read: the build (12,800 tokens) stops in 1.bin
    injc.build(plan, tmp_path / "out", progress=False)
    recorded = json.loads((tmp_path / "out" / "manifest.json").read_text())["corpus"]["files"]
    assert [r["sha256"] for r in recorded] == [hashlib.sha256(b).hexdigest() for b in uploaded]
    assert [h for h in hashed if h.startswith("s3://")] == [f"s3://{name}/tokens/1.bin"]


def test_an_object_that_changes_during_a_build_is_refused(endpoint, bucket, project):
    """Changed by another client (whose write this process's listing cache does not see)."""
    import s3fs

    from injc.compiler.corpus import fingerprint_files, with_streamed_sha256
    from injc.compiler.plan import load_plan
    from injc.errors import InputError

    fs, name = bucket
    files = load_plan(project(CANARIES, corpus=remote_corpus(endpoint, f"s3://{name}/data/*.jsonl"))).corpus.files
    records = fingerprint_files(files, remote_sha256=False)
    assert "sha256" not in records[0] and with_streamed_sha256(records, files)[0]["sha256"]
    other = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    other.pipe_file(f"{name}/data/b.jsonl", b'{"text": "rewritten"}\n')
    with pytest.raises(InputError, match="b.jsonl' changed while it was being built"):
        with_streamed_sha256(records, files)
    other.rm_file(f"{name}/data/a.jsonl")
    with pytest.raises(InputError, match="a.jsonl' changed while it was being built"):
        with_streamed_sha256(records, files)
    other.rm(f"{name}", recursive=True)  # the whole bucket gone
    with pytest.raises(InputError, match="changed while it was being built"):
        with_streamed_sha256(records, files)


def test_a_ranged_read_that_comes_back_short_is_refused(endpoint, bucket):
    """An object cut shorter than its listed size, or deleted, while a build reads it: one line each."""
    from injc.errors import InputError
    from injc.storage import _read_range, remote_path

    fs, name = bucket
    fs.pipe_file(f"{name}/short.bin", b"x" * 1000)
    path = remote_path(f"s3://{name}/short.bin", {"endpoint_url": endpoint})
    assert _read_range(path, 10, 1000) == b"x" * 990
    with pytest.raises(InputError, match="returned 990 bytes of 1,990 asked for"):
        _read_range(path, 10, 2000)
    fs.rm_file(f"{name}/short.bin")  # gone between the listing and the read
    with pytest.raises(InputError, match="short.bin' cannot be read"):
        _read_range(path, 0, 1000)
