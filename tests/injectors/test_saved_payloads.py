"""Saved Hugging Face datasets as experiment inputs: benchmark layouts (ARC, MMLU, HellaSwag, PIQA, Winogrande, made
here with their columns; nothing downloads) read through the documented field maps build exactly what the same
questions as injc's JSONL build, answers converted here by each benchmark's own rule; bad maps are one line."""

import json
import textwrap

import pytest

import injc
from tests.conftest import write_jsonl
from tests.test_cli import assert_user_error
from tests.test_cli import injc as run_injc
from tests.test_user_mistakes import snapshot

datasets = pytest.importorskip("datasets")
datasets.disable_progress_bars()
ROWS = 12


def question(i: int, n: int) -> tuple[str, list[str], int]:
    return f"What is item {i} of the list?", [f"option {i}-{c} text" for c in range(n)], (i * 7) % n


def arc(i):
    text, choices, answer = question(i, 4)
    labels = ["A", "B", "C", "D"] if i % 3 else ["1", "2", "3", "4"]  # ARC has both kinds of labels
    return {"id": f"arc-{i}", "question": text, "choices": {"text": choices, "label": labels},
            "answerKey": labels[answer]}


def mmlu(i):
    text, choices, answer = question(i, 4)
    return {"question": text, "subject": "misc", "choices": choices, "answer": answer}


def hellaswag(i):
    text, choices, answer = question(i, 4)
    return {"ctx": text, "endings": choices, "label": str(answer), "activity_label": "lists"}


def piqa(i):
    text, choices, answer = question(i, 2)
    return {"goal": text, "sol1": choices[0], "sol2": choices[1], "label": answer}


def winogrande(i):
    text, choices, answer = question(i, 2)
    return {"sentence": text, "option1": choices[0], "option2": choices[1], "answer": str(answer + 1)}


# layout → (row maker, split it is saved under (None: a plain Dataset), the field map docs/plan.md gives)
LAYOUTS = {
    "arc": (arc, "test", '{ question = "question", choices = "choices.text", answer = "answerKey", '
                         'labels = "choices.label" }'),
    "mmlu": (mmlu, "test", None),
    "hellaswag": (hellaswag, "validation", '{ question = "ctx", choices = "endings", answer = "label" }'),
    "piqa": (piqa, None, '{ question = "goal", choices = ["sol1", "sol2"], answer = "label" }'),
    "winogrande": (winogrande, None, '{ question = "sentence", choices = ["option1", "option2"], answer = "answer", '
                                     'answer_base = 1 }'),
}


def save(folder, rows: list[dict], split: str | None):
    dataset = datasets.Dataset.from_list(rows)
    (datasets.DatasetDict({split: dataset, "train": dataset.select(range(2))}) if split else dataset).save_to_disk(
        str(folder))


def contamination(file: str, split: str | None = None, fields: str | None = None) -> str:
    return textwrap.dedent(f"""
        [[experiments]]
        name = "bench"
        kind = "contamination"
        file = "{file}"
        tiers = {{0 = 4, 2 = 8}}
        """) + (f'dataset_split = "{split}"\n' if split else "") + (f"fields = {fields}\n" if fields else "")


def stream(folder) -> dict[str, bytes]:
    return {k: v for k, v in snapshot(folder).items() if k != "manifest.json"}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_benchmark_layout_builds_what_the_same_questions_as_jsonl_build(project, tmp_path, layout):
    make, split, fields = LAYOUTS[layout]
    rows = [make(i) for i in range(ROWS)]
    save(project.root / "bench", rows, split)
    expected = [{"question": question(i, len(q))[0], "choices": q, "answer": question(i, len(q))[2]}
                for i, q in enumerate(question(i, 2 if layout in ("piqa", "winogrande") else 4)[1]
                                      for i in range(ROWS))]
    write_jsonl(project.root / "bench.jsonl", expected)
    from_jsonl = injc.build(project(contamination("bench.jsonl")), tmp_path / "jsonl", progress=False)
    from_saved = injc.build(project(contamination("bench", split, fields)), tmp_path / "saved", progress=False)
    assert stream(from_saved.out_dir) == stream(from_jsonl.out_dir)
    record = injc.load_manifest(from_saved.manifest_path).experiments[0]["files"]["file"]
    assert record["path"] == str(project.root / "bench") and record["split"] == split
    assert record["fingerprint"] and all(f["sha256"] for f in record["files"])


def test_a_dataset_of_documents_feeds_a_texts_experiment(project, tmp_path):
    texts = [f"canary {i} secret {i * 7919 % 1000}" for i in range(20)]
    save(project.root / "docs", [{"body": t, "n": i} for i, t in enumerate(texts)], None)
    plan = 'name = "c"\nkind = "texts"\nrepetitions = 3\n'
    jsonl = injc.build(project(f'[[experiments]]\n{plan}file = "payloads/canaries.jsonl"\n'), tmp_path / "a",
                       progress=False)
    saved = injc.build(project(f'[[experiments]]\n{plan}file = "docs"\nfields = {{ text = "body" }}\n'),
                       tmp_path / "b", progress=False)
    assert stream(saved.out_dir) == stream(jsonl.out_dir)


def test_the_builds_tables_load_with_datasets(project, tmp_path):
    """insertions.parquet and items.parquet through datasets' own parquet builder: the rows pyarrow reads."""
    import pyarrow.parquet as pq

    write_jsonl(project.root / "bench.jsonl", [mmlu(i) for i in range(ROWS)])
    folder = injc.build(project(contamination("bench.jsonl")), tmp_path / "b", progress=False).out_dir
    for table in ("insertions", "items"):
        loaded = datasets.load_dataset("parquet", data_files=str(folder / f"{table}.parquet"), split="train")
        assert loaded.to_list() == pq.read_table(folder / f"{table}.parquet").to_pylist()
    count = json.loads((folder / "manifest.json").read_text())["insertions"]["count"]
    assert count == 16 and len(datasets.load_dataset("parquet", data_files=str(folder / "insertions.parquet"),
                                                      split="train")) == count


def test_bad_field_maps_and_dataset_folders_are_one_line_and_write_nothing(project, tmp_path):
    save(project.root / "arc", [arc(i) for i in range(ROWS)], "test")
    (project.root / "empty").mkdir()
    cases = [(contamination("arc", "test", '{ question = "question", choices = "choices.txt" }'),
              "fields: 'choices.txt' is not in", "its columns: id, question, choices.text, choices.label, answerKey"),
             (contamination("arc", "dev", None), "has no split 'dev' (its splits: test, train)"),
             (contamination("arc", None, None), "holds the splits test, train: give dataset_split"),
             (contamination("empty", None, None), "is a folder but not a saved Hugging Face dataset"),
             (contamination("arc", "test", '{ question = "question", choices = "choices.text", answer = "answerKey" }'),
              "row 9: needs"),  # without labels, ARC's "4" of labels 1-4 is no index
             (contamination("payloads/canaries.jsonl", None, '{ question = "text" }'),
              "fields and dataset_split apply to saved Hugging Face")]
    for plan, *messages in cases:
        result = run_injc("build", project(plan), "--out", tmp_path / "x", "--quiet")
        assert_user_error(result, *messages)
        assert not (tmp_path / "x").exists()
