"""Small file helpers shared by the writer, the build and verify: durable writes and hashing."""

import hashlib
import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file (or folder entry table) to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the whole new one, never a part."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def sha256_array(data) -> str:
    """The sha256 of an array's bytes as they lie in memory (a shard's tokens, little-endian)."""
    return hashlib.sha256(memoryview(data).cast("B")).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()
