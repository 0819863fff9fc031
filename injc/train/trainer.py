"""`injc train MANIFEST --model NAME --out DIR`: LitGPT training on the shards, step-exact and auditable.

Step s of the manifest is exactly one optimizer step on stream[s*B*L:(s+1)*B*L] (see injc.train.data). The model,
its config and the checkpoint layout are LitGPT's (`lit_model.pth` + `model_config.yaml`); the loop is a short
one on Lightning Fabric (LitGPT's engine) so that nothing between the shards and the model can reorder data.

On several devices (`--devices N`, Fabric DDP or FSDP: injc.train.fsdp) every rank reads the whole step batch and
trains on its block of rows: rank r of N takes rows [r·B/N, (r+1)·B/N), in micro-batches as on one device;
gradients are summed over all B rows (each rank's loss is scaled by N/B per row, since both average), so one
optimizer step still consumes exactly the manifest's step. Rank 0 alone writes metrics, the audit (over the whole
batch) and checkpoints (with FSDP gathered whole from the shards first, so they are a single device's).

Outputs under DIR: metrics.jsonl (one line per step), audit.jsonl (--audit), step-NNNNNN/ for --save-every and
--save-steps (the state after NNNNNN optimizer steps), final/. Each checkpoint folder also holds optimizer.pth and
train_state.json (steps done and the manifest's identity) so --resume continues at the next step with the same
data, and refuses another manifest. A run folder holds one run: see `prepare_run_folder`.
"""

import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from injc.errors import InjcError, Interrupted, ManifestError
from injc.shards.files import folder_lock
from injc.shards.manifest import Manifest, load_manifest
from injc.shards.stream import TokenStream
from injc.shards.verify import verify
from injc.train.checkpoints import gathered, init_checkpoint, load_optimizer_state, save_checkpoint
from injc.train.data import batch_sha256, micro_batches
from injc.train.folders import (
    PRECISIONS,
    RECORDED_SETTINGS,
    check_same_model,
    empty_run_folder,
    latest_checkpoint,
    prepare_run_folder,
    resolve_settings,
)
from injc.train.fsdp import fsdp_strategy
from injc.train.hf import hf_config_of
from injc.train.noise import attach_embedding_noise
from injc.train.tracking import close_logger, experiment_logger


@dataclass(frozen=True)
class TrainConfig:
    model: str | None
    """A LitGPT config name (e.g. pythia-14m) or a YAML file of LitGPT Config fields (None with `init`)."""
    out: Path
    init: Path | None = None
    """Start from this checkpoint's weights and config (continued pretraining) instead of a fresh model: a LitGPT
    checkpoint, or a Hugging Face folder of an architecture LitGPT converts (GPT-NeoX, Llama, OLMo-2)."""
    init_optimizer: bool = False
    """With `init`: also load its optimizer.pth (AdamW moments); otherwise the optimizer starts fresh."""
    micro_batch_size: int | None = None
    """Rows per forward pass (default 4); gradients are accumulated to one optimizer step per manifest step."""
    steps: int | None = None
    """Train only the first `steps` steps of the manifest (None: all); the LR schedule stays the whole run's."""
    save_steps: tuple[int, ...] = ()
    """Save a checkpoint after exactly these step counts (a list: 100, 250, 1000)."""
    save_every: int | None = None
    """Save a checkpoint after every `save_every` steps (100 → after steps 100, 200, ...)."""
    resume: bool = False
    """Continue after the latest checkpoint in `out` (of the same manifest, else an error)."""
    force: bool = False
    """Replace an earlier run in `out` (a folder holding only what injc train writes)."""
    audit: bool = False
    verify: bool = False
    """Re-hash every shard before training (otherwise sizes are checked)."""
    lr: float | None = None
    min_lr: float | None = None
    warmup_steps: int | None = None
    """Linear warmup steps (default: 10% of the run, at most 2,000), then cosine decay to min_lr."""
    weight_decay: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    grad_clip: float | None = None
    """Max gradient norm (0 = no clipping)."""
    seed: int | None = None
    """Model initialization seed (default: the plan's seed)."""
    override_settings: bool = False
    """With `resume`: settings given that differ from the recorded ones replace them (otherwise an error).
    Every setting left None is the recorded one on a resume and the default (injc.train.folders) on a fresh run."""
    device: str | None = None
    """'cpu', 'cuda', … (None: cuda when available): Lightning Fabric's accelerator."""
    precision: str | None = None
    """Lightning's precision: 'bf16-mixed' (bf16 autocast, float32 weights) or '32-true' (None: bf16-mixed on CUDA,
    32-true elsewhere). Not a recorded setting: a resume may change it, as it may change the device."""
    devices: int = 1
    """Processes per node (Lightning Fabric); each optimizer step still consumes exactly the step's batch."""
    num_nodes: int = 1
    strategy: str = "ddp"
    """When devices × num_nodes > 1: 'ddp' (Fabric DDP: gloo on the CPU, nccl on CUDA) or 'fsdp' (parameters,
    gradients and optimizer state sharded: injc.train.fsdp)."""
    logger: str | None = None
    """Also log loss, learning rate and tokens/s per step with a Lightning logger: 'csv', 'tensorboard' or 'wandb'
    (under OUT/logs/; see injc.train.tracking). metrics.jsonl is written either way."""
    hf: bool = False
    """Also write every checkpoint as a Hugging Face folder (`<checkpoint>/hf`: config.json, model.safetensors and
    the build's tokenizer), which transformers, vLLM and lm-evaluation-harness load."""


def learning_rate(step: int, total: int, config: TrainConfig) -> float:
    """Linear warmup then cosine decay to min_lr (LitGPT's schedule); `config` has its settings resolved."""
    warmup = config.warmup_steps
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


def rank_rows(batch_size: int, world_size: int, rank: int) -> range:
    """The rows of every step batch that rank `rank` of `world_size` trains on: a contiguous block."""
    if batch_size % world_size:
        raise InjcError(f"--devices × --num-nodes = {world_size} does not divide the batch of {batch_size} rows: "
                        f"each rank must hold the same number of rows")
    share = batch_size // world_size
    return range(rank * share, (rank + 1) * share)


def process_rank(config: TrainConfig) -> int:
    """The global rank of this process as its launcher set it (0 in the process the user started)."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    return int(os.environ.get("NODE_RANK", 0)) * config.devices + int(os.environ.get("LOCAL_RANK", 0))


def _fabric(config: TrainConfig, sharded: bool):
    from lightning.fabric import Fabric

    accelerator = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    world = config.devices * config.num_nodes
    if config.precision not in (None, *PRECISIONS):
        raise InjcError(f"precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    precision = config.precision or ("bf16-mixed" if accelerator == "cuda" else "32-true")
    strategy = fsdp_strategy(world) if sharded else config.strategy if world > 1 else "auto"
    return Fabric(accelerator=accelerator, devices=config.devices, num_nodes=config.num_nodes, strategy=strategy,
                  precision=precision)


class StopRequest:
    """Ctrl-C during training asks to stop after the current step, with a checkpoint; a second one stops at once.

    Signal handlers can only be set from the main thread; elsewhere Ctrl-C keeps its default behaviour.
    """

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("injc: stopping after this step with a checkpoint (Ctrl-C again to stop at once)", file=sys.stderr,
              flush=True)

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _keep_lines_before(path: Path, step: int) -> None:
    """Drop log lines of steps that a resume will train again (written after the last checkpoint)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] < step]
        path.write_text("".join(line + "\n" for line in lines))


def train(manifest_path: str | Path, config: TrainConfig, progress: bool = True) -> Path:
    """Train on the manifest's stream; returns the final checkpoint folder.

    The process the user started holds the run folder's lock for the whole run: a second `injc train` or `injc run`
    into it is refused. Ctrl-C stops after the current step with a checkpoint (`Interrupted` says where);
    `--resume` continues it with the recorded settings.
    """
    manifest = load_manifest(manifest_path)
    if config.verify:
        problems = verify(manifest_path)
        if problems:
            raise ManifestError("shards do not match the manifest (injc verify):", *problems)
    layout = manifest.layout
    if config.steps is not None and config.steps > layout.steps:
        raise InjcError(f"--steps {config.steps:,} is more than the manifest's run of {layout.steps:,} steps")
    total = layout.steps if config.steps is None else config.steps
    if total > manifest.until_step:
        raise InjcError(f"the build is staged: it holds steps [0, {manifest.until_step:,}) of {layout.steps:,}; "
                        f"train with --steps ≤ {manifest.until_step:,} or grow the build (injc build --until-step)")
    if config.resume and config.model is None and config.init is None:  # the checkpoint holds its model's config
        latest = latest_checkpoint(Path(config.out)) if Path(config.out).is_dir() else None
        if latest is not None:
            config = dataclasses.replace(config, model=str(latest / "model_config.yaml"))
    if (config.model is None) == (config.init is None):
        raise InjcError("give --model (a fresh model) or --init (continue from a checkpoint, with its config)")
    if config.init_optimizer and config.init is None:
        raise InjcError("--init-optimizer goes with --init")
    if config.strategy not in ("ddp", "fsdp"):
        raise InjcError(f"--strategy {config.strategy!r}: injc trains with 'ddp' or 'fsdp'")
    rank_rows(layout.batch_size, config.devices * config.num_nodes, 0)  # a batch that splits evenly, before all
    if process_rank(config) != 0:
        return _train(manifest, config, total, progress)
    with folder_lock(Path(config.out), "training run"):
        return _train(manifest, config, total, progress)


def _train(manifest: Manifest, config: TrainConfig, total: int, progress: bool) -> Path:
    from litgpt.model import GPT

    stream, layout = TokenStream(manifest), manifest.layout
    if config.init is not None:
        model_cfg, init_state = init_checkpoint(config.init, manifest)
    else:
        model_cfg, init_state = model_config(config.model, manifest), None
    if config.hf:
        hf_config_of(model_cfg)  # a model transformers has no counterpart for is refused before any step
    out = Path(config.out)
    world = config.devices * config.num_nodes
    sharded = config.strategy == "fsdp" and world > 1
    fabric = _fabric(config, sharded)
    first_process = process_rank(config) == 0
    # the process the user started checks and prepares the folder before any other starts (they only read it)
    latest = prepare_run_folder(out, manifest, config, total) if first_process else None
    if latest is not None:
        check_same_model(model_cfg, latest)
    config = resolve_settings(config, manifest, latest)
    fabric.launch()
    if not first_process:
        latest = latest_checkpoint(out) if config.resume else None
        config = resolve_settings(config, manifest, latest)
    lead = fabric.global_rank == 0
    settings = {name: getattr(config, name) for name in RECORDED_SETTINGS}
    torch.manual_seed(config.seed)
    model = GPT(model_cfg)
    start = 0
    if init_state is not None:
        model.load_state_dict(init_state)
    if latest is not None:
        model.load_state_dict(torch.load(latest / "lit_model.pth", map_location="cpu", weights_only=True))
        start = json.loads((latest / "train_state.json").read_text())["steps_done"]
    model = fabric.setup_module(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(config.beta1, config.beta2), fused=fabric.device.type == "cuda")
    optimizer = fabric.setup_optimizers(optimizer)
    if init_state is not None and config.init_optimizer:
        path = Path(config.init) / "optimizer.pth"
        if not path.is_file():
            raise InjcError(f"--init-optimizer: {str(config.init)!r} has no optimizer.pth")
        load_optimizer_state(model, optimizer, path, sharded, fabric.device)
    if latest is not None:
        load_optimizer_state(model, optimizer, latest / "optimizer.pth", sharded, fabric.device)
    init = str(config.init) if config.init is not None else None
    if start == total:
        if progress and lead:
            print(f"{latest} has already trained {total:,} steps: nothing to do", flush=True)
        return latest
    created = not out.exists()
    if lead:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.jsonl", "audit.jsonl"):
            _keep_lines_before(out / name, start)
    fabric.barrier()

    def save(folder: Path, steps_done: int) -> None:
        state = gathered(model, optimizer, sharded, lead)
        if lead:
            save_checkpoint(folder, state, model_cfg, steps_done, manifest, init, settings, config.hf)
        fabric.barrier()

    noise = attach_embedding_noise(manifest, model.transformer.wte)
    mine = rank_rows(layout.batch_size, world, fabric.global_rank)
    save_steps = set(config.save_steps)
    metrics = open(out / "metrics.jsonl", "a", buffering=1) if lead else None  # line-buffered: a live log
    audit = open(out / "audit.jsonl", "a") if config.audit and lead else None
    tracker = experiment_logger(config.logger, out, start) if config.logger and lead else None
    bar = tqdm(total=total, initial=start, unit="step", desc="train", file=sys.stderr, disable=not (progress and lead),
               dynamic_ncols=True)
    began, step_loss = time.perf_counter(), float("nan")
    model.train()
    try:
        with StopRequest() as stop:
            for step in range(start, total):
                started = time.perf_counter()
                batch = stream.batch(step)
                if audit is not None:
                    audit.write(json.dumps({"step": step, "tokens_sha256": batch_sha256(batch)}) + "\n")
                tokens = torch.from_numpy(batch[mine.start:mine.stop].astype("int64")).to(fabric.device)
                lr = learning_rate(step, layout.steps, config)  # the whole run's schedule: --steps and resume compose
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), device=fabric.device)
                parts = list(micro_batches(tokens, config.micro_batch_size))
                for index, (rows, inputs, targets) in enumerate(parts):
                    noise.at(step)
                    with fabric.no_backward_sync(model, enabled=index < len(parts) - 1):
                        logits = model(inputs)
                        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
                        fabric.backward(loss * len(rows) * world / layout.batch_size)
                    loss_sum += loss.detach() * len(rows)
                # the total gradient norm, logged (an infinite max_norm measures without clipping)
                grad_norm = fabric.clip_gradients(model, optimizer, error_if_nonfinite=config.grad_clip > 0,
                                                  max_norm=config.grad_clip if config.grad_clip > 0 else math.inf)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step_loss = float(fabric.all_reduce(loss_sum, reduce_op="sum")) / layout.batch_size
                seconds = time.perf_counter() - started
                logged = {"loss": step_loss, "lr": lr, "grad_norm": float(grad_norm),
                          "tokens_per_sec": layout.tokens_per_step / seconds}
                if metrics is not None:
                    metrics.write(json.dumps({"step": step, **logged}) + "\n")
                if tracker is not None:
                    tracker.log_metrics(logged, step=step)
                bar.set_postfix_str(f"loss {step_loss:.4f}  lr {lr:.2e}  {layout.tokens_per_step / seconds:,.0f} tok/s",
                                    refresh=False)
                bar.update()
                done = step + 1
                saving = done in save_steps or (config.save_every and done % config.save_every == 0)
                if saving or (stop.requested and done < total):
                    if audit is not None:
                        audit.flush()
                    save(out / f"step-{done:06d}", done)
                if stop.requested and done < total:
                    raise Interrupted(f"stopped after step {done:,} of {total:,}; checkpoint "
                                      f"{out / f'step-{done:06d}'}: add --resume to the same command to continue")
            save(out / "final", total)  # a Ctrl-C now waits for it
    except KeyboardInterrupt:
        kept = latest_checkpoint(out)
        if kept is None and start == 0:
            if created:
                shutil.rmtree(out, ignore_errors=True)
            else:
                empty_run_folder(out)
            raise Interrupted("nothing was trained to a checkpoint, so nothing was kept: run the same command "
                              "again") from None
        raise Interrupted(f"the latest checkpoint is {kept}: add --resume to the same command to continue "
                          f"from it") from None
    finally:
        bar.close()
        if tracker is not None:
            close_logger(tracker)
        if metrics is not None:
            metrics.close()
        if audit is not None:
            audit.close()
    if progress and lead:
        seconds = time.perf_counter() - began
        saved = sorted(p.name for p in out.glob("step-*") if p.is_dir())
        kept = ", ".join([*saved, "final"]) if len(saved) <= 3 else f"{saved[0]} … {saved[-1]} ({len(saved)}), final"
        print(f"trained steps {start:,}-{total:,} in {seconds:,.1f} s "
              f"({(total - start) * layout.tokens_per_step / seconds:,.0f} tok/s), final loss {step_loss:.4f}; "
              f"checkpoints in {out}: {kept}", file=sys.stderr, flush=True)
    return out / "final"
