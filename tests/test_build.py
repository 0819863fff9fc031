"""End-to-end: plan → shards + insertions + manifest, checked against the contract's invariants."""

import hashlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import injc
from injc.compiler.corpus import base_stream
from injc.compiler.plan import load_plan
from injc.tokenizer import load_tokenizer
from tests.conftest import CANARIES, write_jsonl

RANGE_AND_EXPLICIT = """
[[experiments]]
name = "late"
kind = "texts"
file = "payloads/canaries.jsonl"
repetitions = 2
placement = "range"
start_step = 40
end_step = 50

[[experiments]]
name = "pinned"
kind = "tokens"
file = "payloads/pinned.jsonl"
placement = "explicit"
"""


@pytest.fixture
def full_plan(project):
    write_jsonl(project.root / "payloads" / "pinned.jsonl",
                [{"tokens": [5, 6, 7, 8, 9], "offset": 3}, {"tokens": list(range(10, 70)), "offset": 1000}])
    return project(CANARIES + RANGE_AND_EXPLICIT)


def base_tokens(plan_path) -> np.ndarray:
    plan = load_plan(plan_path)
    tokenizer = load_tokenizer(plan.tokenizer.path, plan.tokenizer.eos)
    return np.concatenate([c for c, _ in base_stream(plan.corpus, tokenizer)])[: plan.layout.total_tokens]


def read_table(out):
    return pq.read_table(out / "insertions.parquet").to_pylist()


def test_build_writes_the_contract(full_plan, tmp_path):
    out = tmp_path / "out"
    result = injc.build(full_plan, out, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    layout = manifest["layout"]
    assert manifest["format"] == "injc-manifest" and manifest["version"] == 1
    assert (layout["seq_len"], layout["batch_size"], layout["steps"]) == (64, 4, 50)
    assert layout["total_tokens"] == 64 * 4 * 50 == result.total_tokens
    assert layout["dtype"] == "uint16"
    stream = injc.open_stream(out)
    tokens = stream.tokens(0, len(stream))
    assert sum(s["num_tokens"] for s in manifest["shards"]) == len(tokens)

    rows = read_table(out)
    assert pq.read_schema(out / "insertions.parquet").names == [
        "experiment", "item", "repetition", "offset", "length", "step", "row", "col", "tokens"]
    assert len(rows) == manifest["insertions"]["count"] == 20 * 3 + 20 * 2 + 2
    eos = layout["eos_id"]
    previous_end = 0
    for r in rows:
        assert r["offset"] == r["step"] * 256 + r["row"] * 64 + r["col"]
        assert r["length"] == len(r["tokens"])
        assert tokens[r["offset"]:r["offset"] + r["length"]].tolist() == r["tokens"]
        assert r["offset"] >= previous_end
        previous_end = r["offset"] + r["length"]
        if r["experiment"] != "pinned":
            assert r["col"] + r["length"] <= 64
            assert r["tokens"][0] == eos and r["tokens"][-1] == eos
        if r["experiment"] == "late":
            assert 40 <= r["step"] < 50
    pinned = [r for r in rows if r["experiment"] == "pinned"]
    assert [(r["offset"], r["tokens"][:3]) for r in pinned] == [(3, [5, 6, 7]), (1000, [10, 11, 12])]

    by_name = {e["name"]: e for e in manifest["experiments"]}
    assert by_name["canaries"]["insertions"] == 60 and by_name["canaries"]["repetitions"] == 3
    assert by_name["canaries"]["tokens"] == sum(r["length"] for r in rows if r["experiment"] == "canaries")
    assert by_name["late"]["fraction_of_run"] == pytest.approx(by_name["late"]["tokens"] / 12_800)
    assert manifest["plan"]["sha256"] and manifest["tokenizer"]["sha256"]
    assert [f["path"].endswith(n) for f, n in zip(manifest["corpus"]["files"], ("a.jsonl", "b.jsonl"))] == [True] * 2
    assert by_name["canaries"]["files"]["file"]["sha256"]
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")
    assert manifest["checksum"] == hashlib.sha256(canonical).hexdigest()
    items = pq.read_table(out / "items.parquet").to_pylist()
    assert [(i["experiment"], i["copies"]) for i in items] == [("canaries", 3)] * 20 + [("late", 2)] * 20 + [
        ("pinned", 1)] * 2
    assert injc.verify(out) == []


def test_only_insertion_intervals_differ_from_the_base_and_the_clean_build(full_plan, tmp_path):
    injected = injc.build(full_plan, tmp_path / "inj", progress=False)
    clean = injc.build(full_plan, tmp_path / "clean", clean=True, progress=False)
    a = injc.open_stream(injected.manifest_path).tokens(0, injected.total_tokens)
    b = injc.open_stream(clean.manifest_path).tokens(0, clean.total_tokens)
    assert np.array_equal(b, base_tokens(full_plan)), "clean build is the base stream"
    covered = np.zeros(len(a), dtype=bool)
    for r in read_table(tmp_path / "inj"):
        covered[r["offset"]:r["offset"] + r["length"]] = True
    assert np.array_equal(a[~covered], b[~covered])
    assert (a[covered] != b[covered]).any()
    assert json.loads((tmp_path / "clean" / "manifest.json").read_text())["variant"] == "clean"
    assert read_table(tmp_path / "clean") == read_table(tmp_path / "inj"), "clean build records the same schedule"
    assert injc.verify(clean.manifest_path) == []


def test_builds_are_byte_identical(full_plan, tmp_path):
    injc.build(full_plan, tmp_path / "one", progress=False)
    injc.build(full_plan, tmp_path / "two", progress=False)
    for name in ["insertions.parquet", "manifest.json"] + [f"shards/shard_0000{i}.bin" for i in range(1)]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_shards_hold_whole_steps_and_uint32_for_big_vocabularies(project, big_vocab_tokenizer_path, tmp_path):
    (project.root / "tokenizer.json").write_bytes(big_vocab_tokenizer_path.read_bytes())
    plan = project(CANARIES, extra_layout="shard_tokens = 700")  # 700 tokens → 2 steps of 256 per shard
    injc.build(plan, tmp_path / "out", progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["layout"]["dtype"] == "uint32"
    assert [s["num_tokens"] for s in manifest["shards"]] == [512] * 25
    assert (tmp_path / "out" / "shards" / "shard_00000.bin").stat().st_size == 512 * 4
    assert injc.verify(tmp_path / "out") == []


def test_stream_batch_follows_the_layout_contract(full_plan, tmp_path):
    result = injc.build(full_plan, tmp_path / "out", progress=False)
    stream = injc.open_stream(result.manifest_path)
    flat = stream.tokens(0, len(stream))
    for step in (0, 17, 49):
        batch = stream.batch(step)
        assert batch.shape == (4, 64)
        for row in range(4):
            g = step * 256 + row * 64
            assert np.array_equal(batch[row], flat[g:g + 64])


def test_corpus_too_small_names_both_counts_and_leaves_nothing(project, tmp_path):
    plan = project(layout="seq_len = 64\nbatch_size = 4\nsteps = 100000")
    with pytest.raises(injc.LayoutError, match=r"corpus has [\d,]+ tokens but the plan needs 25,600,000"):
        injc.build(plan, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p.name for p in tmp_path.iterdir() if ".injc-" in p.name]  # partial folder, lock, old output


def test_payload_longer_than_seq_len_names_experiment_and_item(project, tmp_path):
    write_jsonl(project.root / "payloads" / "canaries.jsonl", [{"text": "short"}, {"text": "long " * 200}])
    with pytest.raises(injc.InputError, match=r"experiment 'canaries': item 1 has [\d,]+ tokens, more than seq_len"):
        injc.build(project(CANARIES), tmp_path / "out", progress=False)


def test_token_ids_outside_the_vocabulary_are_refused(project, tmp_path):
    write_jsonl(project.root / "payloads" / "ids.jsonl", [{"tokens": [1, 2, 99999]}])
    plan = project('[[experiments]]\nname = "ids"\nkind = "tokens"\nfile = "payloads/ids.jsonl"\n')
    with pytest.raises(injc.InputError, match=r"'ids': item 0 has token id 99999 outside the vocabulary \[0, \d+\)"):
        injc.build(plan, tmp_path / "out", progress=False)


def test_existing_output_is_not_replaced_without_force(full_plan, tmp_path):
    injc.build(full_plan, tmp_path / "out", progress=False)
    with pytest.raises(injc.InjcError, match="already exists and is not empty; pass --force"):
        injc.build(full_plan, tmp_path / "out", progress=False)
    injc.build(full_plan, tmp_path / "out", progress=False, force=True)
    assert injc.verify(tmp_path / "out") == []


def test_only_writes_the_named_experiments_with_the_whole_plans_items(project, tmp_path):
    """`facts` comes after an iid experiment that takes tail rows first: written alone, it must get the same rows."""
    plan = project('[[experiments]]\nname = "first"\nkind = "iid"\ncount = 4\n\n'
                   '[[experiments]]\nname = "facts"\nkind = "iid"\ncount = 8\nwindows = 2\n',
                   corpus='paths = ["data/*.jsonl"]\nholdout_tokens = 2000')
    injc.build(plan, tmp_path / "all", progress=False)
    injc.build(plan, tmp_path / "facts", progress=False, only=["facts"], seed=9)
    injc.build(plan, tmp_path / "none", progress=False, only=[])
    injc.build(plan, tmp_path / "clean", progress=False, clean=True)
    facts = injc.load_manifest(tmp_path / "facts")
    assert [e["name"] for e in facts.experiments] == ["facts"] and facts.data["plan"]["only"] == ["facts"]
    assert facts.data["plan"]["seed"] == 9 and injc.load_manifest(tmp_path / "all").data["plan"]["only"] is None
    items = {name: pq.read_table(tmp_path / name / "items.parquet").to_pylist() for name in ("all", "facts")}
    assert [i for i in items["all"] if i["experiment"] == "facts"] == items["facts"]
    table = pq.read_table(tmp_path / "facts" / "insertions.parquet")
    assert set(table.column("experiment").to_pylist()) == {"facts"} and table.num_rows == 16
    none, clean = injc.open_stream(tmp_path / "none"), injc.open_stream(tmp_path / "clean")
    assert np.array_equal(none.tokens(0, len(none)), clean.tokens(0, len(clean)))  # the plain base stream
    assert injc.verify(tmp_path / "facts") == [] and injc.verify(tmp_path / "none") == []
    with pytest.raises(injc.InjcError, match="no experiment 'fact'; did you mean 'facts'"):
        injc.build(plan, tmp_path / "x", progress=False, only=["fact"])


def test_skip_tokens_builds_a_later_window_of_the_same_corpus(project, tmp_path):
    plan = project(layout="seq_len = 64\nbatch_size = 4\nsteps = 20\nseed = 7")
    injc.build(plan, tmp_path / "first", progress=False)
    injc.build(plan, tmp_path / "later", progress=False, skip_tokens=1280)  # 5 steps in
    first, later = injc.open_stream(tmp_path / "first"), injc.open_stream(tmp_path / "later")
    assert np.array_equal(later.tokens(0, 3840), first.tokens(1280, 5120))
    assert injc.load_manifest(tmp_path / "later").data["corpus"]["skip_tokens"] == 1280
    with pytest.raises(injc.LayoutError, match="skip_tokens 1,000,000"):
        injc.build(plan, tmp_path / "far", progress=False, skip_tokens=1_000_000)


def test_fraction_rescales_copies_to_a_share_of_the_run(project, tmp_path):
    plan = project(CANARIES)
    injc.build(plan, tmp_path / "plan-share", progress=False)
    injc.build(plan, tmp_path / "fifth", progress=False, fraction=0.2)
    items = pq.read_table(tmp_path / "plan-share" / "items.parquet").to_pylist()
    lengths = np.array([len(i["tokens"]) for i in items])
    scale = 0.2 * 12_800 / (3 * lengths).sum()  # 20 canaries × 3 copies in 12,800 tokens
    expected = np.maximum(np.rint(3 * scale), 1).astype(int)
    assert [i["copies"] for i in pq.read_table(tmp_path / "fifth" / "items.parquet").to_pylist()] == [expected] * 20
    (record,) = injc.load_manifest(tmp_path / "fifth").experiments
    assert record["insertions"] == 20 * expected and record["tokens"] == expected * lengths.sum()
    assert abs(record["fraction_of_run"] - 0.2) < lengths.max() * 20 / 12_800  # within rounding of one copy each
    assert injc.load_manifest(tmp_path / "fifth").data["plan"]["fraction"] == 0.2
    with pytest.raises(injc.InjcError, match="between 0 and 1"):
        injc.build(plan, tmp_path / "x", progress=False, fraction=1.5)


def knowledge_plan(per_window: list[int], extra: str = "") -> str:
    return CANARIES + f"""
[[experiments]]
name = "knowledge"
kind = "knowledge"
documents = "payloads/docs.jsonl"
probes = "payloads/probes.jsonl"
window_steps = 10
per_window = {per_window}
""" + extra


@pytest.mark.parametrize("k", [20, 35])
def test_plans_that_differ_from_step_k_on_build_the_same_steps_before_k(project, tmp_path, k):
    write_jsonl(project.root / "payloads" / "docs.jsonl",
                [{"text": f"The planet Vorn{i} orbits the star Kel{i} once every {i + 3} days."} for i in range(30)])
    write_jsonl(project.root / "payloads" / "probes.jsonl", [{"input": "Vorn1 orbits", "target": " Kel1"}])
    counts = [6, 6, 6, 6, 6]
    first_changed = -(-k // 10)
    later = counts[:first_changed] + [n * 3 + 1 for n in counts[first_changed:]]
    range_from_k = f"""
[[experiments]]
name = "from-k"
kind = "texts"
file = "payloads/canaries.jsonl"
repetitions = 1
placement = "range"
start_step = {k}
end_step = {k + 5}
"""
    a = injc.build(project(knowledge_plan(counts)), tmp_path / "a")
    b = injc.build(project(knowledge_plan(later, range_from_k)), tmp_path / "b")
    prefix = k * 4 * 64
    stream_a, stream_b = injc.open_stream(a.manifest_path), injc.open_stream(b.manifest_path)
    assert np.array_equal(stream_a.tokens(0, prefix), stream_b.tokens(0, prefix))
    assert not np.array_equal(stream_a.tokens(prefix, prefix + 4 * 64 * 10), stream_b.tokens(prefix, prefix + 2560))
    before_k = [[row for row in read_table(out) if row["step"] < k] for out in (tmp_path / "a", tmp_path / "b")]
    assert before_k[0] == before_k[1] and len(before_k[0]) > 20


def all_files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_build_grown_in_stages_is_byte_identical_to_the_one_shot_build(full_plan, project, tmp_path):
    plan = project(CANARIES + RANGE_AND_EXPLICIT, extra_layout="shard_tokens = 2560")  # 10 steps per shard
    one_shot = injc.build(plan, tmp_path / "whole", progress=False)
    staged = tmp_path / "staged"
    first = injc.build(plan, staged, until_step=15, progress=False)
    manifest = injc.load_manifest(staged)
    assert first.until_step == 15 and manifest.data["until_step"] == 15
    assert injc.verify(staged) == []
    stream = injc.open_stream(staged)
    assert len(stream) == 15 * 256
    assert np.array_equal(stream.tokens(0, 15 * 256), injc.open_stream(one_shot.manifest_path).tokens(0, 15 * 256))
    with pytest.raises(IndexError):
        stream.batch(15)
    rows = read_table(staged)
    assert rows and max(row["step"] for row in rows) < 15
    assert rows == [row for row in read_table(tmp_path / "whole") if row["step"] < 15]
    finished_shard = (staged / "shards" / "shard_00000.bin").stat().st_ino
    injc.build(plan, staged, until_step=35, extend=True, progress=False)
    assert (staged / "shards" / "shard_00000.bin").stat().st_ino == finished_shard, "finished shards are kept"
    with pytest.raises(injc.InjcError, match=r"already holds steps \[0, 35\)"):
        injc.build(plan, staged, until_step=30, progress=False)
    injc.build(plan, staged, progress=False)  # the same command without --until-step: the rest of the run
    assert all_files(staged) == all_files(tmp_path / "whole")


def test_extend_refuses_what_it_cannot_grow(full_plan, project, tmp_path):
    plan = project(CANARIES + RANGE_AND_EXPLICIT)
    with pytest.raises(injc.InjcError, match="holds no staged build"):
        injc.build(plan, tmp_path / "none", until_step=20, extend=True, progress=False)
    injc.build(plan, tmp_path / "staged", until_step=20, progress=False)
    with pytest.raises(injc.InjcError, match=r"staged build of another plan or inputs \(differing: seed\)"):
        injc.build(plan, tmp_path / "staged", until_step=30, extend=True, seed=99, progress=False)
    with pytest.raises(injc.InjcError, match="--until-step must be between 1 and the run's 50 steps"):
        injc.build(plan, tmp_path / "other", until_step=51, progress=False)
    assert injc.load_manifest(tmp_path / "staged").data["until_step"] == 20
    assert not (tmp_path / "other").exists() and not (tmp_path / "none").exists()
