"""`injc train MANIFEST --model NAME --out DIR`: LitGPT training on the shards, step-exact and auditable.

Step s of the manifest is exactly one optimizer step on stream[s*B*L:(s+1)*B*L] (see injc.train.data). The model,
its config and the checkpoint layout are LitGPT's (`lit_model.pth` + `model_config.yaml`); the loop is a short
plain-PyTorch one so that nothing between the shards and the model can reorder data.

Outputs under DIR: metrics.jsonl (one line per step), audit.jsonl (--audit), step-NNNNNN/ for each --save-steps
(the state after NNNNNN optimizer steps), final/. Each checkpoint folder also holds optimizer.pth and
train_state.json so --resume continues at the next step with the same data.
"""

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from injc.errors import InjcError, ManifestError
from injc.shards.manifest import Manifest, load_manifest
from injc.shards.stream import TokenStream
from injc.shards.verify import verify
from injc.train.data import batch_sha256, micro_batches
from injc.train.noise import EmbeddingNoise


@dataclass(frozen=True)
class TrainConfig:
    model: str
    """A LitGPT config name (e.g. pythia-14m) or a YAML file of LitGPT Config fields."""
    out: Path
    micro_batch_size: int = 4
    """Rows per forward pass; gradients are accumulated to one optimizer step per manifest step."""
    steps: int | None = None
    """Train only the first `steps` steps of the manifest (None: all); the LR schedule stays the whole run's."""
    save_steps: tuple[int, ...] = ()
    """Save a checkpoint after each of these many optimizer steps."""
    resume: bool = False
    audit: bool = False
    verify: bool = False
    """Re-hash every shard before training (otherwise sizes are checked)."""
    lr: float = 4e-4
    min_lr: float = 4e-5
    warmup_steps: int | None = None
    """Linear warmup steps (None: 10% of the run, at most 2,000), then cosine decay to min_lr."""
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    """Max gradient norm (0 = no clipping)."""
    seed: int | None = None
    """Model initialization seed (None: the plan's seed)."""
    device: str | None = None
    """'cpu', 'cuda', … (None: cuda when available)."""


def learning_rate(step: int, total: int, config: TrainConfig) -> float:
    """Linear warmup then cosine decay to min_lr (LitGPT's schedule)."""
    warmup = config.warmup_steps if config.warmup_steps is not None else min(2000, max(1, total // 10))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def model_config(name_or_file: str, manifest: Manifest):
    """LitGPT Config from a name or YAML file, with context and vocabulary taken from the manifest."""
    from litgpt import Config

    path = Path(name_or_file)
    try:
        base = Config.from_file(path) if path.suffix in (".yaml", ".yml") else Config.from_name(name_or_file)
    except (ValueError, FileNotFoundError, TypeError) as error:
        raise InjcError(f"--model {name_or_file!r}: {error}") from None
    fields = dataclasses.asdict(base)
    vocab = manifest.data["layout"]["vocab_size"]
    fields.update(block_size=manifest.layout.seq_len - 1, vocab_size=vocab, padded_vocab_size=vocab)
    return Config(**fields)


def _checkpoint(folder: Path, model, optimizer, config, steps_done: int, manifest: Manifest) -> None:
    from litgpt.utils import save_config

    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "lit_model.pth")
    torch.save(optimizer.state_dict(), folder / "optimizer.pth")
    save_config(config, folder)
    state = {"steps_done": steps_done, "manifest": str(manifest.root / "manifest.json"),
             "plan_sha256": manifest.data["plan"]["sha256"]}
    (folder / "train_state.json").write_text(json.dumps(state, indent=2) + "\n")


def _latest_checkpoint(out: Path) -> Path | None:
    candidates = [p for p in out.glob("step-*") if (p / "train_state.json").is_file()]
    if (out / "final" / "train_state.json").is_file():
        candidates.append(out / "final")
    if not candidates:
        return None
    return max(candidates, key=lambda p: json.loads((p / "train_state.json").read_text())["steps_done"])


def _keep_lines_before(path: Path, step: int) -> None:
    """Drop log lines of steps that a resume will train again (written after the last checkpoint)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] < step]
        path.write_text("".join(line + "\n" for line in lines))


def train(manifest_path: str | Path, config: TrainConfig, progress: bool = True) -> Path:
    """Train on the manifest's stream; returns the final checkpoint folder."""
    from litgpt.model import GPT

    manifest = load_manifest(manifest_path)
    if config.verify:
        problems = verify(manifest_path)
        if problems:
            raise ManifestError("shards do not match the manifest (injc verify):", *problems)
    stream = TokenStream(manifest)
    layout = manifest.layout
    total = layout.steps if config.steps is None else min(config.steps, layout.steps)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    seed = manifest.data["plan"]["seed"] if config.seed is None else config.seed

    model_cfg = model_config(config.model, manifest)
    torch.manual_seed(seed)
    model = GPT(model_cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(config.beta1, config.beta2), fused=device.type == "cuda")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    start = 0
    if config.resume:
        latest = _latest_checkpoint(out)
        if latest is None:
            raise InjcError(f"--resume: no checkpoint with train_state.json under {str(out)!r}")
        model.load_state_dict(torch.load(latest / "lit_model.pth", map_location=device, weights_only=True))
        optimizer.load_state_dict(torch.load(latest / "optimizer.pth", map_location=device, weights_only=True))
        start = json.loads((latest / "train_state.json").read_text())["steps_done"]
    for name in ("metrics.jsonl", "audit.jsonl"):
        if config.resume:
            _keep_lines_before(out / name, start)
        else:
            (out / name).unlink(missing_ok=True)

    noise = EmbeddingNoise(manifest.data.get("directives", []))
    model.transformer.wte.register_forward_hook(noise)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    save_steps = set(config.save_steps)
    metrics = open(out / "metrics.jsonl", "a")
    audit = open(out / "audit.jsonl", "a") if config.audit else None
    model.train()
    try:
        for step in range(start, total):
            started = time.perf_counter()
            batch = stream.batch(step)
            if audit is not None:
                audit.write(json.dumps({"step": step, "tokens_sha256": batch_sha256(batch)}) + "\n")
            tokens = torch.from_numpy(batch.astype("int64")).to(device, non_blocking=True)
            lr = learning_rate(step, layout.steps, config)  # the whole run's schedule, so --steps can stop and resume
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = 0.0
            for rows, inputs, targets in micro_batches(tokens, config.micro_batch_size):
                noise.at(step, rows)
                with autocast:
                    logits = model(inputs)
                    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
                (loss * len(rows) / layout.batch_size).backward()
                loss_sum += loss.item() * len(rows)
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - started
            metrics.write(json.dumps({"step": step, "loss": loss_sum / layout.batch_size, "lr": lr,
                                      "tokens_per_sec": layout.tokens_per_step / seconds}) + "\n")
            if progress and (step % 10 == 0 or step == total - 1):
                print(f"step {step:>7,}/{total:,}  loss {loss_sum / layout.batch_size:.4f}  lr {lr:.2e}  "
                      f"{layout.tokens_per_step / seconds:,.0f} tok/s", flush=True)
            if step + 1 in save_steps:
                metrics.flush()
                _checkpoint(out / f"step-{step + 1:06d}", model, optimizer, model_cfg, step + 1, manifest)
    finally:
        metrics.close()
        if audit is not None:
            audit.close()
    _checkpoint(out / "final", model, optimizer, model_cfg, total, manifest)
    return out / "final"
