"""Strict reading of TOML tables: every problem is collected, with its TOML location, instead of stopping at the first.

Each section of a plan is read through a `TableReader`: typed getters record a problem and return a placeholder
when a value is missing or wrong, and `finish()` reports keys nobody asked for. The plan loader raises one
`PlanError` listing every problem at the end.
"""

import difflib
from pathlib import Path
from typing import Any

from injc.errors import InputError
from injc.hfdata import is_saved_dataset
from injc.storage import describe, is_url, remote_path

REQUIRED = object()


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


class TableReader:
    """Reads typed keys from one TOML table, recording problems as `where.key: message`."""

    def __init__(self, table: Any, where: str, problems: list[str]):
        self.where = where
        self.problems = problems
        if not isinstance(table, dict):
            self.problem(f"expected a table, got {_type_name(table)}", key=None)
            table = {}
        self.table = table
        self.used: set[str] = set()
        self.saved_datasets = False
        """Whether `path` also takes a saved Hugging Face dataset folder (an experiment's payload inputs)."""

    def problem(self, message: str, key: str | None) -> None:
        location = f"{self.where}.{key}" if key else self.where
        self.problems.append(f"{location}: {message}")

    def has(self, key: str) -> bool:
        return key in self.table

    def get(self, key: str, default: Any) -> Any:
        """The raw value of `key` (marked as used), `default` when absent; a missing required key is a problem."""
        self.used.add(key)
        if key in self.table:
            return self.table[key]
        if default is REQUIRED:
            self.problem("missing required key", key)
            return None
        return default

    def int(self, key: str, default: Any = REQUIRED, *, min: int | None = None, max: int | None = None) -> Any:
        value = self.get(key, default)
        if key not in self.table:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(f"expected an integer, got {_type_name(value)} {value!r}", key)
            return None
        if min is not None and value < min:
            self.problem(f"must be ≥ {min:,}, got {value:,}", key)
            return None
        if max is not None and value > max:
            self.problem(f"must be ≤ {max:,}, got {value:,}", key)
            return None
        return value

    def number(self, key: str, default: Any = REQUIRED, *, min: float | None = None) -> Any:
        value = self.get(key, default)
        if key not in self.table:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(f"expected a number, got {_type_name(value)} {value!r}", key)
            return None
        if min is not None and value < min:
            self.problem(f"must be ≥ {min}, got {value}", key)
            return None
        return float(value)

    def str(self, key: str, default: Any = REQUIRED, *, choices: tuple[str, ...] | None = None) -> Any:
        value = self.get(key, default)
        if key not in self.table:
            return value
        if not isinstance(value, str):
            self.problem(f"expected a string, got {_type_name(value)} {value!r}", key)
            return None
        if choices is not None and value not in choices:
            self.problem(f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
                         + did_you_mean(value, choices), key)
            return None
        if not value and default is REQUIRED:
            self.problem("must not be empty", key)
            return None
        return value

    def str_list(self, key: str, default: Any = REQUIRED) -> Any:
        value = self.get(key, default)
        if key not in self.table:
            return value
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value) or not value:
            self.problem(f"expected a non-empty array of strings, got {value!r}", key)
            return None
        return value

    def int_list(self, key: str, default: list[int], minimum: int) -> list[int] | None:
        """A non-empty array of integers ≥ minimum (default when absent)."""
        value = self.get(key, None)
        if value is None:
            return list(default)
        if (not isinstance(value, list) or not value
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value)):
            self.problem(f"expected a non-empty array of integers ≥ {minimum}, got {value!r}", key)
            return None
        return list(value)

    def path(self, key: str, base: Path, default: Any = REQUIRED) -> Any:
        """An existing file; relative paths are relative to `base` (the plan's folder) and may not leave it. With
        `saved_datasets` set (an experiment's inputs), also a folder that `save_to_disk` wrote."""
        value = self.str(key, default)
        if not isinstance(value, str) or key not in self.table:
            return value
        if is_url(value):  # an object in storage: the store's endpoint and credentials from the environment
            return self._remote(key, value)
        path = resolve_path(value, base, lambda message: self.problem(message, key))
        if path is not None and path.is_dir() and self.saved_datasets and not is_saved_dataset(path):
            self.problem(f"{str(path)!r} is a folder but not a saved Hugging Face dataset (no state.json or "
                         "dataset_dict.json: write it with save_to_disk)", key)
        elif path is not None and not path.is_file() and not (path.is_dir() and self.saved_datasets):
            self.problem(f"file {str(path)!r} not found", key)
        return path

    def _remote(self, key: str, url: str):
        try:
            path = remote_path(url)
            if not path.is_file():
                self.problem(f"{url!r} is not an object in its store (a saved dataset must be a local folder)", key)
        except InputError as error:
            self.problem(str(error), key)
            return None
        except Exception as error:  # the store's client raises its own errors (botocore's, aiohttp's)
            self.problem(f"{url!r} cannot be read: {describe(error)}", key)
            return None
        return path

    def finish(self) -> None:
        """Report every key nobody asked for, with the closest known key when one is close."""
        for key in sorted(set(self.table) - self.used):
            self.problem("unknown key" + did_you_mean(key, self.used), key)


def did_you_mean(word: str, known) -> str:
    """'; did you mean 'x'?' when one known word is close to `word`: the same but for case ('OLMo-core'), the start
    of only one of them ('olmo'), or a typo; else ''."""
    lowered = {str(name).lower(): name for name in known}
    key = str(word).lower()
    starting = [name for low, name in sorted(lowered.items()) if low.startswith(key)] if len(key) >= 3 else []
    close = ([lowered[key]] if key in lowered else starting if len(starting) == 1 else
             [lowered[m] for m in difflib.get_close_matches(key, sorted(lowered), n=1, cutoff=0.7)])
    return f"; did you mean {close[0]!r}?" if close else ""


def resolve_path(value: str, base: Path, report) -> Path | None:
    """Resolve a plan path: absolute as given, relative against `base`; a relative path may not escape `base`."""
    path = Path(value)
    if path.is_absolute():
        return path
    if ".." in path.parts:
        report(f"relative path {value!r} may not contain '..'; give an absolute path to read outside the plan's folder")
        return None
    return base / path
