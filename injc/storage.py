"""Object storage: corpus and payload paths given as fsspec URLs (`s3://`, `gs://`, `r2://`..., `file://`), and
exports read where they were uploaded, through universal-pathlib's `UPath` (pathlib's interface over fsspec), so
the readers treat a remote file as a local one: `.open("rb")`, `.stat()`, `.name`.

Reads stream in large ranged requests (READ_BLOCK bytes each); nothing is copied to local disk first.
Credentials come from each library's usual places (the environment, ~/.aws, gcloud's files); a plan's
`storage_options` may name only where and how to connect (an endpoint, a profile, a region), since the plan is
copied into the manifest. A URL is recorded as it was given, with the size, the store's content identity (ETag,
version) and the sha256 injc computed over its bytes: while the build streams the object, where it reads it whole
from the front in this process (`streamed_sha256`), else by reading it once more.
"""

import hashlib
import io
import itertools
import json
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from injc.errors import InputError

URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
READ_BLOCK = 1 << 24
"""Bytes per ranged request of a remote read (16 MiB): few round trips, bounded memory."""
STORE_REQUESTS = 16
"""Requests to a store at once where injc asks about many objects (each a round trip)."""
SECRET_OPTIONS = ("key", "secret", "token", "password", "credentials", "aws_access_key_id",
                  "aws_secret_access_key", "aws_session_token", "account_key", "sas_token")
"""storage_options that would carry a credential into the plan, and so into the manifest."""
EXTRA = "pip install -e '.[remote]'"


def is_url(value: str) -> bool:
    return bool(URL.match(str(value)))


def is_remote(value) -> bool:
    """Whether a value is an object-storage path (a UPath of a remote store), as plans hold them."""
    return type(value).__module__.startswith("upath.") and not isinstance(value, Path)


def secret_options(options: dict) -> list[str]:
    """The keys of `options` (nested tables included) that hold a credential."""
    found = []
    for key, value in options.items():
        if key.lower() in SECRET_OPTIONS:
            found.append(key)
        elif isinstance(value, dict):
            found += [f"{key}.{inner}" for inner in secret_options(value)]
    return found


def remote_path(url: str, storage_options: dict | None = None):
    """The UPath of `url` (fsspec's filesystem for its scheme, with the plan's options)."""
    try:
        from upath import UPath
    except ImportError:
        raise InputError(f"{url!r}: reading object storage needs universal-pathlib and the store's fsspec "
                         f"backend: {EXTRA}") from None
    try:
        return UPath(url, **(storage_options or {}))
    except (ImportError, ValueError) as error:  # fsspec names the missing backend (s3fs, gcsfs) in its message
        raise InputError(f"{url!r} cannot be opened: {error}") from None


def expand(url: str, storage_options: dict | None = None) -> list:
    """The files a URL names: itself, or every file its glob matches, sorted (fsspec's glob)."""
    path = remote_path(url, storage_options)
    protocol = url.split("://", 1)[0]
    try:
        if not any(c in url for c in "*?["):
            matches = [path.path] if path.is_file() else []
        else:
            matches = [m for m in sorted(path.fs.glob(path.path)) if path.fs.isfile(m)]
        bucket = path.path.split("/", 1)[0]
        if not matches and not path.fs.exists(bucket):
            raise InputError(f"{url!r}: bucket {bucket!r} does not exist (or these credentials cannot see it)")
    except InputError:
        raise
    except Exception as error:  # fsspec backends raise their clients' own errors (botocore's, aiohttp's)
        raise InputError(f"{url!r} cannot be listed: {describe(error)}") from None
    return [path if m == path.path else remote_path(f"{protocol}://{m}", storage_options) for m in matches]


def describe(error: BaseException) -> str:
    """One line for a store's error (botocore's and fsspec's messages run long)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:300]


def open_binary(path, block_size: int = READ_BLOCK, digest: bool = False):
    """A local file's or a remote object's bytes, read in large blocks. With `digest` (a corpus reader streaming
    the object), a remote object read whole, front to back, leaves its sha256 behind (`streamed_sha256`)."""
    if isinstance(path, Path):
        return open(path, "rb")
    handle = path.open("rb", block_size=block_size)
    return _Digesting(handle, identity_key(path, _identity_of(handle.details))) if digest else handle


def identity(path, fresh: bool = False) -> dict:
    """A remote object's size and content identity as its store reports them (ETag, version, generation): from
    fsspec's listing cache where it holds the object, else (and always when `fresh`) asked of the store."""
    if fresh:
        path.fs.invalidate_cache(path.path)
    return _identity_of(path.fs.info(path.path))


def listed_identities(paths: list) -> list[dict]:
    """Each object's identity as its store lists it now, asked once per folder rather than once per object (a
    corpus is many objects in a few folders; each question is a round trip); {} for an object no longer there."""
    listed: dict[tuple, dict] = {}
    for path in paths:
        parent = path.parent.path
        if (id(path.fs), parent) not in listed:
            path.fs.invalidate_cache(parent)
            try:
                entries = path.fs.ls(parent, detail=True)
            except FileNotFoundError:  # the folder (or bucket) is gone: so are its objects
                entries = []
            except Exception as error:  # the store's client's own errors (botocore's, aiohttp's)
                raise InputError(f"{str(path.parent)!r} cannot be listed: {describe(error)}") from None
            listed[id(path.fs), parent] = {info["name"].rstrip("/"): info for info in entries}
    found = [listed[id(path.fs), path.parent.path].get(path.path.rstrip("/")) for path in paths]
    return [_identity_of(info) if info is not None else {} for info in found]


def _identity_of(info: dict) -> dict:
    found = {"size": int(info.get("size") or info.get("Size") or 0)}
    for key in ("ETag", "etag", "VersionId", "version_id", "generation", "md5Hash"):
        if info.get(key):
            found[key.lower()] = str(info[key]).strip('"')
    return found


def same_object(recorded: dict, found: dict) -> bool:
    """Whether two identities of an object name the same bytes: the same size, and equal in every other field both
    carry (a listing gives no version id where a HEAD request does)."""
    return "size" in found and all(recorded[key] == found[key] for key in recorded.keys() & found.keys())


KEY_FIELDS = ("size", "etag", "generation")
"""The identity fields that every way of asking a store carries (a listing and a HEAD request alike)."""


def identity_key(path, known: dict | None = None) -> str:
    """What names a remote object's bytes: its URL with its size and ETag (or generation), from `known` where the
    caller has its identity."""
    found = identity(path) if known is None else known
    return f"{path}|{json.dumps({k: found[k] for k in KEY_FIELDS if k in found}, sort_keys=True)}"


_streamed: dict[str, str | Future] = {}
"""sha256 of the remote objects this process read whole from the front, by `identity_key` (a Future while the
digest is still being computed)."""


def streamed_sha256(key: str) -> str | None:
    """The sha256 of the object `key` names, where a reader in this process read every byte of it in order."""
    found = _streamed.get(key)
    return found.result() if isinstance(found, Future) else found


class _Digesting(io.RawIOBase):
    """A remote object's file that hashes the bytes read in order from its start; at its end the sha256 is kept
    (by `identity_key`, taken when it was opened), so a build that streams an object need not read it again to
    record its sha256. A seek elsewhere than where the reads have got to stops the hashing."""

    def __init__(self, handle, key: str):
        super().__init__()
        self._handle, self._key, self._digest, self._hashed = handle, key, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._handle.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        position = self._handle.seek(offset, whence)
        if position != self._hashed:
            self._digest = None
        return position

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[:len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        if self._digest is not None:
            self._digest.update(data)
            self._hashed += len(data)
            if self._hashed >= self._handle.size:
                _streamed[self._key] = self._digest.hexdigest()
                self._digest = None
        return data

    def close(self) -> None:
        self._handle.close()
        super().close()


def folder(where: str | Path):
    """A folder on disk (a Path) or a prefix in object storage (a UPath): both take `/`, `.is_file()`,
    `.read_text()`."""
    return remote_path(str(where)) if is_url(str(where)) else Path(where)


def load_npy(path) -> np.ndarray:
    """A .npy file on disk or in object storage (object arrays refused)."""
    with open_binary(path) as handle:
        return np.load(handle)  # numpy refuses object arrays by default


def row_blocks(path, dtype: np.dtype, seq_len: int, per_block: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, [rows, seq_len] block) of a token file, `per_block` rows at a time: views of a memory map on
    disk, one ranged read each in object storage."""
    if isinstance(path, Path):
        rows = np.memmap(path, dtype=dtype, mode="r").reshape(-1, seq_len)
        for start in range(0, len(rows), per_block):
            yield start, np.asarray(rows[start:start + per_block])
        return
    row_bytes = seq_len * dtype.itemsize
    with open_binary(path, per_block * row_bytes) as handle:
        start = 0
        while data := handle.read(per_block * row_bytes):
            block = np.frombuffer(data, dtype=dtype).reshape(-1, seq_len)
            yield start, block
            start += len(block)


def read_pieces(paths: list, start: tuple[int, int], piece: int, depth: int) -> Iterator[tuple[int, int, bytes]]:
    """(object index, byte offset, bytes) of the objects `paths` in order from byte start[1] of object start[0], in
    pieces of `piece` bytes, `depth` ranged requests in flight at once across objects (as parallel downloaders
    do: one request at a time leaves a store's bandwidth idle during each round trip). An object read whole from
    its start leaves its sha256 behind (`streamed_sha256`). A caller that stops early cancels what is queued."""
    def planned():
        for index in range(start[0], len(paths)):
            known = identity(paths[index])
            for offset in range(start[1] if index == start[0] else 0, known["size"], piece):
                yield index, offset, min(offset + piece, known["size"]), known

    pool, hasher = ThreadPoolExecutor(depth), ThreadPoolExecutor(1)  # the hashing, in order, beside the caller
    pending: deque = deque()
    plan = planned()

    def fill() -> None:
        for index, offset, end, known in itertools.islice(plan, depth - len(pending)):
            pending.append((index, offset, end, known, pool.submit(_read_range, paths[index], offset, end)))

    try:
        fill()
        digest = None
        while pending:
            index, offset, end, known, future = pending.popleft()
            fill()
            data = future.result()
            if offset == 0:
                digest = hashlib.sha256()
            if digest is not None:
                hasher.submit(digest.update, data)
                if end == known["size"]:
                    _streamed[identity_key(paths[index], known)] = hasher.submit(digest.hexdigest)
                    digest = None
            yield index, offset, data
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        hasher.shutdown(wait=False)  # the digests queued still complete


def _read_range(path, begin: int, end: int) -> bytes:
    try:
        data = path.fs.cat_file(path.path, start=begin, end=end)
    except Exception as error:  # the store's client's own errors (botocore's, aiohttp's), FileNotFoundError
        raise InputError(f"{str(path)!r} cannot be read: {describe(error)}") from None
    if len(data) != end - begin:
        raise InputError(f"{str(path)!r}: the store returned {len(data):,} bytes of {end - begin:,} asked for "
                         f"(it changed while being read?)")
    return data
