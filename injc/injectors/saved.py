"""A saved Hugging Face dataset where an experiment reads a JSONL payload file (`file`, `questions`, `documents`,
`probes`, `hosts`, `prompts`, ...), with the experiment's field map.

    file = "data/arc-easy"          # a folder Dataset.save_to_disk or DatasetDict.save_to_disk wrote
    dataset_split = "test"          # a DatasetDict's split
    fields = { question = "question", choices = "choices.text", answer = "answerKey", labels = "choices.label" }

Each row becomes one record: its columns as they are, plus each injc field of `fields` taken from a dotted path
(`choices.text`) or a list of them (`choices = ["sol1", "sol2"]`). An `answer` becomes an index into the choices:
looked up among `labels` (a dotted path to the row's label list, ARC's `choices.label`), or an int or a digit
string minus `answer_base` (default 0; Winogrande's "1"/"2" take 1), or a letter (A = 0). Rows are numbered from 0
in messages.
"""

from pathlib import Path, PosixPath

from injc.errors import InputError
from injc.hfdata import offline_datasets, saved_files, saved_splits
from injc.shards.files import input_sha256

SPECIAL = ("labels", "answer_base")
"""Field map keys that steer the answer rather than name an injc field."""


class DatasetFolder(PosixPath):
    """The folder of a saved dataset, carrying the split and field map it is read with (kept when sent to another
    process)."""

    fields: dict
    split: str | None

    @classmethod
    def of(cls, folder: Path, fields: dict, split: str | None) -> "DatasetFolder":
        made = cls(folder)
        made.fields, made.split = fields, split
        return made

    def __reduce__(self):
        return DatasetFolder.of, (str(self), self.fields, self.split)

    def record(self) -> dict:
        """What the manifest records of it: its split's Arrow files, the dataset's fingerprint, split and fields."""
        files, state, _ = saved_files(self, self.split)
        return {"path": str(self), "split": self.split, "fields": self.fields, "fingerprint": state.get("_fingerprint"),
                "files": [{"path": str(p), "size": p.stat().st_size, "sha256": input_sha256(p)} for p in files]}


def split_problem(folder: Path, split: str | None) -> str | None:
    """Why `split` does not pick one dataset of the folder, or None."""
    splits = saved_splits(folder)
    if splits is None:
        return f"{str(folder)!r} holds one Dataset, not a DatasetDict: leave out dataset_split" if split else None
    if split is None:
        return f"{str(folder)!r} holds the splits {', '.join(splits)}: give dataset_split = one of them"
    if split not in splits:
        return f"{str(folder)!r} has no split {split!r} (its splits: {', '.join(splits)})"
    return None


def _dotted(row: dict, path: str):
    value = row
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


def _columns(row: dict, prefix: str = "") -> list[str]:
    """Every dotted path of a row (nested columns spelled out), to name what a field map can use."""
    names = []
    for key, value in row.items():
        names += _columns(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return names


def answer_index(value, labels: list | None, base: int):
    """The answer as an index into the choices; a value it cannot read is returned as it is (and reported by the
    experiment's own check of its records)."""
    if labels is not None:
        return labels.index(str(value)) if str(value) in map(str, labels) else value
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value - base
    if isinstance(value, str) and value.strip().isdigit():
        return int(value) - base
    if isinstance(value, str) and len(value.strip()) == 1 and "A" <= value.strip() <= "Z":
        return ord(value.strip()) - ord("A")
    return value


def _mapped(row: dict, fields: dict) -> dict:
    record = dict(row)
    for name, path in fields.items():
        if name not in SPECIAL:
            record[name] = [_dotted(row, p) for p in path] if isinstance(path, list) else _dotted(row, path)
    if "answer" in fields or "labels" in fields:
        labels = _dotted(row, fields["labels"]) if "labels" in fields else None
        record["answer"] = answer_index(record.get("answer"), labels, fields.get("answer_base", 0))
    return record


def read_saved(folder: DatasetFolder, experiment: str) -> tuple[list[dict], list[int]]:
    """(records, row numbers) of a saved dataset, each row mapped by the folder's field map."""
    datasets = offline_datasets()
    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        loaded = loaded[folder.split]
    rows = loaded.to_list()
    if not rows:
        raise InputError(f"experiment {experiment!r}: {str(folder)!r} holds no rows")
    try:
        records = [_mapped(row, folder.fields) for row in rows]
    except KeyError as error:
        raise InputError(f"experiment {experiment!r}: fields: {error.args[0]!r} is not in {str(folder)!r} (its "
                         f"columns: {', '.join(_columns(rows[0]))})") from None
    return records, list(range(len(rows)))
