"""P8: `injc eval --benchmarks` against lm-evaluation-harness's own CLI (`lm_eval --model hf`) on the same model,
task and batch size, as whole processes: what injc adds around the harness (its import, the build's checks, the
report). The build holds no experiment, so injc scores nothing of its own.

    python bench/bench_benchmarks.py [--questions 400] [--repeats 3] [--batch-size 16]

The model is a Pythia-14m-shaped GPT-NeoX (random weights) with the demo's tokenizer; the task a local
multiple-choice task of --questions questions with four choices. Runs alternate injc, lm_eval, injc, ...; the
figure is the median ratio of the pairs (lm_eval's time over injc's: ≥ 1 means injc is as fast).
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"
PLAN = """[layout]
seq_len = 128
batch_size = 8
steps = 4
seed = 1

[tokenizer]
path = "{demo}/tokenizer.json"

[corpus]
paths = ["{demo}/data/*.jsonl.zst"]
"""


def make_model(folder: Path) -> None:
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=8192, hidden_size=128, num_hidden_layers=6, num_attention_heads=4,
                                     intermediate_size=512, max_position_embeddings=2048)).save_pretrained(folder)
    (folder / "tokenizer.json").write_bytes((DEMO / "tokenizer.json").read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                              "eos_token": "<|endoftext|>"}))


def make_task(folder: Path, questions: int) -> None:
    rng = random.Random(0)
    words = "the model reads every token of the stream once and the schedule places each payload".split()
    with open(folder / "bench_task.jsonl", "w") as rows:
        for _ in range(questions):
            choices = [" ".join(rng.choices(words, k=rng.randint(1, 6))) for _ in range(4)]
            rows.write(json.dumps({"question": " ".join(rng.choices(words, k=12)), "choices": choices,
                                   "answer": rng.randrange(4)}) + "\n")
    (folder / "bench_task.yaml").write_text(
        "task: bench_task\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {folder / 'bench_task.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
        "doc_to_target: answer\ndoc_to_choice: choices\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n")


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                                  "HF_DATASETS_OFFLINE": "1"})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    import injc

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "plan.toml").write_text(PLAN.format(demo=DEMO))
        injc.build(root / "plan.toml", root / "build", progress=False)
        make_model(root / "model")
        (root / "tasks").mkdir()
        make_task(root / "tasks", args.questions)
        batch = str(args.batch_size)
        ours = [shutil.which("injc"), "eval", str(root / "build"), "--checkpoint", str(root / "model"),
                "--out", str(root / "report"), "--force", "--quiet", "--benchmarks", "bench_task", "--tasks-dir",
                str(root / "tasks"), "--batch-size", batch]
        theirs = ["lm_eval", "--model", "hf", "--model_args", f"pretrained={root / 'model'}", "--tasks", "bench_task",
                  "--include_path", str(root / "tasks"), "--batch_size", batch, "--device", "cpu"]
        timed(theirs)  # warm-up: the page cache and Python's bytecode
        pairs = [(timed(ours), timed(theirs)) for _ in range(args.repeats)]
    injc_s, lm_eval_s = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
    ratio = statistics.median(theirs_s / ours_s for ours_s, theirs_s in pairs)
    print(f"P8 {args.questions} questions × 4 choices, batch {args.batch_size}: injc eval --benchmarks "
          f"{injc_s:.1f} s, lm_eval --model hf {lm_eval_s:.1f} s (medians of {args.repeats}); "
          f"lm_eval / injc = {ratio:.2f}× (target ≥ 0.95×)")


if __name__ == "__main__":
    main()
