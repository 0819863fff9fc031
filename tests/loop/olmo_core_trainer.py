"""A training script on OLMo-core's own data path, as a lab's would be: the files and settings of {data}/export.json
(a build written in OLMo-core's order, `--target olmo-core:SEED`) go to OLMo-core's `NumpyFSLDataset` and
`NumpyDataLoaderConfig(...).build(dataset)`; a continued run restores the data loader's state from the checkpoint
it continues (OLMo-core's `load_state_dict`, which checks the dataset's fingerprint), reshuffles epoch 1 and
iterates, as OLMo-core's Trainer does. A transformers model trains on the batches; the checkpoint is a Hugging Face
folder plus the data loader's state; each consumed batch's sha256 is appended to --batches.

    python olmo_core_trainer.py --data DIR --from-step A --to-step B --init DIR --out DIR --batches FILE
"""

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from olmo_core.data import NumpyDataLoaderConfig, NumpyFSLDataset
from transformers import AutoModelForCausalLM

STATE = "data_loader.json"


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--data", "--init", "--out", "--batches"):
        parser.add_argument(name, type=Path, required=True)
    parser.add_argument("--from-step", type=int, required=True)
    parser.add_argument("--to-step", type=int, required=True)
    args = parser.parse_args()
    record = json.loads((args.data / "export.json").read_text())
    layout = record["layout"]
    manifest = json.loads((args.data / record["manifest"]["path"]).read_text())["layout"]
    dataset = NumpyFSLDataset(*(args.data / f["path"] for f in record["files"]), sequence_length=layout["seq_len"],
                              pad_token_id=0, eos_token_id=manifest["eos_id"], vocab_size=manifest["vocab_size"],
                              dtype=np.dtype(layout["dtype"]).type)
    loader = NumpyDataLoaderConfig(global_batch_size=layout["batch_size"] * layout["seq_len"], seed=record["seed"],
                                   work_dir=str(args.out.parent / "olmo-core-work")).build(dataset)
    if (args.init / STATE).is_file():
        loader.load_state_dict(json.loads((args.init / STATE).read_text()))
    loader.reshuffle(epoch=1)
    if loader.batches_processed != args.from_step:
        raise SystemExit(f"the data loader is at batch {loader.batches_processed}, the window starts at "
                         f"{args.from_step}")
    torch.manual_seed(args.from_step)
    model = AutoModelForCausalLM.from_pretrained(args.init, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step, batch in zip(range(args.from_step, args.to_step), loader):
        input_ids = batch["input_ids"].long()
        digest = hashlib.sha256(input_ids.numpy().astype("<u4").tobytes()).hexdigest()
        with open(args.batches, "a") as log:
            log.write(json.dumps({"data": str(args.data), "step": step, "sha256": digest}) + "\n")
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"step {step} loss {loss.item():.4f}", flush=True)
    model.save_pretrained(args.out)
    (args.out / STATE).write_text(json.dumps(loader.state_dict()))


if __name__ == "__main__":
    main()
