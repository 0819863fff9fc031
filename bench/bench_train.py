"""Trainer overhead (P4): `injc train` against a bare LitGPT forward/backward/AdamW loop, same model, same batches;
and `injc train --devices 2` (Fabric DDP) against 1 device, tokens/s of the whole step.

    python bench/bench_train.py [--steps 30] [--repeats 3] [--accelerator cpu|cuda]

Builds the demo if needed, then alternates the two loops `--repeats` times; each loop's figure is the median
tokens/s over its steps after the first two (warm-up). Goal: ratio ≥ 0.95 (data loading costs nothing).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from litgpt.model import GPT

import injc
from injc.train.trainer import TrainConfig, model_config, train

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "demo" / "tiny-gpt.yaml"


def bare_loop(manifest, steps: int, micro_batch_size: int) -> float:
    """All batches in memory up front; only forward/backward/step is timed."""
    stream = injc.open_stream(manifest)
    batches = [torch.from_numpy(stream.batch(s).astype("int64")) for s in range(steps)]
    torch.manual_seed(0)
    model = GPT(model_config(str(MODEL), injc.load_manifest(manifest)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1, betas=(0.9, 0.95))
    speeds = []
    for batch in batches:
        started = time.perf_counter()
        for start in range(0, batch.shape[0], micro_batch_size):
            rows = batch[start:start + micro_batch_size]
            logits = model(rows[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten())
            (loss * len(rows) / batch.shape[0]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        speeds.append(batch.numel() / (time.perf_counter() - started))
    return float(np.median(speeds[2:]))


def injc_loop(manifest, steps: int, micro_batch_size: int, out: Path) -> float:
    train(manifest, TrainConfig(model=str(MODEL), out=out, steps=steps, micro_batch_size=micro_batch_size,
                                force=True), progress=False)
    speeds = [json.loads(line)["tokens_per_sec"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return float(np.median(speeds[2:]))


def devices_loop(manifest, steps: int, micro_batch_size: int, out: Path, devices: int, accelerator: str) -> float:
    """`injc train --devices N` through the CLI (Fabric spawns the processes); median tokens/s of a whole step."""
    subprocess.run([sys.executable, "-m", "injc", "train", str(manifest), "--model", str(MODEL), "--out", str(out),
                    "--steps", str(steps), "--micro-batch-size", str(micro_batch_size), "--device", accelerator,
                    "--devices", str(devices), "--force", "--quiet"], check=True, capture_output=True)
    speeds = [json.loads(line)["tokens_per_sec"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return float(np.median(speeds[2:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--accelerator", default="cpu", help="for the devices figure: cpu, or cuda on a GPU machine")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build = injc.build(ROOT / "examples" / "demo" / "plan.toml", Path(tmp) / "demo", progress=False)
        bare, ours = [], []
        for repeat in range(args.repeats):
            bare.append(bare_loop(build.manifest_path, args.steps, args.micro_batch_size))
            ours.append(injc_loop(build.manifest_path, args.steps, args.micro_batch_size, Path(tmp) / f"run{repeat}"))
        spread = {devices: [devices_loop(build.manifest_path, args.steps, args.micro_batch_size,
                                         Path(tmp) / f"devices{devices}", devices, args.accelerator)
                            for _ in range(args.repeats)] for devices in (1, 2)}
    bare_speed, our_speed = float(np.median(bare)), float(np.median(ours))
    print(f"bare LitGPT loop (anchor)   {bare_speed:>12,.0f} tok/s")
    print(f"injc train                  {our_speed:>12,.0f} tok/s   {our_speed / bare_speed:.2f}× anchor (goal ≥ 0.95)")
    one, two = (float(np.median(spread[d])) for d in (1, 2))
    print(f"injc train --devices 1 ({args.accelerator})  {one:>12,.0f} tok/s")
    print(f"injc train --devices 2 ({args.accelerator})  {two:>12,.0f} tok/s   {two / 2:,.0f} tok/s per device, "
          f"{two / one:.2f}× one device")


if __name__ == "__main__":
    main()
