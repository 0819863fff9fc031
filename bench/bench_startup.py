"""Start-up of the commands people run most, as whole processes: `injc --help`, and `injc inspect` and
`injc locate` on a small build, against the bare Python interpreter starting (the floor every command pays).

    python bench/bench_startup.py [--repeats 7]

Each figure is the median of --repeats runs, interleaved with the anchor (these machines are noisy).
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import injc

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"
SMALL = """[layout]
seq_len = 64
batch_size = 8
steps = 60
seed = 1

[tokenizer]
path = "{demo}/tokenizer.json"

[corpus]
paths = ["{demo}/data/*.jsonl.zst"]

[[experiments]]
name = "canaries"
kind = "canaries"
hosts = "{demo}/payloads/hosts.jsonl"
lengths = [8]
repetitions = [1, 4]
per_condition = 10
holdout = 20
"""


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        plan = Path(folder) / "plan.toml"
        plan.write_text(SMALL.format(demo=DEMO))
        result = injc.build(plan, Path(folder) / "small", progress=False)
        manifest = str(result.manifest_path)
        injc_command = [sys.executable, "-m", "injc"]
        commands = {"injc --help": [*injc_command, "--help"],
                    f"injc inspect ({result.total_tokens:,}-token build)": [*injc_command, "inspect", manifest],
                    "injc locate --experiment canaries --item 0": [*injc_command, "locate", manifest, "--experiment",
                                                                   "canaries", "--item", "0"]}
        anchor = [sys.executable, "-c", "pass"]
        times = {name: [] for name in [*commands, "python -c pass"]}
        for _ in range(args.repeats):
            for name, command in commands.items():
                times[name].append(seconds(command))
            times["python -c pass"].append(seconds(anchor))
        for name, values in times.items():
            print(f"{name:<45} median {statistics.median(values):.3f} s  (min {min(values):.3f}, "
                  f"max {max(values):.3f}, {args.repeats} runs)")


if __name__ == "__main__":
    main()
