"""Stream-level kinds: reserved tail, iid rows, forgetting batches, documents, verbatim removal, watermark."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import injc
from injc.compiler.corpus import base_stream
from injc.compiler.plan import load_plan
from injc.injectors.fixtures import write_all
from injc.injectors.verbatim import find_occurrences
from injc.tokenizer import load_tokenizer
from tests.conftest import make_documents, write_jsonl
from tests.injectors.test_families import CONTAMINATION, MATH

LAYOUT = "seq_len = 128\nbatch_size = 4\nsteps = 40\nseed = 5"  # 20,480 tokens
HOLDOUT = 'paths = ["data/*.jsonl"]\nholdout_tokens = 12000'


@pytest.fixture
def stream_project(project):
    write_jsonl(project.root / "data" / "c.jsonl", [{"text": t} for t in make_documents(600, seed=3)])
    write_all(project.root / "payloads", seed=4)

    def build(experiments: str, name: str = "out", corpus: str = HOLDOUT, layout: str = LAYOUT):
        plan = project(experiments, layout=layout, corpus=corpus)
        out = project.root / name
        injc.build(plan, out, progress=False, force=True)
        assert injc.verify(out) == []
        manifest = json.loads((out / "manifest.json").read_text())
        return manifest, pq.read_table(out / "insertions.parquet").to_pylist(), out

    build.root = project.root
    build.plan = project.root / "plan.toml"
    return build


def corpus_tokens(plan_path, count):
    plan = load_plan(plan_path)
    tokenizer = load_tokenizer(plan.tokenizer.path, plan.tokenizer.eos)
    return np.concatenate([c for c, _ in base_stream(plan.corpus, tokenizer)])[:count]


def records_of(out, manifest, name):
    entry = next(e for e in manifest["experiments"] if e["name"] == name)
    return entry, json.loads((out / entry["eval_records"]["path"]).read_text())


IID = '\n[[experiments]]\nname = "iid"\nkind = "iid"\ncount = 6\n'


def test_reserved_tail_is_recorded_and_never_in_the_base_stream(stream_project):
    manifest, _, out = stream_project(IID)
    tokens = corpus_tokens(stream_project.plan, 20_480 + 12_000)
    holdout = np.fromfile(out / "holdout.bin", dtype=manifest["layout"]["dtype"])
    assert manifest["holdout"]["tokens"] == 12_000 and np.array_equal(holdout, tokens[20_480:])
    assert manifest["holdout"]["allocations"] == [{"experiment": "iid", "start": 0, "end": 6 * 128}]
    clean = injc.build(stream_project.plan, stream_project.root / "clean", clean=True, progress=False)
    base = injc.open_stream(clean.manifest_path)
    assert np.array_equal(base.tokens(0, len(base)), tokens[:20_480])
    (out / "holdout.bin").write_bytes((out / "holdout.bin").read_bytes()[:-2] + b"\x00\x01")
    assert any("reserved tail holdout.bin: missing or sha256 differs" in p for p in injc.verify(out))


def test_iid_rows_are_whole_tail_instances(stream_project):
    manifest, rows, out = stream_project(IID)
    holdout = np.fromfile(out / "holdout.bin", dtype=manifest["layout"]["dtype"])
    assert len(rows) == 6
    for r in rows:
        assert r["col"] == 0 and r["length"] == 128
        assert r["tokens"] == holdout[r["item"] * 128:(r["item"] + 1) * 128].tolist()
    windows, _, _ = stream_project(IID.replace("count = 6", "count = 2\nwindows = 4"), "windows")
    table = pq.read_table(stream_project.root / "windows" / "insertions.parquet").to_pylist()
    assert sorted(r["step"] // 10 for r in table) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_forgetting_replaces_whole_batches(stream_project):
    manifest, rows, out = stream_project('[[experiments]]\nname = "fc"\nkind = "forgetting"\nsteps = [3, 17]\n')
    holdout = np.fromfile(out / "holdout.bin", dtype=manifest["layout"]["dtype"])
    stream = injc.open_stream(out)
    assert np.array_equal(stream.batch(3).ravel(), holdout[:512]) and np.array_equal(stream.batch(17).ravel(),
                                                                                     holdout[512:1024])
    assert [(r["step"], r["row"], r["col"], r["length"]) for r in rows] == [(s, i, 0, 128) for s in (3, 17)
                                                                            for i in range(4)]


def test_documents_conditions(stream_project):
    hosts = (stream_project.root / "payloads" / "hosts.jsonl").read_text().splitlines()[:36]
    (stream_project.root / "payloads" / "news.jsonl").write_text("\n".join(hosts) + "\n")
    manifest, rows, out = stream_project('[[experiments]]\nname = "muse"\nkind = "documents"\n'
                                         'file = "payloads/news.jsonl"\nrepetitions = [1, 3]\nparagraphs = 3\n')
    entry, records = records_of(out, manifest, "muse")
    documents = records["documents"]
    assert len(documents) == 36
    assert {(d["split"], d["repetitions"]) for d in documents} == {(s, r) for s in ("none", "paragraphs", "resplit")
                                                                   for r in (1, 3)}
    copies = {}
    for r in rows:
        copies[r["item"]] = copies.get(r["item"], 0) + 1
    for d in documents:
        if d["split"] in ("none", "paragraphs"):
            assert all(copies[i] == d["repetitions"] for i in d["items"])
        else:
            assert all(copies[i] == 1 for i in d["items"]) and len(d["items"]) == 3 * d["repetitions"]
    assert all(len(d["items"]) == 3 for d in documents if d["split"] == "paragraphs"), "no blank lines: 3 equal parts"


def naive_count(stream: np.ndarray, sequence: list[int]) -> int:
    n = len(sequence)
    return sum(1 for i in range(len(stream) - n + 1)
               if stream[i] == sequence[0] and stream[i:i + n].tolist() == sequence)


def test_verbatim_removal_leaves_no_occurrence(stream_project):
    stream_project(IID, "plain")  # writes plan.toml; its base stream is the corpus's first 20,480 tokens
    tokens = corpus_tokens(stream_project.plan, 20_480)
    sequences = [tokens[1000:1012].tolist(), tokens[5000:5004].tolist(), tokens[9000:9030].tolist(), [3, 3, 3, 3]]
    write_jsonl(stream_project.root / "payloads" / "forbidden.jsonl", [{"tokens": s} for s in sequences])
    manifest, rows, out = stream_project('[[experiments]]\nname = "memv"\nkind = "verbatim-removal"\n'
                                         'file = "payloads/forbidden.jsonl"\n')
    entry, records = records_of(out, manifest, "memv")
    expected_rows = set()
    for s in sequences:
        for i in range(len(tokens) - len(s) + 1):
            if tokens[i:i + len(s)].tolist() == s:
                expected_rows.update(range(i // 128, (i + len(s) - 1) // 128 + 1))
    assert entry["occurrences"] >= 3 and set(records["replaced_rows"]) == expected_rows
    assert entry["instances_replaced"] == len(expected_rows) == len(rows)
    stream = injc.open_stream(out)
    final = stream.tokens(0, len(stream))
    assert all(naive_count(final, s) == 0 for s in sequences), "independent scan finds no occurrence"
    assert all(r["col"] == 0 and r["length"] == 128 for r in rows)


def test_find_occurrences_matches_a_naive_scan_across_chunks(monkeypatch):
    import injc.injectors.verbatim as verbatim

    monkeypatch.setattr(verbatim, "SEARCH_CHUNK", 1000)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 8, 5000)
    sequences = [tokens[998:1003].copy(), tokens[10:12].copy(), np.array([7, 7, 7, 7, 7, 7])]
    at, which = find_occurrences(tokens, sequences)
    expected = sorted((i, k) for k, s in enumerate(sequences) for i in range(len(tokens) - len(s) + 1)
                      if (tokens[i:i + len(s)] == s).all())
    assert sorted(zip(at.tolist(), which.tolist())) == expected


def test_verbatim_refuses_other_payloads_containing_a_sequence(stream_project):
    write_jsonl(stream_project.root / "payloads" / "forbidden.jsonl", [{"tokens": [5, 6, 7, 8]}])
    write_jsonl(stream_project.root / "payloads" / "ids.jsonl", [{"tokens": [1, 2]}, {"tokens": [9, 5, 6, 7, 8, 9]}])
    with pytest.raises(injc.InputError, match="experiment 'ids': item 1 contains sequence 0 that experiment 'memv'"):
        stream_project('[[experiments]]\nname = "memv"\nkind = "verbatim-removal"\nfile = "payloads/forbidden.jsonl"\n'
                       '[[experiments]]\nname = "ids"\nkind = "tokens"\nfile = "payloads/ids.jsonl"\n')


def test_gaussian_watermark_writes_a_directive_and_no_tokens(stream_project):
    manifest, rows, out = stream_project('[[experiments]]\nname = "gw"\nkind = "gaussian-watermark"\n'
                                         'every_steps = 10\nfirst_step = 5\nstd = 0.1\n')
    (directive,) = manifest["directives"]
    assert directive["kind"] == "embedding_noise" and directive["steps"] == [5, 15, 25, 35]
    assert directive["std"] == 0.1 and isinstance(directive["seed"], int) and rows == []


def test_a_clean_build_is_not_watermarked_and_noise_steps_are_never_shared(stream_project):
    gw = '[[experiments]]\nname = "gw"\nkind = "gaussian-watermark"\nsteps = [3, 8]\n'
    stream_project(gw)
    injc.build(stream_project.plan, stream_project.root / "clean", progress=False, clean=True)
    assert json.loads((stream_project.root / "clean" / "manifest.json").read_text())["directives"] == []
    second = gw.replace('"gw"', '"gw2"').replace("[3, 8]", "[8, 9]")
    with pytest.raises(injc.LayoutError, match="'gw' and 'gw2' both add embedding noise at step 8"):
        stream_project(gw + second)
    pytest.importorskip("torch")
    from injc.train.noise import EmbeddingNoise

    with pytest.raises(injc.ManifestError, match="share step 8"):
        EmbeddingNoise(injc.Manifest(stream_project.root, {"directives": [
            {"kind": "embedding_noise", "steps": [3, 8], "std": 0.1, "seed": 1},
            {"kind": "embedding_noise", "steps": [8], "std": 0.1, "seed": 2}]}))


def test_tail_is_required_and_sized(stream_project):
    with pytest.raises(injc.PlanError, match="set \\[corpus\\] holdout_tokens"):
        stream_project(IID, corpus='paths = ["data/*.jsonl"]')
    with pytest.raises(injc.LayoutError, match="needs 12,800 held-out tokens but only 12,000"):
        stream_project(IID.replace("count = 6", "count = 100"))


def test_part_one_and_part_two_kinds_together(stream_project):
    plan = (IID + '[[experiments]]\nname = "fc"\nkind = "forgetting"\nsteps = [2]\n'
            '[[experiments]]\nname = "gw"\nkind = "gaussian-watermark"\nsteps = [1, 2]\n'
            + CONTAMINATION.replace("0 = 40, 2 = 30, 8 = 10", "0 = 10, 2 = 5")
            + MATH.replace("count = 40", "count = 3"))
    layout = "seq_len = 1024\nbatch_size = 2\nsteps = 12\nseed = 5"
    manifest, rows, _ = stream_project(plan, layout=layout, corpus='paths = ["data/*.jsonl"]\nholdout_tokens = 9000')
    assert {e["name"] for e in manifest["experiments"]} == {"iid", "fc", "gw", "bench", "arith"}
    ends = [r["offset"] + r["length"] for r in rows]
    assert all(r["offset"] >= e for r, e in zip(rows[1:], ends))
