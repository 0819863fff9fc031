"""The manifest: the public, versioned description of a build (docs/format.md has every field).

Written with sorted keys and no timestamps, so the same plan and inputs give the same bytes.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from injc.errors import ManifestError
from injc.shards.files import write_atomic
from injc.shards.layout import Layout

FORMAT = "injc-manifest"
VERSION = 1
ROW_ORDER_VERSION = 2
"""A manifest whose shards hold the stream's rows in another order (`row_order`, `injc build --target`): a
reader of version 1 would take them in file order, so it must refuse such a build."""
MANIFEST_NAME = "manifest.json"
INSERTIONS_NAME = "insertions.parquet"
ITEMS_NAME = "items.parquet"
TOKENIZER_NAME = "tokenizer.json"
EVALS_FOLDER = "evals"
HOLDOUT_NAME = "holdout.bin"
SHARDS_FOLDER = "shards"


def same_stream(old_key: dict, new_key: dict) -> bool:
    """Whether a build with `new_key` continues the stream of one with `old_key`: everything equal, and each
    dynamic experiment's decided counts continuing the old ones."""
    rest = [{k: v for k, v in key.items() if k != "counts"} for key in (old_key, new_key)]
    old_counts, new_counts = old_key.get("counts", {}), new_key.get("counts", {})
    return (rest[0] == rest[1] and set(old_counts) == set(new_counts)
            and all(new_counts[name][:len(values)] == values for name, values in old_counts.items()))


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest; `root` is its folder, against which every relative path resolves."""

    root: Path
    data: dict

    @property
    def layout(self) -> Layout:
        layout = self.data["layout"]
        return Layout(layout["seq_len"], layout["batch_size"], layout["steps"])

    @property
    def until_step(self) -> int:
        """Steps written: the whole run, or fewer in a staged build (`injc build --until-step`)."""
        return self.data.get("until_step", self.data["layout"]["steps"])

    @property
    def written_tokens(self) -> int:
        return self.until_step * self.data["layout"]["tokens_per_step"]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data["layout"]["dtype"]).newbyteorder("<")

    @property
    def shards(self) -> list[dict]:
        return self.data["shards"]

    @property
    def row_order(self) -> dict | None:
        """`{target, seed, path, sha256}` when the shards hold the stream's rows in a trainer's order: file row i
        (shards concatenated) holds stream row rows[i] of the .npy at `path`; None when they are in stream order."""
        return self.data.get("row_order")

    @property
    def experiments(self) -> list[dict]:
        return self.data["experiments"]

    @property
    def insertions_path(self) -> Path:
        return self.root / self.data["insertions"]["path"]

    @property
    def variant(self) -> str:
        return self.data["variant"]

    @property
    def identity(self) -> dict:
        """What makes two builds the same training data: the plan, the layout and the stream's bytes.

        The bytes are named by the build key (plan, tokenizer, corpus files, seed, options: the stream is a pure
        function of it), so a staged build and the same build grown further share an identity; the decided counts
        of dynamic experiments are kept apart (`counts`), since a grown build continues them. Manifests without
        a build key fall back to the hash of every shard's hash. Recorded in every checkpoint (train_state.json),
        so a resume or an eval can tell which build it was.
        """
        layout = self.data["layout"]
        identity = {"plan_sha256": self.data["plan"]["sha256"],
                    "layout": {k: layout[k] for k in ("seq_len", "batch_size", "steps", "dtype")}}
        if "build_key" in self.data:
            key = {k: v for k, v in self.data["build_key"].items() if k != "counts"}
            identity["build_key_sha256"] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
            if "counts" in self.data["build_key"]:
                identity["counts"] = self.data["build_key"]["counts"]
        else:
            shards = "".join(shard["sha256"] for shard in self.shards)
            identity["shards_sha256"] = hashlib.sha256(shards.encode()).hexdigest()
        return identity


def identity_differences(recorded: dict | None, manifest: Manifest) -> list[str]:
    """How a checkpoint's recorded build differs from `manifest` ([] when it is the same build).

    Checkpoints written before identities were recorded carry only `plan_sha256`, which is compared alone.
    """
    current = manifest.identity
    recorded = recorded or {}
    if "plan_sha256" not in recorded:
        return ["it records no manifest (not written by injc train)"]
    differences = []
    if recorded["plan_sha256"] != current["plan_sha256"]:
        differences.append(f"plan sha256 {recorded['plan_sha256'][:12]}… ≠ {current['plan_sha256'][:12]}…")
    if "layout" in recorded and recorded["layout"] != current["layout"]:
        differences.append(f"layout {recorded['layout']} ≠ {current['layout']}")
    if "counts" in recorded and any(current.get("counts", {}).get(name, [])[:len(values)] != values
                                    for name, values in recorded["counts"].items()):
        differences.append("the dynamic experiments' decided counts differ")
    for name, what in (("build_key_sha256", "the builds' keys (inputs, seed, --clean or other options)"),
                       ("shards_sha256", "the shards' bytes")):
        if name in recorded and name in current and recorded[name] != current[name]:
            differences.append(f"{what} differ")
    return differences


def content_checksum(data: dict) -> str:
    """sha256 of the manifest's canonical JSON without its own `checksum` key: catches edits by hand."""
    body = {k: v for k, v in data.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def write_manifest(path: Path, data: dict) -> None:
    """Write the manifest with its checksum, atomically (the manifest's presence means the build is complete)."""
    data = {**data, "checksum": content_checksum(data)}
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))


def _require(data: dict, keys: tuple[str, ...], where: str, path: Path) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise ManifestError(f"manifest {str(path)!r}: {where} lacks {', '.join(missing)}")


def load_manifest(path: str | Path) -> Manifest:
    """Read and check a manifest's format, version and required fields; accepts the file or its folder."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ManifestError(f"manifest {str(path)!r} cannot be read: {error.strerror or error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"manifest {str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ManifestError(f"{str(path)!r} is not an injc manifest (format is not {FORMAT!r})")
    if data.get("version") not in (VERSION, ROW_ORDER_VERSION):
        raise ManifestError(f"manifest {str(path)!r} has version {data.get('version')!r}; this injc reads "
                            f"versions {VERSION} and {ROW_ORDER_VERSION}")
    if data["version"] == ROW_ORDER_VERSION:
        _require(data, ("row_order",), "a version 2 manifest", path)
    _require(data, ("layout", "shards", "insertions", "items", "experiments", "variant"), "the manifest", path)
    _require(data["layout"], ("seq_len", "batch_size", "steps", "total_tokens", "dtype", "eos_id"), "layout", path)
    return Manifest(path.parent, data)
