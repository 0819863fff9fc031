"""Trainer overhead (P4): `injc train` against a bare LitGPT forward/backward/AdamW loop, same model, same batches;
`injc train --devices 2` (Fabric DDP and FSDP) against 1 device, tokens/s of the whole step; and, with --litgpt,
against LitGPT's own `litgpt pretrain` on the same model and rows.

    python bench/bench_train.py [--steps 30] [--repeats 3] [--accelerator cpu|cuda] [--litgpt]

Builds the demo if needed, then alternates the loops `--repeats` times; each loop's figure is the median
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
from injc.shards.exports import export
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


def injc_loop(manifest, steps: int, micro_batch_size: int, out: Path, model: Path | str = MODEL,
              device: str | None = None) -> float:
    train(manifest, TrainConfig(model=str(model), out=out, steps=steps, micro_batch_size=micro_batch_size,
                                force=True, device=device), progress=False)
    speeds = [json.loads(line)["tokens_per_sec"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return float(np.median(speeds[2:]))


def devices_loop(manifest, steps: int, micro_batch_size: int, out: Path, devices: int, accelerator: str,
                 strategy: str = "ddp", model: Path | str = MODEL) -> float:
    """`injc train --devices N` through the CLI (Fabric spawns the processes); median tokens/s of a whole step."""
    subprocess.run([sys.executable, "-m", "injc", "train", str(manifest), "--model", str(model), "--out", str(out),
                    "--steps", str(steps), "--micro-batch-size", str(micro_batch_size), "--device", accelerator,
                    "--devices", str(devices), "--strategy", strategy, "--force", "--quiet"],
                   check=True, capture_output=True)
    speeds = [json.loads(line)["tokens_per_sec"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return float(np.median(speeds[2:]))


def litgpt_loop(manifest, steps: int, micro_batch_size: int, folder: Path, model: Path | str = MODEL,
                precision: str = "32-true") -> float:
    """`litgpt pretrain` (LitGPT's own CLI, one device: a GPU where there is one, `precision`) on the same model
    config and the build's rows, exported for LitData (LitGPT's LitData data module reads them, shuffled, with 0
    loader workers as injc train reads in-process). LitGPT logs rows/s per device over windows of 5 optimizer
    steps; × seq_len gives tokens/s counted as injc counts them (B × L a step). Median over the windows after the
    first."""
    import csv
    import dataclasses

    import yaml

    loaded = injc.load_manifest(manifest)
    layout = loaded.layout
    if not (folder / "litdata").exists():
        export(manifest, "litdata", folder / "litdata")
    out = folder / f"litgpt-{time.monotonic_ns()}"
    config = {
        "model_name": "tiny", "model_config": dataclasses.asdict(model_config(str(model), loaded)),
        "out_dir": str(out), "precision": precision, "devices": 1, "logger_name": "csv",
        "data": {"class_path": "litgpt.data.LitData",
                 "init_args": {"data_path": str(folder / "litdata"), "num_workers": 0}},
        "train": {"save_interval": None, "log_interval": 1, "global_batch_size": layout.batch_size,
                  "micro_batch_size": micro_batch_size, "max_norm": 1.0, "min_lr": 4e-5, "lr_warmup_steps": 2,
                  "tie_embeddings": False,
                  "max_tokens": steps * layout.batch_size * (layout.seq_len - 1)},  # LitGPT counts L − 1 a row
        "eval": {"interval": 10 ** 9, "max_iters": 1, "initial_validation": False, "final_validation": False},
    }
    (folder / "litgpt.yaml").write_text(yaml.safe_dump(config))
    subprocess.run([sys.executable, "-m", "litgpt", "pretrain", "--config", str(folder / "litgpt.yaml")],
                   check=True, capture_output=True)
    with open(next(out.glob("logs/**/metrics.csv"))) as handle:
        rows = [float(row["device/samples_per_sec"]) for row in csv.DictReader(handle)
                if row.get("device/samples_per_sec")]
    return float(np.median(rows[1:])) * layout.seq_len


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--accelerator", default="cpu", help="for the devices figure: cpu, or cuda on a GPU machine")
    parser.add_argument("--litgpt", action="store_true", help="also `litgpt pretrain` on one device (the CPU here)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build = injc.build(ROOT / "examples" / "demo" / "plan.toml", Path(tmp) / "demo", progress=False)
        bare, ours, litgpt = [], [], []
        for repeat in range(args.repeats):  # interleaved: the machine's drift hits every loop alike
            bare.append(bare_loop(build.manifest_path, args.steps, args.micro_batch_size))
            ours.append(injc_loop(build.manifest_path, args.steps, args.micro_batch_size, Path(tmp) / f"run{repeat}"))
            if args.litgpt:
                litgpt.append(litgpt_loop(build.manifest_path, args.steps, args.micro_batch_size, Path(tmp)))
        spread = {(devices, strategy): [devices_loop(build.manifest_path, args.steps, args.micro_batch_size,
                                                     Path(tmp) / f"devices{devices}", devices, args.accelerator,
                                                     strategy) for _ in range(args.repeats)]
                  for devices, strategy in ((1, "ddp"), (2, "ddp"), (2, "fsdp"))}
    bare_speed, our_speed = float(np.median(bare)), float(np.median(ours))
    rows = [("bare LitGPT loop (anchor)", bare_speed, ""),
            ("injc train", our_speed, f"{our_speed / bare_speed:.2f}× anchor (goal ≥ 0.95)")]
    if litgpt:
        theirs = float(np.median(litgpt))
        rows.append(("litgpt pretrain (1 device)", theirs, f"injc train {our_speed / theirs:.2f}× it"))
    one = float(np.median(spread[(1, "ddp")]))
    rows.append((f"injc train --devices 1 ({args.accelerator})", one, ""))
    for strategy in ("ddp", "fsdp"):
        two = float(np.median(spread[(2, strategy)]))
        rows.append((f"injc train --devices 2 --strategy {strategy} ({args.accelerator})", two,
                     f"{two / 2:,.0f} tok/s per device, {two / one:.2f}× one device"))
    for label, speed, note in rows:
        print(f"{label:<44}{speed:>10,.0f} tok/s   {note}")


if __name__ == "__main__":
    main()
