"""Export folders that were edited, truncated or half-copied: `injc verify` and `injc locate` answer in one line
(a mismatch, exit 1, or bad input, exit 2) and never read a row from a row map they have not checked."""

import hashlib
import json

import numpy as np
import pytest

import injc
from injc.shards.exports import export
from tests.shards.test_exports import built  # noqa: F401  (the fixture)
from tests.test_cli import assert_user_error
from tests.test_cli import injc as run_injc

pytest.importorskip("torch")


def rewrite_rows(folder, rows, update_hash: bool) -> None:
    """Save a new rows.npy, and (as a careful hand edit would) its sha256 into export.json."""
    np.save(folder / "rows.npy", rows)
    if update_hash:
        record = json.loads((folder / "export.json").read_text())
        record["rows"]["sha256"] = hashlib.sha256((folder / "rows.npy").read_bytes()).hexdigest()
        (folder / "export.json").write_text(json.dumps(record))


def edit_record(folder, change) -> None:
    record = json.loads((folder / "export.json").read_text())
    change(record)
    (folder / "export.json").write_text(json.dumps(record))


def test_verify_refuses_a_folder_that_is_neither_a_build_nor_an_export(built, tmp_path):  # noqa: F811
    (tmp_path / "empty").mkdir()
    assert_user_error(run_injc("verify", tmp_path / "empty"), "is neither an injc build", "nor an export")
    assert_user_error(run_injc("verify", built.parent / "shards"), "is neither an injc build",
                      "the one above shards/")
    assert_user_error(run_injc("verify", tmp_path / "missing"), "does not exist")
    assert run_injc("verify", built.parent).returncode == 0


def test_locate_refuses_a_row_map_that_differs_from_its_recorded_hash(built, tmp_path):  # noqa: F811
    export(built, "olmo-core", tmp_path / "olmo", seed=5)
    rows = np.load(tmp_path / "olmo" / "rows.npy")
    rows[[0, 1]] = rows[[1, 0]]
    rewrite_rows(tmp_path / "olmo", rows, update_hash=False)
    result = run_injc("locate", built, "--experiment", "canaries", "--export", tmp_path / "olmo")
    assert_user_error(result, "rows.npy: sha256 differs from export.json")
    assert run_injc("verify", tmp_path / "olmo").returncode == 1


@pytest.mark.parametrize("damage", ["duplicate", "negative", "huge", "truncated"])
def test_row_maps_that_are_no_permutation_are_refused_by_locate_and_verify(built, tmp_path, damage):  # noqa: F811
    """Each hash updated to match, so only the contents can tell: nothing is read at a wrong or invalid row."""
    export(built, "nanogpt", tmp_path / "nano")
    rows = np.load(tmp_path / "nano" / "rows.npy")
    if damage == "duplicate":
        rows[5] = rows[6]
    elif damage == "negative":
        rows = rows.astype(np.int64)
        rows[3] = -1
    elif damage == "huge":
        rows[2] = 10 ** 12
    rewrite_rows(tmp_path / "nano", rows, update_hash=True)
    if damage == "truncated":
        path = tmp_path / "nano" / "rows.npy"
        path.write_bytes(path.read_bytes()[:-20])
        edit_record(tmp_path / "nano", lambda r: r["rows"].pop("sha256"))
    located = run_injc("locate", built, "--experiment", "canaries", "--export", tmp_path / "nano")
    assert_user_error(located, "rows.npy")
    verified = run_injc("verify", tmp_path / "nano")
    assert verified.returncode == 1 and "rows.npy" in verified.stderr and "Traceback" not in verified.stderr


@pytest.mark.parametrize("damage,message", [
    ("not json", "is not valid JSON"),
    ("no rows", "lacks rows"),
    ("no target", "lacks target"),
    ("no spare document", "lacks loader.spare_document"),
])
def test_broken_export_records_are_one_line_for_verify_and_locate(built, tmp_path, damage, message):  # noqa: F811
    export(built, "megatron", tmp_path / "meg", seed=3)
    folder = tmp_path / "meg"
    if damage == "not json":
        (folder / "export.json").write_text("{ this is not json")
    else:
        key = {"no rows": ("rows",), "no target": ("target",), "no spare document": ("loader", "spare_document")}
        path = key[damage]
        edit_record(folder, lambda r: (r[path[0]] if len(path) == 2 else r).pop(path[-1]))
    assert_user_error(run_injc("verify", folder), message)
    assert_user_error(run_injc("locate", built, "--experiment", "canaries", "--export", folder), message)


def test_locate_json_with_insertions_found_is_valid_json(built):  # noqa: F811
    result = run_injc("locate", built, "--experiment", "canaries", "--item", "0", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    items = injc.open_stream(built)  # the tokens searched are the item's own, as plain ints
    assert report["inserted"] == 3 and all(isinstance(t, int) for t in report["queries"][0]["tokens"])
    first = report["occurrences"][0]["offset"]
    assert items.tokens(first, first + len(report["queries"][0]["tokens"])).tolist() == \
        report["queries"][0]["tokens"]
