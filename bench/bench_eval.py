"""Eval throughput (P7): `injc eval`'s scored tokens/s against a bare batched forward pass of the same model over
the same sequences, on the demo and on a plan with 10,000 canaries (texts, with as many controls).

    python bench/bench_eval.py [--repeats 3] [--batch-size 16] [--hf] [--model YAML]

The eval is timed whole, from reading the build to the report of one checkpoint (`evaluate_checkpoint` given the
loaded model: manifest, items, every family's stats and holdout rows included; loading the weights, once per
model, is not), on CUDA when there is one. The sequences it scores are recorded on the way (every
Scorer.token_losses call) and the bare loop forwards exactly those, sorted by length and padded per batch as any
batched scorer must, timing only the forward passes. Each side runs in a process of its own (one untimed run first,
then several timed ones), and the processes alternate: in one process, each side would run on the heap the other
left behind, which on a CPU decides how many page faults a batch's logits cost. Figures are medians.
Goal: ratio ≥ 0.8. `--hf` scores the model's Hugging Face conversion (transformers) instead of LitGPT.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import injc
from injc.evals.model import Scorer
from injc.evals.report import evaluate_checkpoint
from injc.train.hf import convert

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo"


def canary_plan(folder: Path, count: int = 10_000) -> Path:
    """The demo corpus with `count` canary texts inserted once each and `count` never-inserted controls."""
    rng = np.random.default_rng(0)
    words = [f"{w}{n}" for w, n in zip(rng.choice(["zq", "xv", "kj", "wp"], 12 * count),
                                      rng.integers(0, 10_000, 12 * count))]
    lines = [" ".join(words[6 * i:6 * i + 6]) for i in range(2 * count)]
    (folder / "canaries.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in lines[:count]))
    (folder / "controls.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in lines[count:]))
    plan = (DEMO / "plan.toml").read_text().split("[[experiments]]")[0]
    plan = plan.replace('path = "tokenizer.json"', f'path = "{DEMO / "tokenizer.json"}"')
    plan = plan.replace('paths = ["data/*.jsonl.zst"]', f'paths = ["{DEMO}/data/*.jsonl.zst"]')
    plan += ('[[experiments]]\nname = "canaries"\nkind = "texts"\nfile = "canaries.jsonl"\n'
             'controls = "controls.jsonl"\nrepetitions = 1\n')
    (folder / "plan.toml").write_text(plan)
    return folder / "plan.toml"


def random_checkpoint(manifest: Path, folder: Path, model_yaml: Path) -> Path:
    """A randomly initialised LitGPT checkpoint of the demo model (throughput does not depend on training)."""
    from litgpt.model import GPT
    from litgpt.utils import save_config

    from injc.train.trainer import model_config

    config = model_config(str(model_yaml), injc.load_manifest(manifest))
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(GPT(config).state_dict(), folder / "lit_model.pth")
    save_config(config, folder)
    return folder


def timed_eval(manifest: Path, scorer: Scorer) -> tuple[float, list]:
    """Seconds of one whole evaluation of a loaded model and the sequences it scored, as the scorer fits them to
    the model's context."""
    recorded = []
    original = Scorer.token_losses

    def recording(self, sequences, scored_from):
        recorded.extend(self._fit(np.asarray(s, dtype=np.int64)) for s in sequences)
        return original(self, sequences, scored_from)

    Scorer.token_losses = recording
    try:
        started = time.perf_counter()
        evaluate_checkpoint(manifest, scorer, progress=False)
        seconds = time.perf_counter() - started
    finally:
        Scorer.token_losses = original
    return seconds, recorded


def bare_forward(scorer: Scorer, sequences: list, batch_size: int, with_loss: bool = False) -> float:
    """Seconds of forward passes alone over the same sequences: sorted by length, right-padded per batch; with
    `with_loss`, plus one cross-entropy over each batch's logits (the least any scorer must add)."""
    order = np.argsort([len(s) for s in sequences])
    batches = []
    for start in range(0, len(order), batch_size):
        group = [sequences[i] for i in order[start:start + batch_size]]
        batch = np.zeros((len(group), max(len(s) for s in group)), dtype=np.int64)
        for row, seq in enumerate(group):
            batch[row, :len(seq)] = seq
        batches.append(torch.from_numpy(batch).to(scorer.device))
    model = scorer.backend
    synchronize = torch.cuda.synchronize if scorer.device.type == "cuda" else (lambda: None)
    with torch.no_grad(), scorer._autocast():
        synchronize()
        started = time.perf_counter()
        for batch in batches:
            logits = model.logits(batch[:, :-1])
            if with_loss:
                torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="none")
        synchronize()
    return time.perf_counter() - started


def child(args) -> None:
    """One side of the comparison in this process: an untimed run (the eval also records the sequences), then
    `--times` timed ones; prints the scored tokens and the median seconds as JSON."""
    scorer = Scorer(args.checkpoint, injc.load_manifest(args.manifest).data["layout"]["eos_id"],
                    batch_size=args.batch_size)
    _, sequences = timed_eval(args.manifest, scorer)
    run = {"eval": lambda: timed_eval(args.manifest, scorer)[0],
           "bare": lambda: bare_forward(scorer, sequences, args.batch_size),
           "loss": lambda: bare_forward(scorer, sequences, args.batch_size, with_loss=True)}[args.child]
    run()
    seconds = statistics.median(run() for _ in range(args.times))
    print(json.dumps({"sequences": len(sequences), "tokens": sum(len(s) - 1 for s in sequences),
                      "seconds": seconds}))


def measure(name: str, manifest: Path, checkpoint: Path, times: int, args) -> None:
    speeds = {"eval": [], "bare": [], "loss": []}
    for _ in range(args.repeats):
        for side in speeds:
            out = subprocess.run([sys.executable, __file__, "--child", side, "--manifest", str(manifest),
                                  "--checkpoint", str(checkpoint), "--batch-size", str(args.batch_size),
                                  "--times", str(times)], check=True, capture_output=True, text=True).stdout
            figures = json.loads(out.splitlines()[-1])
            speeds[side].append(figures["tokens"] / figures["seconds"])
    eval_speed, bare_speed, loss_speed = (statistics.median(speeds[side]) for side in speeds)
    print(f"{name}: {figures['sequences']:,} sequences, {figures['tokens']:,} scored tokens; injc eval "
          f"{eval_speed:,.0f} tok/s; bare forward {bare_speed:,.0f} tok/s, ratio {eval_speed / bare_speed:.2f} "
          f"(runs: {', '.join(f'{e / b:.2f}' for e, b in zip(speeds['eval'], speeds['bare']))}; goal ≥ 0.8); "
          f"bare forward + cross-entropy {loss_speed:,.0f} tok/s, ratio {eval_speed / loss_speed:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", type=Path, default=DEMO / "tiny-gpt.yaml")
    parser.add_argument("--hf", action="store_true", help="score the Hugging Face conversion (transformers)")
    parser.add_argument("--child", choices=["eval", "bare", "loss"], help=argparse.SUPPRESS)
    parser.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--times", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    device = "cuda (bf16 autocast)" if torch.cuda.is_available() else "cpu (float32)"
    print(f"P7 eval throughput: {args.model.name}, batch {args.batch_size}, {device}, "
          f"{'transformers' if args.hf else 'LitGPT'}, torch {torch.__version__}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "canaries").mkdir()
        plans = (("demo", DEMO / "plan.toml", 10), ("10,000 canaries", canary_plan(tmp / "canaries"), 2))
        for name, plan, times in plans:
            out = tmp / name.replace(",", "").replace(" ", "-")
            injc.build(plan, out / "build", progress=False)
            checkpoint = random_checkpoint(out / "build" / "manifest.json", out / "model", args.model)
            if args.hf:
                checkpoint = convert(checkpoint, "hf", out / "hf")
            measure(name, out / "build" / "manifest.json", checkpoint, times, args)


if __name__ == "__main__":
    main()
