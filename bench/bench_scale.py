"""Scale benchmarks (P2, P3, P5, inspect/verify), each figure next to its anchor measured in the same run:

    python bench/bench_scale.py [--tokens 512M] [--repeats 3] [--huge]

- P2: a pre-tokenized base (`format = "tokens"`) with ~700k insertions → shards; anchor: `cp` of the same bytes
  plus `sha256sum` of the copy. Goal: anchor time / build time ≥ 0.5.
- P3: scheduling random copies into a run filled to 30%, against the reference algorithm (random draws,
  an ordered interval set, retries, and a silent drop once collisions exceed 10× the copies), same workloads.
  Goal: 1M copies ≤ 1 s, ≥ 30× faster than the reference at 1M, nothing dropped. With --huge, 1M, 10M and 100M
  copies each in a fresh process (time and peak RSS; goal at 100M: ≤ 2 min, ≤ 8 GB, linear growth).
- P5: peak RSS of `injc build` on the demo corpus ×1 and ×10 (streaming: flat).
- inspect and verify on a build with 10M insertions.
"""

import argparse
import bisect
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import injc
from injc.compiler.schedule import Request, compile_schedule
from injc.shards.layout import Layout

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "examples" / "demo" / "tokenizer.json"


def median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def tokens_plan(folder: Path, tokens: int, seq_len: int, batch_size: int, items: int, repetitions: int,
                low: int, high: int) -> Path:
    rng = np.random.default_rng(0)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    with open(folder / "data" / "base.bin", "wb") as base:
        for start in range(0, tokens, 1 << 26):
            rng.integers(0, 8192, min(1 << 26, tokens - start), dtype=np.uint16).tofile(base)
    shutil.copyfile(TOKENIZER, folder / "tokenizer.json")
    with open(folder / "payload.jsonl", "w") as out:
        for _ in range(items):
            out.write(json.dumps({"tokens": rng.integers(256, 8192, rng.integers(low, high)).tolist()}) + "\n")
    plan = folder / "plan.toml"
    plan.write_text(f"[layout]\nseq_len = {seq_len}\nbatch_size = {batch_size}\nsteps = "
                    f"{tokens // (seq_len * batch_size)}\n[tokenizer]\npath = \"tokenizer.json\"\n[corpus]\n"
                    f"paths = [\"data/base.bin\"]\nformat = \"tokens\"\ndtype = \"uint16\"\n[[experiments]]\n"
                    f"name = \"p\"\nkind = \"tokens\"\nfile = \"payload.jsonl\"\nrepetitions = {repetitions}\n")
    return plan


def p2(tokens: int, repeats: int) -> list[tuple]:
    """The anchor, a rebuild (the corpus hash remembered from the build before) and a first build (a fresh hash
    cache: the corpus hashed too), interleaved, each timed in this process (imports excluded)."""
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        folder = Path(tmp)
        plan = tokens_plan(folder, tokens, 2048, 64, 7000, 100, 50, 150)
        copy = folder / "copy.bin"

        def anchor():
            subprocess.run(["cp", str(folder / "data" / "base.bin"), str(copy)], check=True)
            subprocess.run(["sha256sum", str(copy)], check=True, capture_output=True)

        result = {}

        def build():
            result["r"] = injc.build(plan, folder / "out", force=True, progress=False)

        def first_build():
            os.environ["INJC_CACHE_DIR"] = tempfile.mkdtemp(dir=folder)
            try:
                build()
            finally:
                del os.environ["INJC_CACHE_DIR"]

        build()  # warm-up: imports, and the corpus hash remembered
        times = {"anchor": [], "rebuild": [], "first": []}
        for _ in range(repeats):
            for name, function in (("anchor", anchor), ("rebuild", build), ("first", first_build)):
                times[name].append(median_time(function, 1))
        anchor_seconds, rebuild, first = (float(np.median(times[k])) for k in ("anchor", "rebuild", "first"))
        r = result["r"]
    what = (f"{r.total_tokens:,} tokens, {r.insertions:,} insertions ({r.inserted_tokens / r.total_tokens:.1%})")
    return [(f"P2 tokens base → shards, {what}, rebuild (corpus hash remembered)", f"{rebuild:.2f} s",
             f"cp + sha256sum {anchor_seconds:.2f} s", f"{anchor_seconds / rebuild:.2f} (goal ≥ 0.8)"),
            ("P2 same, first build (corpus hashed too)", f"{first:.2f} s",
             f"cp + sha256sum {anchor_seconds:.2f} s", f"{anchor_seconds / first:.2f} (goal ≥ 0.8)")]


def reference_schedule(layout: Layout, lengths: np.ndarray, seed: int) -> tuple[int, float]:
    """The reference algorithm (paper notes §5): returns (copies dropped, seconds)."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    starts, ends = [], []  # sorted, disjoint closed intervals
    collisions, dropped, limit = 0, 0, 10 * len(lengths)
    rows = layout.total_rows
    for length in lengths.tolist():
        while True:
            position = int(rng.integers(0, rows)) * layout.seq_len + int(rng.integers(0, layout.seq_len - length + 1))
            end = position + length - 1
            index = bisect.bisect_left(starts, position)
            overlaps = (index < len(starts) and starts[index] <= end) or (index > 0 and ends[index - 1] >= position)
            if not overlaps:
                starts.insert(index, position)
                ends.insert(index, end)
                break
            collisions += 1
            if collisions > limit:
                dropped += 1
                break
    return dropped, time.perf_counter() - started


def workload(copies: int, fill: float = 0.3) -> tuple[Layout, np.ndarray]:
    rng = np.random.default_rng(0)
    seq_len, mean = 2048, 64
    rows = max(1, int(copies * mean / fill / seq_len))
    layout = Layout(seq_len, 512, max(1, rows // 512))
    mean = fill * layout.total_tokens / copies
    return layout, np.clip(rng.integers(int(mean * 0.5), int(mean * 1.5) + 1, copies), 2, seq_len)


def p3(huge: bool, reference_max: int) -> list[tuple]:
    rows = []
    for copies, fill in ((10_000, 0.3), (100_000, 0.3), (300_000, 0.3), (1_000_000, 0.3), (1_000_000, 0.6)):
        layout, lengths = workload(copies, fill)
        times = []
        for _ in range(3):  # the median: a first call pays for fresh memory (100k once took 0.67 s, 300k 0.17 s)
            started = time.perf_counter()
            schedule = compile_schedule(layout, [Request("bench", lengths, np.ones(copies, int), "random")], seed=1)
            times.append(time.perf_counter() - started)
        ours = float(np.median(times))
        label = f"P3 schedule {copies:,} copies, run {fill:.0%} full"
        if copies > reference_max:
            rows.append((label, f"{ours:.2f} s ({len(schedule):,} placed)", "reference skipped", ""))
            continue
        dropped, reference = reference_schedule(layout, lengths, seed=1)
        rows.append((label, f"{ours:.2f} s ({len(schedule):,} placed)",
                     f"reference {reference:.2f} s ({dropped:,} dropped)", f"{reference / ours:.0f}× faster"))
    if huge:
        rows += schedule_curve()
    return rows


def schedule_curve() -> list[tuple]:
    """Time and peak RSS of one schedule of 1M, 10M and 100M random copies (run 30% full), each in a fresh
    process: the peak includes the request's own arrays (lengths and copies per item, 16 bytes a copy)."""
    code = ("import sys, time, numpy as np; sys.path.insert(0, {bench!r}); from bench_scale import workload; "
            "from injc.compiler.schedule import Request, compile_schedule; "
            "layout, lengths = workload({copies}); t = time.perf_counter(); "
            "s = compile_schedule(layout, [Request('bench', lengths, np.ones(len(lengths), int), 'random')], 1); "
            "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1]; "
            "print(time.perf_counter() - t, int(hwm) / 1024, len(s))")
    rows, first = [], None
    for copies in (1_000_000, 10_000_000, 100_000_000):
        output = subprocess.run([sys.executable, "-c", code.format(bench=str(ROOT / "bench"), copies=copies)],
                                check=True, capture_output=True, text=True).stdout.split()
        seconds, rss, placed = float(output[0]), float(output[1]), int(output[2])
        first = first or (seconds, rss, copies)
        goal = " (goal ≤ 120 s, ≤ 8 GB)" if copies == 100_000_000 else ""
        rows.append((f"P3 schedule {copies:,} copies, run 30% full, fresh process", f"{seconds:.1f} s",
                     f"peak RSS {rss:,.0f} MiB, {placed:,} placed",
                     f"{seconds / first[0]:.0f}× the time, {rss / first[1]:.1f}× the memory of "
                     f"{first[2]:,}{goal}"))
    return rows


def peak_rss_of_build(plan: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of `injc build` in a fresh process.

    The peak is the process's own VmHWM (/proc/self/status): Linux carries the pre-exec high-water mark of a forked
    child into ru_maxrss, so a child of a large parent reported the parent's peak (1,816 MiB for a 232 MiB build).
    """
    code = ("import time, injc; t = time.perf_counter(); "
            f"injc.build({str(plan)!r}, {str(out)!r}, force=True, progress=False); "
            "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1]; "
            "print(int(hwm) / 1024, time.perf_counter() - t)")
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return float(output[0]), float(output[1])


def p5() -> list[tuple]:
    import zstandard

    lines = zstandard.ZstdDecompressor().stream_reader(open(ROOT / "examples/demo/data/stdlib.jsonl.zst", "rb")).read()
    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        results = {}
        for copies in (1, 10):
            folder = Path(tmp) / f"x{copies}"
            (folder / "data").mkdir(parents=True)
            for index in range(copies):
                (folder / "data" / f"part{index:02d}.jsonl").write_bytes(lines)
            shutil.copyfile(TOKENIZER, folder / "tokenizer.json")
            steps = int(1_180_000 * copies / (256 * 64))
            (folder / "plan.toml").write_text(f"[layout]\nseq_len = 256\nbatch_size = 64\nsteps = {steps}\n"
                                              f"shard_tokens = 4194304\n[tokenizer]\npath = \"tokenizer.json\"\n"
                                              f"[corpus]\npaths = [\"data/*.jsonl\"]\n")
            results[copies] = (*peak_rss_of_build(folder / "plan.toml", folder / "out"), steps * 256 * 64)
        for copies, (rss, seconds, tokens) in results.items():
            rows.append((f"P5 peak RSS of injc build, demo corpus ×{copies} ({tokens:,} tokens)", f"{rss:,.0f} MiB",
                         f"{seconds:.1f} s", f"{rss / results[1][0]:.2f}× the ×1 build"))
    return rows


def inspect_verify() -> list[tuple]:
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        folder = Path(tmp)
        plan = tokens_plan(folder, 384 * 2**20, 2048, 64, 10_000, 1000, 4, 16)
        build = injc.build(plan, folder / "out", progress=False)
        inspect_seconds = median_time(lambda: injc.inspect(folder / "out").to_text(), 1)
        verify_seconds = median_time(lambda: injc.verify(folder / "out"), 1)
    label = f"{build.insertions:,} insertions in {build.total_tokens:,} tokens"
    return [(f"injc inspect, {label}", f"{inspect_seconds:.1f} s", f"build {build.seconds:.1f} s", ""),
            (f"injc verify, {label}", f"{verify_seconds:.1f} s", "", "")]


def exports(tokens: int, repeats: int) -> list[tuple]:
    """injc export of a build to olmo-core (every row moved to OLMo-core's order), megatron (the bytes copied, the
    order in the index) and nanogpt (the bytes copied) against `cp` of the same bytes, alternating: each export
    beside a cp run just before it; the ratio is the median of the pairs'."""
    from injc.shards.exports import export

    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        folder = Path(tmp)
        build = injc.build(tokens_plan(folder, tokens, 2048, 64, 7000, 100, 50, 150), folder / "out", progress=False)
        shards = sorted((folder / "out" / "shards").glob("*.bin"))

        def anchor():
            for shard in shards:
                subprocess.run(["cp", str(shard), str(folder / "copy.bin")], check=True)

        rows = []
        for target, seed in (("olmo-core", 1234), ("megatron", 1234), ("nanogpt", None)):
            def run_export():
                shutil.rmtree(folder / target, ignore_errors=True)
                export(build.manifest_path, target, folder / target, seed=seed)

            pairs = [(median_time(anchor, 1), median_time(run_export, 1)) for _ in range(repeats)]
            seconds, anchor_seconds = (float(np.median([p[i] for p in pairs])) for i in (1, 0))
            ratio = float(np.median([a / b for a, b in pairs]))
            rows.append((f"export --to {target}, {build.total_tokens:,} tokens", f"{seconds:.2f} s",
                         f"cp of the shards {anchor_seconds:.2f} s", f"cp / export {ratio:.2f}"))
            shutil.rmtree(folder / target, ignore_errors=True)
            if target == "olmo-core":
                olmo_export_seconds = seconds
        from injc.shards.locate import locate

        sequence = injc.open_stream(build.manifest_path).tokens(build.total_tokens // 3, build.total_tokens // 3 + 12)
        started = time.perf_counter()
        found = locate(build.manifest_path, sequence)
        rows.append((f"injc locate, one 12-token sequence in {build.total_tokens:,} tokens",
                     f"{time.perf_counter() - started:.2f} s", f"{len(found)} occurrence(s)", "seconds ✓"))
        plan = folder / "plan.toml"
        times = {"plain": [], "target": []}
        for _ in range(repeats):  # interleaved: this machine is noisy
            for name, target in (("plain", None), ("target", "olmo-core:1234")):
                started = time.perf_counter()
                injc.build(plan, folder / name, force=True, progress=False, target=target)
                times[name].append(time.perf_counter() - started)
        plain, direct = (float(np.median(times[name])) for name in ("plain", "target"))
        two_copies = plain + olmo_export_seconds
        rows.append((f"build --target olmo-core:1234 (rows written in OLMo-core's order, one copy), "
                     f"{build.total_tokens:,} tokens", f"{direct:.2f} s",
                     f"plain build {plain:.2f} s; plain build + export --to olmo-core {two_copies:.2f} s",
                     f"{direct / plain:.2f}× the plain build, {direct / two_copies:.2f}× build + export"))
    return rows


def parse_tokens(text: str) -> int:
    return int(float(text[:-1]) * 2**20) if text.endswith("M") else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=parse_tokens, default=512 * 2**20, help="P2 base size, e.g. 512M")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--huge", action="store_true", help="also the 1M, 10M, 100M schedule curve (6 GB)")
    parser.add_argument("--reference-max", type=int, default=300_000,
                        help="largest workload the (slow) reference runs on; 1000000 takes minutes")
    parser.add_argument("--only", choices=["p2", "p3", "p5", "inspect", "export"], help="run one figure")
    args = parser.parse_args()
    figures = {"p2": lambda: p2(args.tokens, args.repeats), "p3": lambda: p3(args.huge, args.reference_max), "p5": p5,
               "inspect": inspect_verify, "export": lambda: exports(args.tokens, args.repeats)}
    for name, figure in figures.items():
        if args.only in (None, name):
            for row in figure():
                print(" | ".join(row), flush=True)
    print(f"bench peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
