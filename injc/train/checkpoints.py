"""Checkpoints of `injc train`: LitGPT's layout (`lit_model.pth`, `model_config.yaml`) plus `optimizer.pth` and
`train_state.json` (steps done, the manifest's identity, the run's settings), written whole or not at all; and the
checkpoints a run may start from (`--init`).
"""

import json
import shutil
from pathlib import Path

import torch

from injc.errors import InjcError
from injc.shards.manifest import Manifest
from injc.train.fsdp import full_state, load_optimizer
from injc.train.hf import (
    HF,
    build_tokenizer,
    checkpoint_format,
    hf_to_litgpt,
    litgpt_config,
    litgpt_to_hf,
    read_hf_config,
    save_hf_folder,
)


def init_checkpoint(folder: Path, manifest: Manifest):
    """(LitGPT Config, state dict) of a checkpoint to continue from (see `checkpoint_config`); a Hugging Face
    folder is converted with LitGPT's own converter on the way in."""
    config = checkpoint_config(folder, manifest.data["layout"]["vocab_size"], manifest.layout.seq_len)
    if checkpoint_format(folder, "--init") == HF:
        return hf_to_litgpt(folder, config.block_size)
    try:
        state = torch.load(Path(folder) / "lit_model.pth", map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises EOFError, RuntimeError or its loader's own error for a bad file
        raise InjcError(f"--init {str(folder)!r}: lit_model.pth cannot be read ({error or type(error).__name__})") \
            from None
    return config, state.get("model", state)


def checkpoint_config(folder: Path, vocab: int, seq_len: int):
    """The LitGPT Config of a checkpoint folder (LitGPT's, or a Hugging Face folder of an architecture LitGPT
    converts) that a run of `seq_len`-token rows over `vocab` ids can continue: block_size ≥ seq_len − 1 and an
    embedding with a row for every id; anything else is a clear error."""
    from litgpt import Config

    folder = Path(folder)
    if checkpoint_format(folder, "--init") == HF:
        config = litgpt_config(read_hf_config(folder), folder, folder.name, seq_len - 1)
    else:
        config = Config.from_file(folder / "model_config.yaml")
    context = seq_len - 1
    problems = []
    if config.padded_vocab_size < vocab:
        problems.append(f"--init {str(folder)!r} has {config.padded_vocab_size:,} embedding rows but the manifest's "
                        f"tokenizer has {vocab:,} ids: it was trained with another tokenizer")
    if config.block_size < context:
        problems.append(f"--init {str(folder)!r} has context {config.block_size:,} but the manifest's rows need "
                        f"{context:,} (seq_len − 1)")
    if problems:
        raise InjcError(*problems)
    return config


def save_checkpoint(folder: Path, weights_and_moments: tuple[dict, dict], config, steps_done: int, manifest: Manifest,
                init: str | None, settings: dict, hf: bool = False) -> None:
    """Write a checkpoint ((model, optimizer) state dicts; with `hf` also its Hugging Face folder `hf/`) into a
    hidden temporary folder, then rename it into place: a checkpoint folder is always whole, whenever the process
    dies (an older one is swapped out first)."""
    from litgpt.utils import save_config

    partial, old = folder.with_name(f".{folder.name}.tmp"), folder.with_name(f".{folder.name}.old")
    for leftover in (partial, old):
        shutil.rmtree(leftover, ignore_errors=True)
    partial.mkdir(parents=True)
    torch.save(weights_and_moments[0], partial / "lit_model.pth")
    torch.save(weights_and_moments[1], partial / "optimizer.pth")
    save_config(config, partial)
    state = {"steps_done": steps_done, "manifest": str(manifest.root / "manifest.json"), **manifest.identity,
             "init": init, "settings": settings}
    (partial / "train_state.json").write_text(json.dumps(state, indent=2) + "\n")
    if hf:
        weights = {key: value.detach().cpu() for key, value in weights_and_moments[0].items()}
        tokenizer = build_tokenizer(manifest.root / "manifest.json")
        save_hf_folder(partial / "hf", *litgpt_to_hf(config, weights), *tokenizer, partial / "train_state.json")
    if folder.exists():
        folder.rename(old)
    partial.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def gathered(model, optimizer, sharded: bool, lead: bool) -> tuple[dict, dict] | None:
    """What a checkpoint saves: gathered from the shards with FSDP (every rank takes part), else rank 0's own."""
    if sharded:
        return full_state(model, optimizer)
    return (model.state_dict(), optimizer.state_dict()) if lead else None


def load_optimizer_state(model, optimizer, path: Path, sharded: bool, device) -> None:
    state = torch.load(path, map_location="cpu" if sharded else device, weights_only=True)
    load_optimizer(model, optimizer, state) if sharded else optimizer.load_state_dict(state)
