"""The output folder of a build: what `--force` may replace, the partial folder a killed build resumes from, the
staged build an `--until-step` build grows, and the swap that puts a finished build in place.

A build writes into `.OUT.injc-partial` beside OUT: each finished shard leaves a completion record under `done/`,
checked against its hash on resume; a staged build's finished shards seed the next stage (hard links, never
rewritten); the finished folder replaces OUT only when complete.
"""

import fcntl
import itertools
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from injc.errors import InjcError, some_of
from injc.shards.exports import EXPORT_NAME, ROWS_NAME
from injc.shards.files import sha256_array, sha256_file, write_atomic
from injc.shards.manifest import (
    EVALS_FOLDER,
    FORMAT,
    HOLDOUT_NAME,
    INSERTIONS_NAME,
    ITEMS_NAME,
    MANIFEST_NAME,
    SHARDS_FOLDER,
    TOKENIZER_NAME,
    same_stream,
)
from injc.shards.olmo_core import OlmoCoreFiles


def resume_state(partial: Path, key: dict, read_back: Callable[[], OlmoCoreFiles] | None = None) -> list[dict]:
    """Completion records of shards a previous run of the same build finished and that are still intact.

    A partial folder of a different build (other plan, inputs, flags or injc version) is discarded. A shard
    written into a trainer's order (no path) is read back through the files `read_back()` opens (once) and hashed.
    """
    key_path = partial / "build.json"
    if partial.is_dir() and (not key_path.is_file() or json.loads(key_path.read_text()) != key):
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    write_atomic(key_path, json.dumps(key, sort_keys=True).encode())
    (partial / "done").mkdir(exist_ok=True)
    records, files = [], None
    for index in itertools.count():
        record_path = partial / "done" / f"{index:05d}.json"
        if not record_path.is_file():
            break
        record = json.loads(record_path.read_text())
        shard = record["shard"]
        if shard["path"] is None:
            try:
                files = files or (read_back() if read_back else None)
            except OSError:
                break
            if files is None or sha256_array(files.read(shard["first_token"], shard["num_tokens"])) != shard["sha256"]:
                break
        elif not (partial / shard["path"]).is_file() or sha256_file(partial / shard["path"]) != shard["sha256"]:
            break
        records.append(record)
    if files is not None:
        files.close()
    for stale in (partial / "done").glob("*.json"):
        if int(stale.stem) >= len(records):
            stale.unlink()
    return records


BUILD_ENTRIES = {MANIFEST_NAME, INSERTIONS_NAME, ITEMS_NAME, TOKENIZER_NAME, HOLDOUT_NAME, EVALS_FOLDER, SHARDS_FOLDER}
"""Everything a finished build folder holds: `--force` replaces a folder holding these and nothing else."""


def is_injc_build(folder: Path) -> bool:
    """A finished injc build: its manifest says so, and it holds nothing injc did not write."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return False
    entries = BUILD_ENTRIES | ({EXPORT_NAME, ROWS_NAME} if data.get("row_order") else set())
    return all(entry.name in entries for entry in folder.iterdir())


def check_output(out_dir: Path, inputs: list[Path], force: bool) -> None:
    """Refuse any --out whose replacement could destroy a user's files.

    Never: a folder that holds one of the plan's inputs (or is one). Without `force`: anything non-empty.
    With `force`: only an earlier injc build (see `is_injc_build`) or an empty folder.
    """
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise InjcError(f"--out {str(out_dir)!r} is a file, not a folder")
    resolved = out_dir.resolve()
    for path in (path for path in inputs if isinstance(path, Path)):  # objects in storage are never under --out
        target = path.resolve()
        if target == resolved or resolved in target.parents:
            raise InjcError(f"--out {str(out_dir)!r} holds the plan's input {str(path)!r}; a build never "
                            f"replaces its own inputs: pick another --out")
    entries = sorted(entry.name for entry in out_dir.iterdir())
    if not entries:
        return
    if not force:
        raise InjcError(f"output {str(out_dir)!r} already exists and is not empty; pass --force to replace an "
                        f"earlier injc build")
    if not is_injc_build(out_dir):
        raise InjcError(f"--force replaces only an earlier injc build or an empty folder; {str(out_dir)!r} is "
                        f"neither (it holds {some_of(entries)}): move it away yourself or pick another --out")


def staged_build(out_dir: Path) -> dict | None:
    """The manifest of a staged build (one written with --until-step short of the run) in `out_dir`, or None."""
    try:
        data = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "until_step" in data and "stage" in data else None


def seed_from_stage(partial: Path, out_dir: Path, staged: dict) -> None:
    """Start the partial folder of an extension from the staged build's finished shards: hard links (copies
    where the file system has none), never rewritten; the stage's last, short shard is written anew. A build in a
    trainer's order writes every stage into the same full-size files: they are cloned (copied where the file system
    cannot clone) and the next stage writes its rows into the clones."""
    (partial / SHARDS_FOLDER).mkdir(parents=True, exist_ok=True)
    if staged.get("row_order") is not None:
        for shard in staged["shards"]:
            clone_file(out_dir / shard["path"], partial / shard["path"])
    for index, record in enumerate(staged["stage"]["done"]):
        path = record["shard"]["path"]
        target = partial / path if path is not None else None
        if target is not None and not target.exists():
            try:
                os.link(out_dir / path, target)
            except OSError:
                shutil.copyfile(out_dir / path, target)
        write_atomic(partial / "done" / f"{index:05d}.json", json.dumps(record).encode())


FICLONE = 0x40049409
"""Linux's ioctl that makes a copy-on-write clone (btrfs, XFS, bcachefs): no bytes copied."""


def clone_file(source: Path, target: Path) -> None:
    """`target` with `source`'s bytes: a copy-on-write clone where the file system makes one, else a copy."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        except OSError:
            shutil.copyfileobj(src, dst, 1 << 24)


def check_stage(out_dir: Path, staged: dict | None, key: dict, until_step: int, extend: bool, force: bool) -> bool:
    """Whether this build grows the staged build in `out_dir` (--force without --extend starts afresh);
    refuses an --extend that cannot."""
    if force and not extend:
        return False
    same_plan = staged is not None and same_stream(staged.get("build_key", {}), key)
    if extend and staged is None:
        raise InjcError(f"--extend: {str(out_dir)!r} holds no staged build (one written with --until-step short "
                        f"of the run; a complete build has nothing to extend); build it with --until-step first")
    if extend and not same_plan:
        old_key = staged.get("build_key", {})
        differs = sorted(k for k in key if k != "counts" and old_key.get(k) != key[k]) or ["the decided counts"]
        raise InjcError(f"--extend: {str(out_dir)!r} is a staged build of another plan or inputs (differing: "
                        f"{', '.join(differs)}); extend it with the plan and options it was built with")
    if same_plan and until_step <= staged["until_step"]:
        raise InjcError(f"{str(out_dir)!r} already holds steps [0, {staged['until_step']:,}); pass a larger "
                        f"--until-step (or none, for the whole run) to extend it")
    return same_plan
