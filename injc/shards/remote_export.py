"""Exports in object storage: `injc export --to olmo-core --out s3://bucket/prefix`, for OLMo-core, which reads its
numpy files from S3, GCS and R2 itself.

The export is written as a local one (the row permutation writes its files at random offsets, which an object
store cannot take), in a temporary folder, then uploaded: every data file and rows.npy first, export.json last, so
an upload cut short is never taken for an export (readers look for export.json). The store's endpoint and
credentials come from the libraries' usual places (AWS_ENDPOINT_URL, ~/.aws, ...). `injc verify` and `injc locate
--export` read such an export where it is (injc.shards.exports reads through injc.storage).
"""

import json
import tempfile
from pathlib import Path

from injc.errors import InjcError
from injc.shards.exports import EXPORT_NAME, export, read_record
from injc.shards.manifest import MANIFEST_NAME, load_manifest
from injc.storage import describe, folder


def export_to_store(manifest_path: str | Path, target: str, url: str, seed: int | None = None) -> str:
    """An OLMo-core export of the build, written in a temporary folder and uploaded to `url`; returns export.json's
    URL. The same command again finds this build's export there and does nothing."""
    if target != "olmo-core":
        raise InjcError(f"--out {url!r}: only --to olmo-core is written to object storage (OLMo-core reads its files "
                        f"from there); write the {target} export to a local folder")
    manifest = load_manifest(manifest_path)
    if manifest.until_step < manifest.layout.steps:
        raise InjcError("a staged build's export grows in place: write it to a local folder")
    destination = folder(url)
    try:
        present = (destination / EXPORT_NAME).is_file()
    except Exception as error:  # the store's client raises its own errors (botocore's, aiohttp's)
        raise InjcError(f"--out {url!r} cannot be read: {describe(error)}") from None
    if present:
        record = read_record(url)
        if record["manifest"]["checksum"] != manifest.data.get("checksum") or \
                (record["target"], record["seed"]) != (target, seed):
            raise InjcError(f"--out {url!r} holds another export (of another build or seed); pick another --out")
        return str(destination / EXPORT_NAME)
    with tempfile.TemporaryDirectory(prefix="injc-export-") as scratch:
        local = Path(scratch) / "export"
        export(manifest_path, target, local, seed)
        record = json.loads((local / EXPORT_NAME).read_text(encoding="utf-8"))
        record["manifest"]["path"] = str((manifest.root / MANIFEST_NAME).resolve())  # no longer beside the build
        try:
            for name in [f["path"] for f in record["files"]] + [record["rows"]["path"]]:
                destination.fs.put_file(str(local / name), (destination / name).path)
            (destination / EXPORT_NAME).write_text(json.dumps(record, indent=2) + "\n")  # last: the export is whole
        except Exception as error:
            raise InjcError(f"cannot write the export to {url!r}: {describe(error)}") from None
    return str(destination / EXPORT_NAME)
