"""Hugging Face `datasets` as the corpus (`[corpus] format = "hf"`).

Two sources, both read without a download (offline mode is forced before `datasets` is imported):
- a `save_to_disk` folder: a Dataset, or a DatasetDict and its `split` (default "train"). Its Arrow files are
  memory-mapped and read as row ranges of the text column, zero-copy;
- data files read by a `datasets` builder (`builder = "parquet"`, "json", "text", "arrow", "csv"):
  `load_dataset(builder, data_files=[file], split=..., streaming=True)`, one file at a time, in plan order; a
  data file may be an object in storage (`s3://...`), streamed through fsspec with the plan's storage_options.

Documents come in the dataset's order. Cursors are (file, document) as for injc's own readers: a saved dataset is
file 0 and its rows are the documents; a builder's data file is file i of the plan. A chunk for another process
(`--workers`, Ray) is a row range of the saved dataset, or one data file from a given row, so every way of reading
gives the same texts in the same order.

The plan is checked without importing `datasets`: a saved folder's state.json, dataset_info.json and
dataset_dict.json are plain JSON (its Arrow files, split names, columns and their types).
"""

from collections.abc import Iterator
from pathlib import Path

from injc.errors import InputError
from injc.hfdata import offline_datasets, saved_files

BUILDERS = ("parquet", "json", "text", "arrow", "csv")
ROWS_PER_CHUNK = 8192
"""Rows of a saved dataset per chunk: about one tokenizer batch of web text."""
STRING_TYPES = ("string", "large_string")


def manifest_record(corpus) -> dict:
    """What the manifest's `corpus` adds for a Hugging Face source: the saved dataset (folder, split, the
    fingerprint `datasets` gave it) or the builder and split."""
    if corpus.builder is not None:
        return {"builder": corpus.builder, "split": corpus.split or "train"}
    state = saved_files(corpus.dataset, corpus.split)[1]
    return {"dataset": {"path": str(corpus.dataset), "split": corpus.split, "fingerprint": state.get("_fingerprint")}}


def column_problem(features: dict, field: str, where: str) -> str | None:
    """Why the text column cannot be read as documents (missing, or not strings), or None."""
    if field not in features:
        return f"{where} has no column {field!r} (its columns: {', '.join(features)})"
    feature = features[field]
    kind = feature.get("dtype") if isinstance(feature, dict) else None
    if kind not in STRING_TYPES:
        return f"{where} column {field!r} is not strings (it is {kind or feature.get('_type', feature)})"
    return None


_opened: dict = {}


def _saved(corpus):
    """The saved split as a memory-mapped Dataset (opened once per process)."""
    key = (str(corpus.dataset), corpus.split, tuple((path, path.stat().st_mtime_ns) for path in corpus.files))
    if key not in _opened:
        datasets = offline_datasets()
        loaded = datasets.load_from_disk(str(corpus.dataset))
        _opened[key] = loaded[corpus.split or "train"] if isinstance(loaded, datasets.DatasetDict) else loaded
    return _opened[key]


def _column_texts(column, where: str, first_row: int) -> list[str]:
    if column.null_count:
        raise InputError(f"{where} column has a missing (null) text at or after row {first_row:,}")
    return column.to_pylist()


def saved_texts(corpus, begin: int, end: int) -> list[str]:
    """Texts of rows [begin, end) of a saved dataset: a zero-copy slice of its Arrow table."""
    table = _saved(corpus).with_format("arrow")[begin:end]
    return _column_texts(table.column(corpus.text_field), str(corpus.dataset), begin)


def saved_rows(corpus) -> int:
    return len(_saved(corpus))


def builder_texts(corpus, index: int, skip: int) -> Iterator[str]:
    """Texts of data file `index` from row `skip`, streamed by the `datasets` builder."""
    datasets, path = offline_datasets(), corpus.files[index]
    where = f"corpus file {str(path)!r} (builder {corpus.builder!r})"
    try:
        stream = datasets.load_dataset(corpus.builder, data_files=[str(path)], split=corpus.split or "train",
                                       streaming=True, **({} if isinstance(path, Path) else
                                                          {"storage_options": dict(corpus.storage_options)}))
    except ValueError as error:  # an unknown split names the ones there are
        raise InputError(f"{where}: {error}") from None
    if stream.features is not None:
        problem = column_problem(stream.features.to_dict(), corpus.text_field, where)
        if problem:
            raise InputError(problem)
    row = skip
    try:
        for batch in stream.skip(skip).with_format("arrow").iter(batch_size=ROWS_PER_CHUNK):
            columns = {name: {"dtype": str(kind)} for name, kind in zip(batch.schema.names, batch.schema.types)}
            problem = column_problem(columns, corpus.text_field, where)  # a builder that infers its columns
            if problem:
                raise InputError(problem)
            yield from _column_texts(batch.column(corpus.text_field), where, row)
            row += batch.num_rows
    except (OSError, ValueError) as error:
        raise InputError(f"{where} cannot be read: {error}") from None


def hf_documents(corpus, start: tuple[int, int]) -> Iterator[tuple[int, int, str]]:
    """(file, document, text) from document `start`, as `readers.iter_documents` gives them for other formats."""
    first_file, first_document = start
    if corpus.builder is None:
        total = saved_rows(corpus)
        for begin in range(first_document, total, ROWS_PER_CHUNK):
            for row, text in enumerate(saved_texts(corpus, begin, min(begin + ROWS_PER_CHUNK, total)), start=begin):
                yield 0, row, text
        return
    for index in range(first_file, len(corpus.files)):
        skip = first_document if index == first_file else 0
        for row, text in enumerate(builder_texts(corpus, index, skip), start=skip):
            yield index, row, text
