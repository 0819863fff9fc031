"""Object storage: corpus and payload paths given as fsspec URLs (`s3://`, `gs://`, `r2://`..., `file://`), and
exports read where they were uploaded, through universal-pathlib's `UPath` (pathlib's interface over fsspec), so
the readers treat a remote file as a local one: `.open("rb")`, `.stat()`, `.name`.

Reads stream in large ranged requests (READ_BLOCK bytes each); nothing is copied to local disk first.
Credentials come from each library's usual places (the environment, ~/.aws, gcloud's files); a plan's
`storage_options` may name only where and how to connect (an endpoint, a profile, a region), since the plan is
copied into the manifest. A URL is recorded as it was given, with the size, the store's content identity (ETag,
version) and the sha256 injc computed over its bytes.
"""

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from injc.errors import InputError

URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
READ_BLOCK = 1 << 24
"""Bytes per ranged request of a remote read (16 MiB): few round trips, bounded memory."""
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


def open_binary(path, block_size: int = READ_BLOCK):
    """A local file's or a remote object's bytes, read in large blocks."""
    if isinstance(path, Path):
        return open(path, "rb")
    return path.open("rb", block_size=block_size)


def identity(path) -> dict:
    """A remote object's size and content identity as its store reports them (ETag, version, generation)."""
    info = path.fs.info(path.path)
    found = {"size": int(info.get("size") or info.get("Size") or 0)}
    for key in ("ETag", "etag", "VersionId", "version_id", "generation", "md5Hash"):
        if info.get(key):
            found[key.lower()] = str(info[key]).strip('"')
    return found


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
