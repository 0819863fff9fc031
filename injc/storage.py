"""Inputs in object storage: corpus paths given as fsspec URLs (`s3://`, `gs://`, `r2://`..., `file://`), read
through universal-pathlib's `UPath` (pathlib's interface over fsspec), so the readers treat a remote file as a
local one: `.open("rb")`, `.stat()`, `.name`.

Reads stream in large ranged requests (READ_BLOCK bytes each); nothing is copied to local disk first.
Credentials come from each library's usual places (the environment, ~/.aws, gcloud's files); a plan's
`storage_options` may name only where and how to connect (an endpoint, a profile, a region), since the plan is
copied into the manifest. A URL is recorded as it was given, with the size, the store's content identity (ETag,
version) and the sha256 injc computed over its bytes.
"""

import re
from pathlib import Path

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
