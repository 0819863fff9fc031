"""`injc export --to olmo-core --out s3://…`: the export uploaded to a real S3 endpoint (moto's server), export.json
last; `injc verify` and `injc locate --export` read it there."""

import json

import pytest
from click.testing import CliRunner

import injc
from injc.cli import main
from injc.storage import folder
from tests.conftest import CANARIES

pytest.importorskip("s3fs")


def run(endpoint, *arguments):
    return CliRunner().invoke(main, [str(a) for a in arguments], env={"AWS_ENDPOINT_URL": endpoint})


def test_an_olmo_core_export_in_s3_is_the_local_export_and_is_verified_and_located_there(endpoint, bucket, project,
                                                                                         tmp_path, monkeypatch):
    fs, name = bucket
    injc.build(project(CANARIES), tmp_path / "build", progress=False)
    manifest = tmp_path / "build" / "manifest.json"
    url = f"s3://{name}/olmo"
    local = run(endpoint, "export", manifest, "--to", "olmo-core", "--seed", 5, "--out", tmp_path / "olmo")
    assert local.exit_code == 0, local.output

    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    store = folder(url).fs  # the file system the export uploads through (fsspec keeps one per set of options)
    put_file, uploaded = store.put_file, []

    def cut_short(source, destination, **kwargs):  # the connection drops after the first file
        if uploaded:
            raise ConnectionError("connection reset by peer")
        uploaded.append(destination)
        return put_file(source, destination, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(store, "put_file", cut_short)
        failed = run(endpoint, "export", manifest, "--to", "olmo-core", "--seed", 5, "--out", url)
    assert failed.exit_code == 2 and "cannot write the export" in failed.output and "connection reset" in failed.output
    assert not fs.exists(f"{name}/olmo/export.json")  # a half upload is never taken for an export
    assert run(endpoint, "verify", url).exit_code == 2

    written = run(endpoint, "export", manifest, "--to", "olmo-core", "--seed", 5, "--out", url)
    assert written.exit_code == 0, written.output
    record = json.loads(fs.cat_file(f"{name}/olmo/export.json"))
    mine = json.loads((tmp_path / "olmo" / "export.json").read_text())
    assert record["manifest"]["path"] == str(manifest.resolve()) and record["files"] == mine["files"]
    for entry in record["files"] + [record["rows"]]:
        assert fs.cat_file(f"{name}/olmo/{entry['path']}") == (tmp_path / "olmo" / entry["path"]).read_bytes()
    verified = run(endpoint, "verify", url)
    assert verified.exit_code == 0, verified.output
    located = [run(endpoint, "locate", manifest, "--experiment", "canaries", "--export", where).output
               for where in (tmp_path / "olmo", url)]
    assert located[0] == located[1] and "→ part-00000.npy row" in located[0]
    again = run(endpoint, "export", manifest, "--to", "olmo-core", "--seed", 5, "--out", url)
    assert again.exit_code == 0  # this build's export is there already

    first = record["files"][0]["path"]
    data = bytearray(fs.cat_file(f"{name}/olmo/{first}"))
    data[100] ^= 1
    fs.pipe_file(f"{name}/olmo/{first}", bytes(data))
    checked = run(endpoint, "verify", url)
    assert checked.exit_code == 1 and f"{first}: sha256 differs from export.json" in checked.output
    other = run(endpoint, "export", manifest, "--to", "olmo-core", "--seed", 6, "--out", url)
    assert other.exit_code == 2 and "holds another export" in other.output
    megatron = run(endpoint, "export", manifest, "--to", "megatron", "--seed", 5, "--out", f"s3://{name}/meg")
    assert megatron.exit_code == 2 and "only --to olmo-core is written to object storage" in megatron.output


def test_olmo_cores_own_loader_reads_the_export_from_s3_step_exact(endpoint, bucket, project, tmp_path, monkeypatch):
    """OLMo-core's NumpyFSLDataset given the export's s3:// URLs (its own S3 client, the endpoint from
    AWS_ENDPOINT_URL) and its default data loader serve the manifest's step k at step k."""
    pytest.importorskip("olmo_core")
    from tests.shards.test_exports import LAYOUT, olmo_core_batches, steps_served

    fs, name = bucket
    built = injc.build(project(CANARIES, layout=LAYOUT, extra_layout="shard_tokens = 2560"), tmp_path / "build",
                       progress=False).manifest_path
    url = f"s3://{name}/olmo-loader"
    assert run(endpoint, "export", built, "--to", "olmo-core", "--seed", 1234, "--out", url).exit_code == 0
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    record = json.loads(fs.cat_file(f"{name}/olmo-loader/export.json"))
    files = [f"{url}/{f['path']}" for f in record["files"]]
    served = steps_served(olmo_core_batches(files, 1234, tmp_path / "work"), injc.open_stream(built))
    assert len(served) == 40 and all(served)
