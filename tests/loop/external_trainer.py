"""A training script that is not injc's, as a lab's own would be: it reads the build's shards through the format
contract (docs/format.md: the manifest's shards in order, step s = tokens [s·B·L, (s+1)·B·L) as B rows of L) with
numpy alone, trains a transformers model with AdamW for steps [from, to), continuing from --init (a Hugging Face
folder), saves a Hugging Face folder to --out and appends each consumed batch's sha256 to --batches.

    python external_trainer.py --manifest M --from-step A --to-step B --init DIR --out DIR --batches FILE
        [--fail-if FILE] [--nanogpt DIR]

With --nanogpt DIR it reads an `injc export --to nanogpt` folder through nanoGPT's drop-in `StepBatches` instead,
from step A (`start_at`), as a nanoGPT train.py resumed at iter_num A would.
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def step_batch(manifest: Path, step: int) -> np.ndarray:
    data = json.loads(manifest.read_text())
    layout = data["layout"]
    size = layout["batch_size"] * layout["seq_len"]
    first, parts = step * size, []
    for shard in data["shards"]:
        start, end = shard["first_token"], shard["first_token"] + shard["num_tokens"]
        if end > first and start < first + size:
            tokens = np.memmap(manifest.parent / shard["path"], dtype=layout["dtype"], mode="r")
            parts.append(tokens[max(first, start) - start:min(first + size, end) - start])
    return np.concatenate(parts).astype(np.int64).reshape(layout["batch_size"], layout["seq_len"])


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--manifest", "--init", "--out", "--batches"):
        parser.add_argument(name, type=Path, required=True)
    parser.add_argument("--from-step", type=int, required=True)
    parser.add_argument("--to-step", type=int, required=True)
    parser.add_argument("--fail-if", type=Path, help="while this file exists, crash (exit 3) after the first step "
                                                       "of any window but the first")
    parser.add_argument("--nanogpt", type=Path, help="read this nanoGPT export with StepBatches")
    args = parser.parse_args()
    batches = None
    if args.nanogpt is not None:
        from injc.shards.nanogpt import StepBatches

        layout = json.loads(args.manifest.read_text())["layout"]
        batches = StepBatches(args.nanogpt, seq_len=layout["seq_len"], rows_per_step=layout["batch_size"],
                              micro_batch_size=layout["batch_size"], ddp_rank=0, ddp_world_size=1)
        batches.start_at(args.from_step)
    torch.manual_seed(args.from_step)
    model = AutoModelForCausalLM.from_pretrained(args.init, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(args.from_step, args.to_step):
        if batches is None:
            batch = step_batch(args.manifest, step)
        else:  # nanoGPT's (x, y): the rows without their last token, and shifted by one
            x, y = batches.get_batch("train")
            batch = torch.cat([x, y[:, -1:]], dim=1).numpy()
        digest = hashlib.sha256(batch.astype("<u4").tobytes()).hexdigest()
        with open(args.batches, "a") as log:
            log.write(json.dumps({"manifest": str(args.manifest), "step": step, "sha256": digest}) + "\n")
        loss = model(input_ids=torch.from_numpy(batch), labels=torch.from_numpy(batch)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"step {step} loss {loss.item():.4f}", flush=True)
        if args.fail_if is not None and args.fail_if.exists() and args.from_step > 0:
            print("trainer crashed", file=sys.stderr)
            sys.exit(3)
    model.save_pretrained(args.out)


if __name__ == "__main__":
    main()
