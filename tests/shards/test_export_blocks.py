"""Exports hash their files while writing them (injc.shards.files.write_blocks) instead of reading them back: the
recorded sha256 is that of the bytes on disk, also when a file is written in many blocks."""

import hashlib
import json

import numpy as np
import pytest

import injc
from injc.shards import exports
from injc.shards.export_check import verify_export
from injc.shards.exports import export
from injc.shards.files import write_blocks
from tests.conftest import CANARIES

pytest.importorskip("torch")


def test_write_blocks_writes_and_hashes_every_block_in_order(tmp_path):
    rng = np.random.default_rng(0)
    blocks = [rng.integers(0, 2**16, n, dtype=np.uint16) for n in (1, 4096, 3, 70_000)] + [b"tail", b""]
    digest = write_blocks(tmp_path / "out.bin", iter(blocks))
    expected = b"".join(bytes(memoryview(b).cast("B")) for b in blocks)
    assert (tmp_path / "out.bin").read_bytes() == expected
    assert digest == hashlib.sha256(expected).hexdigest()
    assert write_blocks(tmp_path / "empty.bin", iter([])) == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("target, seed", [("olmo-core", 5), ("megatron", 5), ("nanogpt", None)])
def test_an_export_written_in_many_blocks_records_the_sha256_of_its_files(project, tmp_path, monkeypatch, target,
                                                                          seed):
    built = injc.build(project(CANARIES, layout="seq_len = 64\nbatch_size = 4\nsteps = 40\nseed = 7",
                               extra_layout="shard_tokens = 2560"), tmp_path / "build", progress=False)
    monkeypatch.setattr(exports, "COPY_BLOCK", 1000)  # shard files copied 1,000 bytes at a time
    monkeypatch.setattr(exports, "BLOCK_ROWS_BYTES", 3 * 64 * 2)  # rows gathered 3 at a time
    record = json.loads(export(built.manifest_path, target, tmp_path / target, seed=seed).read_text())
    for entry in record["files"]:
        assert entry["sha256"] == hashlib.sha256((tmp_path / target / entry["path"]).read_bytes()).hexdigest()
    assert verify_export(tmp_path / target) == []
