"""`injc verify` is the oracle of the other tests, so it must catch every kind of damage."""

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import injc
from injc.shards.manifest import content_checksum
from tests.conftest import CANARIES


@pytest.fixture
def built(project, tmp_path):
    out = tmp_path / "out"
    injc.build(project(CANARIES, extra_layout="shard_tokens = 3000"), out, progress=False)
    return out


def test_intact_build_verifies(built):
    assert injc.verify(built) == []


def test_any_flipped_shard_byte_is_caught(built):
    rng = np.random.default_rng(0)
    shards = sorted((built / "shards").iterdir())
    for _ in range(5):
        path = shards[rng.integers(len(shards))]
        data = bytearray(path.read_bytes())
        position = int(rng.integers(len(data)))
        data[position] ^= 1 << int(rng.integers(8))
        original = path.read_bytes()
        path.write_bytes(bytes(data))
        problems = injc.verify(built)
        assert any(f"shard {path.parent.name}/{path.name}: sha256 differs" in p for p in problems), problems
        path.write_bytes(original)
    assert injc.verify(built) == []


def test_missing_and_truncated_shards(built):
    shard = built / "shards" / "shard_00001.bin"
    data = shard.read_bytes()
    shard.write_bytes(data[:-2])
    assert any("shard_00001.bin: " in p and "bytes, expected" in p for p in injc.verify(built))
    shard.unlink()
    assert any("shard_00001.bin: missing" in p for p in injc.verify(built))


def test_tampered_insertions_table(built):
    path = built / "insertions.parquet"
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    assert any("insertions table insertions.parquet: sha256 differs" in p for p in injc.verify(built))


def test_table_that_disagrees_with_the_shards_is_caught_even_with_a_matching_hash(built):
    """A hand-made table whose hash was updated in the manifest still has to match the shard bytes."""
    path = built / "insertions.parquet"
    table = pq.read_table(path)
    tokens = table.column("tokens").to_pylist()
    tokens[3] = [t + 1 for t in tokens[3]]
    table = table.set_column(8, "tokens", pa.array(tokens, pa.list_(pa.int32())))
    pq.write_table(table, path)
    manifest = json.loads((built / "manifest.json").read_text())
    manifest["insertions"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest["checksum"] = content_checksum(manifest)
    (built / "manifest.json").write_text(json.dumps(manifest))
    problems = injc.verify(built)
    assert problems == ["insertions: experiment 'canaries' has copies not wrapped in EOS",
                        "shards differ from insertions: experiment 'canaries' item "
                        f"{table.column('item')[3].as_py()} at offset {table.column('offset')[3].as_py():,} "
                        f"({len(tokens[3])} tokens differ in row group 0)"], problems


def test_a_manifest_edited_by_hand_is_caught(built):
    manifest = json.loads((built / "manifest.json").read_text())
    manifest["experiments"][0]["repetitions"] = 99
    (built / "manifest.json").write_text(json.dumps(manifest))
    assert injc.verify(built) == ["manifest.json was changed after the build (its checksum differs)"]


def test_many_random_single_byte_flips_in_shards_and_tables_are_all_caught(built):
    rng = np.random.default_rng(1)
    files = sorted((built / "shards").iterdir()) + [built / "insertions.parquet", built / "items.parquet"]
    for _ in range(40):
        path = files[rng.integers(len(files))]
        original = path.read_bytes()
        data = bytearray(original)
        data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(data))
        assert injc.verify(built), f"a flipped byte in {path.name} went unnoticed"
        path.write_bytes(original)


def test_not_a_manifest(tmp_path):
    (tmp_path / "m.json").write_text('{"format": "other"}')
    with pytest.raises(injc.ManifestError, match="is not an injc manifest"):
        injc.verify(tmp_path / "m.json")
    (tmp_path / "v.json").write_text('{"format": "injc-manifest", "version": 99}')
    with pytest.raises(injc.ManifestError, match="has version 99; this injc reads versions 1 and 2"):
        injc.verify(tmp_path / "v.json")
    (tmp_path / "w.json").write_text('{"format": "injc-manifest", "version": 2}')
    with pytest.raises(injc.ManifestError, match="a version 2 manifest lacks row_order"):
        injc.verify(tmp_path / "w.json")


def test_unwrapped_random_copies_are_reported(project, tmp_path):
    """Relabel an explicit experiment (tokens written as given) as random: its copies lack the EOS wrapper."""
    from tests.conftest import write_jsonl

    write_jsonl(project.root / "payloads" / "pinned.jsonl", [{"tokens": [5, 6, 7], "offset": 70}])
    out = tmp_path / "pinned"
    injc.build(project('[[experiments]]\nname = "p"\nkind = "tokens"\nfile = "payloads/pinned.jsonl"\n'
                       'placement = "explicit"\n'), out, progress=False)
    assert injc.verify(out) == []
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["experiments"][0]["placement"]["mode"] = "random"
    manifest["checksum"] = content_checksum(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert injc.verify(out) == ["insertions: experiment 'p' has copies not wrapped in EOS"]


def test_input_hashes_are_remembered_and_never_stale(tmp_path, monkeypatch):
    """A second hash of an unchanged file is read back; a write that keeps size and modification time (set back by
    hand) still changes the hash: the change time is in the identity. Without a writable cache it still hashes."""
    import hashlib
    import os

    import injc.shards.files as files

    monkeypatch.setenv("INJC_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "corpus.bin"
    path.write_bytes(b"a" * 5000)
    hashed = []
    real = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda p: hashed.append(p) or real(p))
    assert files.input_sha256(path) == hashlib.sha256(b"a" * 5000).hexdigest() and len(hashed) == 1
    assert files.input_sha256(path) == hashlib.sha256(b"a" * 5000).hexdigest() and len(hashed) == 1
    before = path.stat()
    with open(path, "r+b") as handle:  # same size, then the modification time put back
        handle.write(b"b")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_size == before.st_size
    assert files.input_sha256(path) == hashlib.sha256(b"b" + b"a" * 4999).hexdigest() and len(hashed) == 2
    (tmp_path / "a-file").write_bytes(b"")
    monkeypatch.setenv("INJC_CACHE_DIR", str(tmp_path / "a-file" / "cache"))  # no folder can be made there
    assert files.input_sha256(path) == hashlib.sha256(b"b" + b"a" * 4999).hexdigest() and len(hashed) == 3


@pytest.mark.parametrize("case", ["aligned", "unaligned", "no-direct-open", "no-direct-write", "tmpfs"])
def test_shard_writes_keep_every_byte_whatever_the_file_system_takes(tmp_path, monkeypatch, case):
    """O_DIRECT whole blocks from aligned memory, a bounce buffer for memory that is not aligned, the page cache for
    the tail and for file systems that refuse O_DIRECT at open or at the first write (tmpfs: /dev/shm)."""
    import errno
    import mmap
    import os

    import injc.shards.files as files

    size = 3 * files.DIRECT_PIECE + 5 * files.DIRECT_BLOCK + 123  # several pieces, then a partial block
    memory = mmap.mmap(-1, size + 1)
    data = np.frombuffer(memory, dtype=np.uint8)
    data[:] = np.random.default_rng(0).integers(0, 256, size + 1)
    expected = bytes(data[1:] if case == "unaligned" else data[:size])
    target = tmp_path / "shard.bin"
    if case == "tmpfs":
        if not os.path.isdir("/dev/shm"):
            pytest.skip("no /dev/shm here")
        target = Path(tempfile.mkdtemp(dir="/dev/shm")) / "shard.bin"
    real_open, real_write = os.open, os.write
    if case == "no-direct-open":
        def refusing_open(path, flags, *args):
            if flags & os.O_DIRECT:
                raise OSError(errno.EINVAL, "no O_DIRECT")
            return real_open(path, flags, *args)
        monkeypatch.setattr(os, "open", refusing_open)
    if case == "no-direct-write":
        def refusing_write(fd, data):
            import fcntl
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
                raise OSError(errno.EINVAL, "no O_DIRECT")
            return real_write(fd, data)
        monkeypatch.setattr(os, "write", refusing_write)
    view = memoryview(memory)[1:size + 1] if case == "unaligned" else memoryview(memory)[:size]
    files.write_synced(target, view)
    view.release()
    assert target.read_bytes() == expected
