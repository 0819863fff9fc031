"""Compiler benchmarks: build throughput against raw tokenization, and schedule time, measured in one run.

    python bench/bench_compiler.py [--copies 8] [--insertions 1000000] [--ray] [--hf | --only-hf]

Every figure is printed next to its anchor measured in the same process, since these machines are noisy:

- build: `injc.build` on the demo corpus repeated --copies times (no experiments, then ~1% of tokens injected),
  against a minimal pipeline that reads the same documents, calls `encode_batch_fast` and writes one memmap.
- schedule: `compile_schedule` placing --insertions random copies into a run filled to 30%.
- --hf: the same documents built from JSONL, from a saved Hugging Face dataset and through the parquet builder.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zstandard
from tokenizers import Tokenizer

import injc
from injc.compiler.schedule import Request, compile_schedule
from injc.shards.layout import Layout

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"


def make_corpus(folder: Path, copies: int) -> list[str]:
    lines = zstandard.ZstdDecompressor().stream_reader(open(DEMO / "data" / "stdlib.jsonl.zst", "rb")).read()
    (folder / "data").mkdir()
    for index in range(copies):
        (folder / "data" / f"part{index:03d}.jsonl").write_bytes(lines)
    return [json.loads(line)["text"] for line in lines.splitlines()] * copies


def minimal_pipeline(texts: list[str], out: Path) -> tuple[int, float]:
    """The anchor: read JSONL, encode_batch_fast, concatenate with EOS, write one uint16 memmap."""
    started = time.perf_counter()
    tokenizer = Tokenizer.from_file(str(DEMO / "tokenizer.json"))
    eos = tokenizer.token_to_id("<|endoftext|>")
    docs = []
    for path in sorted((out.parent / "data").iterdir()):
        with open(path, "rb") as handle:
            docs.extend(json.loads(line)["text"] for line in handle)
    parts = []
    for start in range(0, len(docs), 64):
        for encoding in tokenizer.encode_batch_fast(docs[start:start + 64], add_special_tokens=False):
            parts.append(np.asarray(encoding.ids, dtype=np.uint16))
            parts.append(np.array([eos], dtype=np.uint16))
    tokens = np.concatenate(parts)
    memmap = np.memmap(out, dtype=np.uint16, mode="w+", shape=tokens.shape)
    memmap[:] = tokens
    memmap.flush()
    return len(tokens), time.perf_counter() - started


def write_plan(folder: Path, steps: int, experiments: str) -> Path:
    (folder / "tokenizer.json").write_bytes((DEMO / "tokenizer.json").read_bytes())
    plan = folder / f"plan{len(experiments)}.toml"
    plan.write_text(f"""[layout]\nseq_len = 1024\nbatch_size = 32\nsteps = {steps}\nseed = 1\n
[tokenizer]\npath = "tokenizer.json"\n\n[corpus]\npaths = ["data/*.jsonl"]\n{experiments}""")
    return plan


def bench_build(copies: int, repeats: int) -> list[tuple[str, str, str]]:
    """Anchor and builds run interleaved `repeats` times; each figure is the median of its runs."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        texts = make_corpus(folder, copies)
        total, _ = minimal_pipeline(texts, folder / "anchor.bin")
        steps = total // (1024 * 32)
        payload = folder / "payload.jsonl"
        payload.write_text("".join(json.dumps({"text": t[:300]}) + "\n" for t in texts[:1000]))
        one_percent = max(1, int(0.01 * steps * 1024 * 32 / 100 / 1000))
        plans = {
            "injc build, no experiments": write_plan(folder, steps, ""),
            "injc build, ~1% injected": write_plan(folder, steps, '[[experiments]]\nname = "p"\nkind = "texts"\n'
                                                   f'file = "payload.jsonl"\nrepetitions = {one_percent}\n'),
        }
        speeds = {"anchor": [], **{label: [] for label in plans}}
        shares = {}
        for _ in range(repeats):
            count, seconds = minimal_pipeline(texts, folder / "anchor.bin")
            speeds["anchor"].append(count / seconds)
            for label, plan in plans.items():
                result = injc.build(plan, folder / "out", progress=False, force=True)
                speeds[label].append(result.tokens_per_second)
                share = result.inserted_tokens / result.total_tokens
                shares[label] = f" ({share:.2%} of {result.total_tokens:,} tokens)"
    anchor = float(np.median(speeds["anchor"]))
    rows = [("anchor: read + encode_batch_fast + memmap", f"{anchor:,.0f} tok/s", "")]
    for label in plans:
        speed = float(np.median(speeds[label]))
        rows.append((label + shares[label], f"{speed:,.0f} tok/s", f"{speed / anchor:.2f}× anchor"))
    return rows


def bench_schedule(insertions: int) -> list[tuple[str, str, str]]:
    layout = Layout(seq_len=2048, batch_size=512, steps=max(1, insertions // 1000))
    rng = np.random.default_rng(0)
    mean = 0.3 * layout.total_tokens / insertions
    lengths = np.clip(rng.integers(int(mean * 0.5), int(mean * 1.5) + 1, insertions), 2, layout.seq_len)
    started = time.perf_counter()
    schedule = compile_schedule(layout, [Request("bench", lengths, np.ones(insertions, int), "random")], seed=1)
    seconds = time.perf_counter() - started
    fill = schedule.length.sum() / layout.total_tokens
    return [(f"schedule {len(schedule):,} random copies, run {fill:.0%} full ({layout.total_tokens:,} tokens)",
             f"{seconds:.2f} s", "")]


def bench_ray(copies: int, repeats: int) -> list[tuple[str, str, str]]:
    """The demo corpus ×copies built locally and with --executor ray (a local instance, 2 workers), interleaved;
    the Ray figure includes starting the instance, as a user's command does."""
    from injc.compiler.workers import RayExecutor

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        texts = make_corpus(folder, copies)
        total = sum(len(t) for t in texts)  # characters, only to size the run below
        plan = write_plan(folder, max(1, total // 4 // (1024 * 32)), "")
        times = {"local": [], "ray": []}
        for _ in range(repeats):
            for label, workers in (("local", None), ("ray", RayExecutor(workers=2))):
                started = time.perf_counter()
                result = injc.build(plan, folder / "out", progress=False, force=True, workers=workers)
                times[label].append(time.perf_counter() - started)
    local, ray = (float(np.median(times[k])) for k in ("local", "ray"))
    return [(f"build on Ray (local instance, 2 workers), demo ×{copies}, {result.total_tokens:,} tokens",
             f"{ray:.1f} s", f"local build {local:.1f} s: {local / ray:.2f}×")]


def bench_hf(copies: int, repeats: int) -> list[tuple[str, str, str]]:
    """The demo corpus ×copies as JSONL, as a saved Hugging Face dataset and as parquet read by the `datasets`
    parquet builder: the same documents, the same build (no experiments), interleaved; tokens/s of each."""
    import datasets

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        texts = make_corpus(folder, copies)
        datasets.disable_progress_bars()
        datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(folder / "saved"))
        (folder / "parquet").mkdir()
        for index in range(copies):  # one file per JSONL file, as a builder reads them
            part = texts[index * len(texts) // copies:(index + 1) * len(texts) // copies]
            datasets.Dataset.from_dict({"text": part}).to_parquet(str(folder / "parquet" / f"part{index:03d}.parquet"))
        total, _ = minimal_pipeline(texts, folder / "anchor.bin")
        plans = {"jsonl": write_plan(folder, total // (1024 * 32), "")}
        for label, corpus in (("saved dataset", 'paths = ["saved"]\nformat = "hf"'),
                              ("parquet builder", 'paths = ["parquet/*.parquet"]\nformat = "hf"\nbuilder = "parquet"')):
            plans[label] = folder / f"{label.split()[0]}.toml"
            plans[label].write_text(plans["jsonl"].read_text().replace('paths = ["data/*.jsonl"]', corpus))
        speeds = {label: [] for label in plans}
        for _ in range(repeats):
            for label, plan in plans.items():
                speeds[label].append(injc.build(plan, folder / "out", progress=False, force=True).tokens_per_second)
    jsonl_speed = float(np.median(speeds["jsonl"]))
    rows = [(f"build from JSONL, demo ×{copies}", f"{jsonl_speed:,.0f} tok/s", "")]
    for label in ("saved dataset", "parquet builder"):
        speed = float(np.median(speeds[label]))
        rows.append((f"build from a {label}, same documents", f"{speed:,.0f} tok/s",
                     f"{speed / jsonl_speed:.2f}× JSONL"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=8, help="demo corpus repetitions (about 1.2M tokens each)")
    parser.add_argument("--insertions", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per figure (median)")
    parser.add_argument("--ray", action="store_true", help="also build on a local Ray instance (needs ray)")
    parser.add_argument("--hf", action="store_true", help="also build from a Hugging Face dataset (needs datasets)")
    parser.add_argument("--only-hf", action="store_true", help="only the Hugging Face dataset figures")
    args = parser.parse_args()
    rows = [] if args.only_hf else bench_build(args.copies, args.repeats) + bench_schedule(args.insertions)
    if args.ray and not args.only_hf:
        rows += bench_ray(args.copies, args.repeats)
    if args.hf or args.only_hf:
        rows += bench_hf(args.copies, args.repeats)
    width = max(len(r[0]) for r in rows)
    for name, figure, ratio in rows:
        print(f"{name:<{width}}  {figure:>16}  {ratio}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
