"""`[corpus] format = "hf"`: a Hugging Face dataset (a save_to_disk folder, a DatasetDict's split, or local data
files through a `datasets` builder) gives the bytes of the build from the same documents as JSONL, read here, in
processes or chunk by chunk from any resume point; bad datasets are one line."""

import json
import subprocess
import sys

import pytest

import injc
from injc.compiler.plan import load_plan
from injc.compiler.readers import chunk_texts, corpus_chunks, iter_documents
from tests.conftest import CANARIES, make_documents, write_jsonl
from tests.test_cli import REPO, assert_user_error
from tests.test_cli import injc as run_injc
from tests.test_user_mistakes import interrupt_after_shards, interruptible, snapshot

datasets = pytest.importorskip("datasets")
datasets.disable_progress_bars()
LONG = "seq_len = 64\nbatch_size = 4\nsteps = 400\nseed = 7"


def documents(root) -> list[str]:
    """The project's corpus as JSONL holds it: data/a.jsonl then data/b.jsonl, line by line."""
    return [json.loads(line)["text"] for name in ("a", "b")
            for line in (root / "data" / f"{name}.jsonl").read_text().splitlines()]


def save(root, texts: list[str], name: str = "saved", split: str | None = None, **columns):
    """The texts as a saved Dataset (several Arrow files), or as a DatasetDict with them under `split`."""
    dataset = datasets.Dataset.from_dict({"text": texts, "n": list(range(len(texts))), **columns})
    if split is not None:
        dataset = datasets.DatasetDict({split: dataset, "validation": dataset.select(range(3))})
        dataset.save_to_disk(str(root / name))
    else:
        dataset.save_to_disk(str(root / name), max_shard_size="20KB")
    return root / name


def files(folder) -> dict[str, bytes]:
    """What the stream is: shards, insertions and items (the manifests differ in their corpus records)."""
    return {k: v for k, v in snapshot(folder).items() if k != "manifest.json"}


@pytest.fixture
def reference(project, tmp_path):
    """The JSONL build of the project's corpus (two files, 300 documents) with canaries."""
    plan = project(CANARIES)
    return injc.build(plan, tmp_path / "jsonl", progress=False).out_dir


def test_every_hf_source_builds_the_bytes_of_the_jsonl_build(project, reference, tmp_path):
    root, texts = project.root, documents(project.root)
    saved = save(root, texts)
    assert len(list(saved.glob("*.arrow"))) > 2
    save(root, texts, "dict", split="train")
    datasets.Dataset.from_dict({"text": texts[:150]}).to_parquet(str(root / "data" / "a.parquet"))
    datasets.Dataset.from_dict({"text": texts[150:]}).to_parquet(str(root / "data" / "b.parquet"))
    sources = {"saved": 'paths = ["saved"]\nformat = "hf"',
               "saved-train": 'paths = ["saved"]\nformat = "hf"\nsplit = "train"',  # the default, named
               "dict": 'paths = ["dict"]\nformat = "hf"\nsplit = "train"',
               "json": 'paths = ["data/*.jsonl"]\nformat = "hf"\nbuilder = "json"',
               "parquet": 'paths = ["data/*.parquet"]\nformat = "hf"\nbuilder = "parquet"'}
    for name, corpus in sources.items():
        result = injc.build(project(CANARIES, corpus=corpus), tmp_path / f"build-{name}", progress=False,
                            workers=2 if name in ("saved", "json") else None)
        assert files(result.out_dir) == files(reference), name
    manifest = injc.load_manifest(tmp_path / "build-saved").data["corpus"]
    assert manifest["format"] == "hf" and manifest["dataset"]["path"] == str(saved)
    made = datasets.Dataset.from_dict({"text": texts, "n": list(range(len(texts)))})  # as save() made it
    assert manifest["dataset"]["fingerprint"] == made._fingerprint  # what datasets named it when it was made
    assert sorted(f["path"] for f in manifest["files"]) == sorted(str(p) for p in saved.glob("*.arrow"))
    assert injc.load_manifest(tmp_path / "build-parquet").data["corpus"]["builder"] == "parquet"


@pytest.mark.parametrize("source", ["saved", "builder"])
def test_chunks_and_resumed_reads_give_the_documents_in_order(project, source, monkeypatch):
    import injc.compiler.hf_corpus as hf_corpus

    monkeypatch.setattr(hf_corpus, "ROWS_PER_CHUNK", 7)  # row ranges and Arrow batches cut mid-file
    root, texts = project.root, documents(project.root)
    save(root, texts)
    corpus = load_plan(project(corpus='paths = ["saved"]\nformat = "hf"' if source == "saved" else
                               'paths = ["data/*.jsonl"]\nformat = "hf"\nbuilder = "json"')).corpus
    keyed = [(0, i, t) for i, t in enumerate(texts)] if source == "saved" else \
        [(i // 150, i % 150, t) for i, t in enumerate(texts)]
    assert list(iter_documents(corpus)) == keyed
    for start in (keyed[0], keyed[149], keyed[151], keyed[-1]):
        position = keyed.index(start)
        first = (start[0], start[1])
        assert list(iter_documents(corpus, first)) == keyed[position:]
        assert [t for chunk in corpus_chunks(corpus, first) for t in chunk_texts(chunk, corpus)] == \
            [t for _, _, t in keyed[position:]]


def test_a_killed_build_from_a_saved_dataset_resumes_to_the_same_bytes(project, tmp_path):
    texts = documents(project.root) + make_documents(1500, seed=4)
    save(project.root, texts)
    write_jsonl(project.root / "data" / "c.jsonl", [{"text": t} for t in make_documents(1500, seed=4)])
    reference = injc.build(project(CANARIES, layout=LONG, extra_layout="shard_tokens = 256"), tmp_path / "jsonl",
                           progress=False).out_dir
    plan = project(CANARIES, layout=LONG, extra_layout="shard_tokens = 256", corpus='paths = ["saved"]\nformat = "hf"')
    command = [sys.executable, "-m", "injc", "build", str(plan), "--out", str(tmp_path / "out"), "--quiet"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=interruptible)
    interrupt_after_shards(process, tmp_path / ".out.injc-partial" / "done", 5, 120)
    assert not (tmp_path / "out").exists()
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert files(tmp_path / "out") == files(reference)


def test_bad_datasets_are_one_line_and_write_nothing(project, tmp_path):
    root, texts = project.root, documents(project.root)
    save(root, texts, "dict", split="train")
    save(root, texts, "ints", label=list(range(len(texts))))
    save(root, texts[:20], "one")
    (root / "empty").mkdir()
    cases = [('paths = ["nowhere"]\nformat = "hf"', "'nowhere' does not exist"),
             ('paths = ["one"]\nformat = "hf"\nsplit = "test"', "holds one Dataset (split None), not a DatasetDict"),
('paths = ["dict"]\nformat = "hf"\nsplit = "test"', "has no split 'test' (its splits: train, validation)"),
             ('paths = ["dict"]\nformat = "hf"\ntext_field = "body"', "has no column 'body' (its columns: text, n)"),
             ('paths = ["ints"]\nformat = "hf"\ntext_field = "label"', "column 'label' is not strings (it is int64)"),
             ('paths = ["empty"]\nformat = "hf"', "is not a Hugging Face dataset folder"),
             ('paths = ["data/a.jsonl"]\nformat = "hf"', "is not a folder"),
             ('paths = ["data/*.jsonl"]\nformat = "hf"\nbuilder = "json"\ntext_field = "body"',
              "has no column 'body' (its columns: text)"),
             ('paths = ["data/*.jsonl"]\nformat = "hf"\nbuilder = "json"\nsplit = "test"', "Bad split: test"),
             ('paths = ["data/*.jsonl"]\nformat = "jsonl"\nsplit = "train"', 'only valid with format = "hf"')]
    for corpus, message in cases:
        result = run_injc("build", project(CANARIES, corpus=corpus), "--out", tmp_path / "x", "--quiet")
        assert_user_error(result, message)
        assert not (tmp_path / "x").exists() and not (tmp_path / ".x.injc-partial").exists(), corpus


@pytest.mark.parametrize("source", ["saved", "builder"])
def test_the_size_estimate_of_a_large_dataset_is_near_its_token_count(project, monkeypatch, source):
    """Past the exact-count limit, a sample of the first documents is extrapolated (by rows for a saved dataset, by
    file size for data files); both land near the count of every document tokenized here."""
    import injc.compiler.check as check
    from injc.tokenizer import load_tokenizer

    monkeypatch.setattr(check, "EXACT_BYTES", 0)
    monkeypatch.setattr(check, "SAMPLE_BYTES", 8000)
    root, texts = project.root, documents(project.root)
    save(root, texts)
    plan = load_plan(project(corpus='paths = ["saved"]\nformat = "hf"' if source == "saved" else
                             'paths = ["data/*.jsonl"]\nformat = "hf"\nbuilder = "json"'))
    tokenizer = load_tokenizer(plan.tokenizer.path, plan.tokenizer.eos)
    truth = sum(len(tokenizer.tokenizer.encode(t, add_special_tokens=False).ids) + 1 for t in texts)
    estimate = check.estimate_corpus_tokens(plan.corpus, tokenizer)
    assert not estimate.exact and "estimated" in estimate.how
    assert abs(estimate.tokens - truth) / truth < 0.15, (estimate, truth)
