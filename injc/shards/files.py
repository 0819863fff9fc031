"""Small file helpers shared by the writer, the build, the trainer and verify: durable writes, hashing, locks."""

import fcntl
import hashlib
import os
from contextlib import contextmanager
from pathlib import Path

from injc.errors import InjcError


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


@contextmanager
def folder_lock(folder: Path, what: str):
    """Hold an exclusive lock on `folder` (an injc build, run or loop folder) while a command writes it; a second
    command into it is refused at once, naming the holder's pid.

    The lock file sits beside the folder (`.NAME.injc-lock`), so the folder itself may be replaced. flock is released
    by the kernel when the process dies, so a killed command never leaves a stale lock.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.parent / f".{folder.name}.injc-lock"
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise InjcError(f"another injc {what} is writing {str(folder)!r} (pid {holder}); wait for it or pick "
                        f"another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()
