"""Run folders: what `injc train` may write into one, which checkpoint a resume continues from, and the settings
a resumed run keeps.

A run folder holds one run. Its checkpoints' train_state.json records the manifest's identity and every training
setting, so `--resume` continues the same data with the same optimizer schedule: a setting not given on the
command line is the recorded one, and a different one given is an error naming both (unless the caller overrides).
"""

import dataclasses
import json
import re
import shutil
from pathlib import Path

from injc.errors import InjcError, some_of
from injc.shards.manifest import Manifest, identity_differences

DEFAULT_SETTINGS = {"lr": 4e-4, "min_lr": 4e-5, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0,
                    "micro_batch_size": 4}
"""A fresh run's settings where the command line gives none; warmup_steps and seed have defaults that depend on
the run (10% of its steps, at most 2,000; the plan's seed)."""
RECORDED_SETTINGS = (*DEFAULT_SETTINGS, "warmup_steps", "seed")
PRECISIONS = ("bf16-mixed", "32-true")
"""Lightning's precisions that training and scoring take (default: bf16-mixed on CUDA, 32-true elsewhere)."""


def latest_checkpoint(out: Path) -> Path | None:
    """The checkpoint of a run folder with the most steps done (step-NNNNNN/ or final/), or None."""
    candidates = [p for p in out.glob("step-*") if (p / "train_state.json").is_file()]
    if (out / "final" / "train_state.json").is_file():
        candidates.append(out / "final")
    if not candidates:
        return None
    return max(candidates, key=lambda p: json.loads((p / "train_state.json").read_text())["steps_done"])


def is_run_entry(name: str) -> bool:
    """What `injc train` writes into a run folder: metrics, audit, logs/ (--logger), step-NNNNNN/ and final/
    checkpoints (and their hidden temporary twins, left by a process killed while saving)."""
    return (name in ("metrics.jsonl", "audit.jsonl", "logs")
            or re.fullmatch(r"\.?(final|step-\d{6,})(\.tmp|\.old)?", name) is not None)


def prepare_run_folder(out: Path, manifest: Manifest, config, total: int) -> Path | None:
    """Check `out` before anything is written; returns the checkpoint to resume from (None: a fresh run).

    A fresh run needs an empty or absent folder; `force` replaces an earlier run whole (only if the folder holds
    nothing but what injc train writes). A resume needs a checkpoint of the same manifest with fewer steps done
    than asked for. Nothing is created or deleted when a check fails.
    """
    if config.resume and config.force:
        raise InjcError("--resume continues the run in --out and --force replaces it: give one of them")
    if config.resume:
        latest = latest_checkpoint(out) if out.is_dir() else None
        if latest is None:
            raise InjcError(f"--resume: no checkpoint under {str(out)!r}; train without --resume to start a run")
        state = json.loads((latest / "train_state.json").read_text())
        differences = identity_differences(state, manifest)
        if differences:
            raise InjcError(f"--resume: {str(latest)!r} was trained on another manifest ({'; '.join(differences)}); "
                            f"resume with the manifest it was trained on, or start a new run in another --out")
        if state["steps_done"] > total:
            raise InjcError(f"--steps {total:,}: {str(latest)!r} has already trained {state['steps_done']:,} steps; "
                            f"ask for more steps than that")
        return latest
    if not out.exists():
        return None
    if not out.is_dir():
        raise InjcError(f"--out {str(out)!r} is a file, not a folder")
    entries = sorted(out.iterdir())
    if not entries:
        return None
    if not config.force:
        raise InjcError(f"run folder {str(out)!r} is not empty; add --resume to continue its run, or --force to "
                        f"replace it")
    strays = [entry.name for entry in entries if not is_run_entry(entry.name)]
    if strays:
        raise InjcError(f"--force replaces only an earlier injc run; {str(out)!r} also holds {some_of(strays)}: "
                        f"move it away yourself or pick another --out")
    empty_run_folder(out)
    return None


def empty_run_folder(folder: Path) -> None:
    """Delete everything in a run folder that injc train owns (checked by the caller), keeping the folder."""
    for entry in folder.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def resolve_settings(config, manifest: Manifest, latest: Path | None):
    """`config` with every training setting decided: on a resume the recorded value where none is given (a
    different value given is an error naming both, unless `config.override_settings`), on a fresh run the default.
    """
    recorded = {}
    if latest is not None:
        recorded = json.loads((latest / "train_state.json").read_text()).get("settings", {})
    defaults = {**DEFAULT_SETTINGS, "warmup_steps": min(2000, max(1, manifest.layout.steps // 10)),
                "seed": manifest.data["plan"]["seed"]}
    values, conflicts = {}, []
    for name in RECORDED_SETTINGS:
        given, before = getattr(config, name), recorded.get(name)
        if given is not None and name in recorded and given != before and not config.override_settings:
            conflicts.append(f"--{name.replace('_', '-')} {given} differs from the {before} the run in "
                             f"{str(config.out)!r} was trained with: leave it out to keep {before}, or add "
                             f"--override-settings to change it from here on")
        values[name] = given if given is not None else recorded.get(name, defaults[name])
    if conflicts:
        raise InjcError(*conflicts)
    return dataclasses.replace(config, **values)


def check_same_model(model_cfg, latest: Path) -> None:
    """A resume must build the model its checkpoint holds: name the fields that differ, in one line."""
    from litgpt import Config

    saved = dataclasses.asdict(Config.from_file(latest / "model_config.yaml"))
    given = dataclasses.asdict(model_cfg)
    differences = [f"{key} {given[key]!r} (checkpoint: {saved[key]!r})" for key in sorted(given)
                   if key in saved and given[key] != saved[key] and key not in ("name", "hf_config")]
    if differences:
        raise InjcError(f"--resume: the model given differs from the one {str(latest)!r} holds: "
                        f"{some_of(differences)}; resume with the same --model or --init")
