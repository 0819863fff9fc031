"""`injc verify` is the oracle of the other tests, so it must catch every kind of damage."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import injc
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
    import hashlib
    manifest["insertions"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (built / "manifest.json").write_text(json.dumps(manifest))
    problems = injc.verify(built)
    assert any("shards differ from insertions: experiment 'canaries'" in p for p in problems), problems


def test_not_a_manifest(tmp_path):
    (tmp_path / "m.json").write_text('{"format": "other"}')
    with pytest.raises(injc.ManifestError, match="is not an injc manifest"):
        injc.verify(tmp_path / "m.json")
    (tmp_path / "v.json").write_text('{"format": "injc-manifest", "version": 99}')
    with pytest.raises(injc.ManifestError, match="has version 99; this injc reads version 1"):
        injc.verify(tmp_path / "v.json")
