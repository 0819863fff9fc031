"""A real S3 endpoint for the tests of object storage (a pytest plugin, loaded by tests/conftest.py): moto's
standalone server, started on a free port as its own process and read through s3fs, with credentials in the
environment as a user's would be."""

import os
import socket
import subprocess
import sys
import time

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(environment: dict | None = None) -> tuple[subprocess.Popen, str]:
    """moto's standalone S3 server on a free port, once it accepts connections; (process, endpoint URL)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, **(environment or {})})
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def endpoint():
    """moto's S3 server as its own process, over HTTP; the credentials in the environment, as a user's would be."""
    pytest.importorskip("moto")
    server, url = start_server()
    saved = {key: os.environ.get(key) for key in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    try:
        yield url
    finally:
        server.terminate()
        server.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def bucket(endpoint, project, request):
    """The project's corpus uploaded to a fresh bucket; returns (s3 filesystem, bucket name)."""
    s3fs = pytest.importorskip("s3fs")
    pytest.importorskip("upath")
    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    name = f"corpus-{request.node.name[:20].lower().replace('_', '-')}-{time.monotonic_ns() % 10**6}"
    fs.mkdir(name)
    for path in sorted((project.root / "data").iterdir()):
        fs.put_file(str(path), f"{name}/data/{path.name}")
    fs.invalidate_cache()
    return fs, name


def remote_corpus(endpoint: str, pattern: str) -> str:
    return f'paths = ["{pattern}"]\nformat = "jsonl"\nstorage_options = {{ endpoint_url = "{endpoint}" }}'
