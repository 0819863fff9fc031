"""Every device check in one run (`bash bench/gpu.sh`), its figures in one JSON file: (a) `injc train` against
`litgpt pretrain` (same model, rows, batch and precision) with MFU; (b) `injc train --devices N --strategy fsdp`
on all visible GPUs where N > 1; (c) `injc eval` in bf16 against float32 on the same checkpoint (every number
within its stated tolerance) and its speed against a bare batched bf16 forward pass (P7); (d) greedy generation
(the math eval's) against transformers' `generate` on the same model.

    bash bench/gpu.sh [--smoke] [--out gpu.json]

On a GPU: a Pythia-160M-size model (LitGPT's `pythia-160m` with the build's vocabulary) on a build of about 200M
tokens, in bf16-mixed; it should finish in under 8 minutes on one H100. `--smoke`: the same checks at toy size on
the CPU (float32 training; the bf16 eval under CPU autocast), so the script cannot rot: the test suite runs it.
"""

import argparse
import dataclasses
import datetime
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval import bare_forward, timed_eval  # noqa: E402
from bench_scale import tokens_plan  # noqa: E402
from bench_train import devices_loop, injc_loop, litgpt_loop  # noqa: E402

import injc  # noqa: E402
from injc.evals.model import Scorer  # noqa: E402
from injc.evals.report import evaluate_checkpoint  # noqa: E402
from injc.train.hf import convert  # noqa: E402
from injc.train.trainer import model_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}
"""Dense bf16 peak FLOP/s by GPU model (vendors' figures), for MFU."""
TOLERANCES = {"token_loss": 0.05, "mean_loss": 0.005, "heldout_loss": 0.005}
"""bf16 against float32, in nats: one token's loss, a mean over an experiment's tokens, the held-out loss."""
SIZES = {
    "gpu": {"model": "pythia-160m", "seq_len": 2048, "batch_size": 32, "tokens": 200 * 2**20, "steps": 30,
            "micro_batch_size": 8, "items": 2000, "prompts": 8, "new_tokens": 128},
    "smoke": {"model": str(ROOT / "examples" / "demo" / "tiny-gpt.yaml"), "seq_len": 128, "batch_size": 8,
              "tokens": 128 * 8 * 24, "steps": 8, "micro_batch_size": 4, "items": 24, "prompts": 2, "new_tokens": 8},
}


def mfu(tokens_per_second: float, config, device: str) -> float | None:
    """Model FLOPs utilisation: 6 FLOPs per parameter per token plus attention's 12·layers·width·context, over the
    GPU's bf16 peak (None off a known GPU)."""
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    peak = next((flops for model, flops in PEAK_BF16_FLOPS.items() if model in name), None)
    if peak is None:
        return None
    from litgpt.model import GPT

    with torch.device("meta"):
        parameters = sum(p.numel() for p in GPT(config).parameters())
    per_token = 6 * parameters + 12 * config.n_layer * config.n_embd * config.block_size
    return tokens_per_second * per_token / peak


def train_figures(manifest: Path, size: dict, device: str, folder: Path) -> dict:
    precision = "bf16-mixed" if device == "cuda" else "32-true"
    ours = injc_loop(manifest, size["steps"], size["micro_batch_size"], folder / "run", size["model"], device)
    theirs = litgpt_loop(manifest, size["steps"], size["micro_batch_size"], folder, size["model"], precision)
    config = model_config(size["model"], injc.load_manifest(manifest))
    return {"precision": precision, "injc_tokens_per_s": ours, "litgpt_pretrain_tokens_per_s": theirs,
            "ratio": ours / theirs, "goal": 0.95, "mfu": mfu(ours, config, device),
            "model": dataclasses.asdict(config) | {"name": size["model"]}}


def fsdp_figures(manifest: Path, size: dict, device: str, folder: Path) -> dict:
    count = torch.cuda.device_count() if device == "cuda" else 1
    if count < 2:
        return {"skipped": f"{count} device visible: FSDP needs 2 or more"}
    speed = devices_loop(manifest, size["steps"], size["micro_batch_size"], folder / "fsdp", count, "cuda", "fsdp",
                         size["model"])
    return {"devices": count, "tokens_per_s": speed, "per_device": speed / count}


def eval_figures(manifest: Path, checkpoint: Path, device: str) -> dict:
    """Both precisions' reports and token losses on the same checkpoint, then bf16 eval against a bare forward."""
    eos = injc.load_manifest(manifest).data["layout"]["eos_id"]
    scorers = {p: Scorer(checkpoint, eos, device, precision=p) for p in ("32-true", "bf16-mixed")}
    reports = {p: evaluate_checkpoint(manifest, scorer, progress=False) for p, scorer in scorers.items()}
    rows = [injc.open_stream(manifest).batch(0)[row] for row in range(4)]
    losses = {p: np.concatenate(s.token_losses(rows, [1] * len(rows))) for p, s in scorers.items()}
    differences = {"token_loss": float(np.abs(losses["bf16-mixed"] - losses["32-true"]).max())}
    if reports["32-true"]["heldout"] is not None:  # a build with a held-out tail
        differences["heldout_loss"] = abs(reports["bf16-mixed"]["heldout"]["loss"]
                                          - reports["32-true"]["heldout"]["loss"])
    means = [(reports["bf16-mixed"]["experiments"][name]["metrics"]["mean_loss"], e["metrics"]["mean_loss"])
             for name, e in reports["32-true"]["experiments"].items()]
    differences["mean_loss"] = max(abs(a - b) for a, b in means if b is not None)
    seconds, sequences = timed_eval(manifest, scorers["bf16-mixed"])
    bare = bare_forward(scorers["bf16-mixed"], sequences, scorers["bf16-mixed"].batch_size)
    tokens = sum(len(s) - 1 for s in sequences)
    return {"max_difference": differences, "tolerance": TOLERANCES,
            "within": all(difference <= TOLERANCES[k] for k, difference in differences.items()),
            "p7": {"eval_tokens_per_s": tokens / seconds, "bare_forward_tokens_per_s": tokens / bare,
                   "ratio": bare / seconds, "goal": 0.8, "sequences": len(sequences)}}


def generation_figures(manifest: Path, checkpoint: Path, size: dict, device: str, folder: Path) -> dict:
    """The math eval's greedy decoding (Scorer.greedy: LitGPT's generate with its KV cache) against transformers'
    generate on the model's Hugging Face conversion: tokens/s, and whether they chose the same tokens."""
    from transformers import AutoModelForCausalLM

    manifest_data = injc.load_manifest(manifest)
    eos = manifest_data.data["layout"]["eos_id"]
    scorer = Scorer(checkpoint, eos, device)
    hf = AutoModelForCausalLM.from_pretrained(convert(checkpoint, "hf", folder / "hf", manifest),
                                              dtype=torch.float32).to(device).eval()
    prompts = [injc.open_stream(manifest).batch(1)[row][:64] for row in range(size["prompts"])]
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    ours, theirs, same = 0.0, 0.0, []
    for prompt in prompts:
        started = time.perf_counter()
        mine = scorer.greedy(prompt, size["new_tokens"])
        synchronize()
        ours += time.perf_counter() - started
        tokens = torch.from_numpy(prompt.astype(np.int64))[None].to(device)
        with torch.no_grad(), scorer._autocast():
            started = time.perf_counter()
            generated = hf.generate(tokens, attention_mask=torch.ones_like(tokens), do_sample=False,
                                    max_new_tokens=size["new_tokens"], min_new_tokens=size["new_tokens"],
                                    pad_token_id=eos)
            synchronize()
            theirs += time.perf_counter() - started
        same.append(float(np.mean(generated[0, len(prompt):].cpu().numpy() == mine)))
    produced = size["prompts"] * size["new_tokens"]
    return {"injc_tokens_per_s": produced / ours, "transformers_tokens_per_s": produced / theirs,
            "ratio": theirs / ours, "same_tokens": float(np.mean(same)), "precision": scorer.precision}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (what the test suite runs)")
    parser.add_argument("--out", type=Path, default=Path("gpu.json"))
    args = parser.parse_args()
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.sh: no CUDA device here (--smoke runs the checks on the CPU)")
    size = SIZES["smoke" if args.smoke else "gpu"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plan = tokens_plan(folder, size["tokens"], size["seq_len"], size["batch_size"], size["items"], 2, 16, 48)
        manifest = injc.build(plan, folder / "build", progress=False).manifest_path
        figures = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                   "date": datetime.date.today().isoformat(), "smoke": args.smoke, "torch": torch.__version__,
                   "size": size, "train": train_figures(manifest, size, device, folder),
                   "fsdp": fsdp_figures(manifest, size, device, folder)}
        checkpoint = folder / "run" / "final"
        figures["eval"] = eval_figures(manifest, checkpoint, device)
        figures["generation"] = generation_figures(manifest, checkpoint, size, device, folder)
        shutil.rmtree(folder / "hf", ignore_errors=True)
    figures["seconds"] = time.perf_counter() - started
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    shown = {k: figures[k] for k in ("device", "train", "fsdp", "eval", "generation", "seconds")}
    shown["train"] = {k: v for k, v in figures["train"].items() if k != "model"}
    print(json.dumps(shown, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
