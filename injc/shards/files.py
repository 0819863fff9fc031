"""Small file helpers shared by the writer, the build, the trainer and verify: durable writes, hashing, locks."""

import errno
import fcntl
import hashlib
import mmap
import os
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from injc.errors import InjcError
from injc.storage import identity_key, open_binary, streamed_sha256


def fsync_path(path: Path) -> None:
    """Flush a file (or folder entry table) to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace_output(partial: Path, out_dir: Path) -> None:
    """Move a finished folder into place; an old one is swapped out first, then deleted."""
    trash = out_dir.parent / f".{out_dir.name}.injc-old"
    shutil.rmtree(trash, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(trash)
    partial.rename(out_dir)
    fsync_path(out_dir.parent)
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def written_whole(out: Path):
    """A folder that is there complete or not at all: yields a fresh hidden folder beside `out` to write into,
    moved into place (an earlier `out` replaced) when the block ends, removed when it raises (exports, reports)."""
    partial = out.parent / f".{out.name}.injc-partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    replace_output(partial, out)


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


O_DIRECT = getattr(os, "O_DIRECT", 0)
"""0 where the platform has no O_DIRECT (every write then goes through the page cache)."""
DIRECT_BLOCK = 4096
"""O_DIRECT writes whole blocks from block-aligned memory."""
DIRECT_PIECE = 1 << 24
"""Bytes per O_DIRECT write (and the size of the aligned bounce buffer for memory that is not aligned)."""


def write_synced(path: Path, data) -> None:
    """Write `data` to a new file and sync it. Its whole 4 KiB blocks go with O_DIRECT, past the page cache, where
    the file system takes it (else, as on tmpfs, through the page cache): a build writes a shard once and has its
    hash already, and on a virtual machine fresh page-cache pages cost more than the disk write (1 GiB here: 0.4 s
    direct and synced against 2 to 2.7 s buffered, docs/benchmarks.md)."""
    raw = memoryview(data).cast("B")
    whole = len(raw) - len(raw) % DIRECT_BLOCK
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | O_DIRECT, 0o666)
    except OSError:
        fd, whole = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), 0
    try:
        written = _write_direct(fd, raw[:whole]) if whole and O_DIRECT else 0
        if written < len(raw):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~O_DIRECT)
            _write_all(fd, raw[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, raw: memoryview) -> None:
    while len(raw):
        raw = raw[os.write(fd, raw):]


def _write_direct(fd: int, raw: memoryview) -> int:
    """Write `raw` (whole blocks) with O_DIRECT, through an aligned bounce buffer where `raw` is not aligned;
    the bytes written, 0 when the file system refuses O_DIRECT writes (then nothing was written)."""
    aligned = np.frombuffer(raw, dtype=np.uint8).ctypes.data % DIRECT_BLOCK == 0
    bounce = None if aligned else mmap.mmap(-1, DIRECT_PIECE)
    done = 0
    try:
        while done < len(raw):
            piece = raw[done:done + DIRECT_PIECE]
            if bounce is not None:
                bounce.seek(0)
                bounce.write(piece)
            try:
                if bounce is None:
                    count = os.write(fd, piece)
                else:
                    with memoryview(bounce) as view:
                        count = os.write(fd, view[:len(piece)])
            except OSError as error:
                if done == 0 and error.errno == errno.EINVAL:
                    return 0
                raise
            if count % DIRECT_BLOCK:
                raise OSError(errno.EIO, f"short O_DIRECT write of {count} bytes")
            done += count
    finally:
        if bounce is not None:
            bounce.close()
    return done


def sha256_array(data) -> str:
    """The sha256 of an array's bytes as they lie in memory (a shard's tokens, little-endian)."""
    return hashlib.sha256(memoryview(data).cast("B")).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open_binary(path) as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def write_blocks(path: Path, blocks: Iterable) -> str:
    """Write `blocks` (buffers: arrays, bytes) to a new file in order and return the file's sha256, each block hashed
    on a second thread while the next one is made and written (hashlib releases the GIL), so an export never reads
    its files back for their hashes."""
    digest = hashlib.sha256()
    with ThreadPoolExecutor(1) as hasher, open(path, "wb") as handle:
        hashing = None
        for block in blocks:
            view = memoryview(block).cast("B")  # the block itself: no copy to bytes
            handle.write(view)
            if hashing is not None:
                hashing.result()
            hashing = hasher.submit(digest.update, view)
        if hashing is not None:
            hashing.result()
    return digest.hexdigest()


def cache_folder() -> Path:
    """Where injc keeps what it can recompute: $INJC_CACHE_DIR, else $XDG_CACHE_HOME/injc, else ~/.cache/injc."""
    chosen = os.environ.get("INJC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "injc")
    return Path(chosen)


def input_sha256(path: Path, known: dict | None = None) -> str:
    """The sha256 of an input file (a corpus or payload file), remembered across builds by what identifies its
    bytes on this machine: device, inode, size, modification and change times. Any write changes the change time,
    which no tool can set back, so a remembered hash is never stale; a rebuild, each window of `injc run` and each
    CPDT row skip re-reading an unchanged corpus. An object in storage is remembered by its URL, size and the
    store's content identity (ETag, version), read from the store each time; one this process has just streamed
    whole is not read again (`known`: the object's identity, where the caller has just asked the store). Without a
    writable cache folder every call hashes."""
    if isinstance(path, Path):
        status = path.stat()
        identity = f"{os.path.realpath(path)}|{status.st_dev}|{status.st_ino}|{status.st_size}|" \
                   f"{status.st_mtime_ns}|{status.st_ctime_ns}"
    else:
        identity = identity_key(path, known)
    entry = cache_folder() / "sha256" / f"{hashlib.sha256(identity.encode()).hexdigest()}.txt"
    try:
        remembered = entry.read_text()
        if len(remembered) == 64:
            return remembered
    except OSError:
        pass
    digest = (None if isinstance(path, Path) else streamed_sha256(identity)) or sha256_file(path)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        temporary = entry.with_name(f".{entry.name}.{os.getpid()}")
        temporary.write_text(digest)
        temporary.replace(entry)
    except OSError:
        pass
    return digest


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
