"""From a plan's experiments to what the build writes: each experiment's payload (its injector), the schedule that
places every copy with the overlay of their tokens, the trainer directives, and the manifest's per-experiment
records and eval files.
"""

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from injc.compiler.corpus import fingerprint_files
from injc.compiler.plan import Plan
from injc.compiler.schedule import Request, Schedule, compile_schedule
from injc.compiler.source import PreparedStream, streaming_counts
from injc.errors import LayoutError
from injc.injectors.base import Context, HoldoutPool, Payload
from injc.injectors.saved import DatasetFolder
from injc.shards.manifest import EVALS_FOLDER
from injc.shards.writer import Overlay
from injc.storage import is_remote
from injc.tokenizer import LoadedTokenizer


def make_payloads(plan: Plan, tokenizer: LoadedTokenizer, prepared: PreparedStream | None,
                  workers: int | None = None, made: dict | None = None) -> tuple[list, Context]:
    """Every experiment's payload, in plan order; `made` (by name) are payloads already made that depend on no
    pass over the corpus (`check.validate_payloads`), kept as they are."""
    made = made or {}
    ctx = Context(
        tokenizer, plan.layout, plan.seed,
        corpus_token_counts=prepared.counts if prepared else streaming_counts(plan, tokenizer, workers),
        holdout=HoldoutPool(prepared.holdout, tokenizer.eos_id) if prepared else None,
        base_tokens=prepared.base if prepared else None,
    )
    payloads = [made[e.name] if e.name in made else e.payload(ctx) for e in plan.experiments]
    for experiment in plan.experiments:
        if hasattr(experiment, "check_others"):
            experiment.check_others(plan.experiments, payloads)
    return payloads, ctx


def rescale_copies(payload: Payload, fraction: float, total_tokens: int) -> Payload:
    """The payload with its copies scaled so its tokens are about `fraction` of the run: every inserted item keeps
    at least one copy (so a small fraction may be exceeded), controls stay at 0, and explicit placements and
    payloads without copies (directives) are left as they are."""
    lengths = np.array([len(item) for item in payload.items], dtype=np.int64)
    current = int((payload.copies * lengths).sum())
    if payload.placement.mode == "explicit" or current == 0:
        return payload
    scaled = np.rint(payload.copies * (fraction * total_tokens / current)).astype(np.int64)
    copies = np.where(payload.copies > 0, np.maximum(scaled, 1), 0)
    return dataclasses.replace(payload, copies=copies)


def schedule_payloads(plan: Plan, payloads: list[Payload], dtype: np.dtype) -> tuple[Schedule, Overlay]:
    """Place every copy; the overlay maps each copy to its item's tokens in one shared pool."""
    requests, item_starts, pool_parts, pool_size = [], [], [], 0
    for config, payload in zip(plan.experiments, payloads):
        lengths = np.array([len(tokens) for tokens in payload.items], dtype=np.int64)
        requests.append(Request(config.name, lengths, payload.copies, payload.placement.mode,
                                payload.placement.start_step, payload.placement.end_step, payload.offsets,
                                payload.item_steps))
        item_starts.append(pool_size + np.cumsum(lengths) - lengths)
        pool_parts.extend(payload.items)
        pool_size += int(lengths.sum())
    schedule = compile_schedule(plan.layout, requests, plan.seed)
    pool = np.concatenate(pool_parts).astype(dtype) if pool_parts else np.zeros(0, dtype=dtype)
    flat_starts = np.concatenate(item_starts) if item_starts else np.zeros(0, dtype=np.int64)
    first_item = np.cumsum([0] + [len(p.items) for p in payloads])[:-1].astype(np.int64)
    source = flat_starts[first_item[schedule.experiment] + schedule.item] if len(schedule) else schedule.offset
    return schedule, Overlay(schedule.offset, schedule.length, source, pool)


def directives(plan: Plan, payloads: list[Payload]) -> list[dict]:
    """The trainer directives of a build; two that noise the same step would overwrite each other, so refuse."""
    found = [(config.name, p.directive) for config, p in zip(plan.experiments, payloads) if p.directive is not None]
    owner: dict[int, str] = {}
    for name, directive in found:
        shared = sorted(step for step in directive["steps"] if step in owner)
        if shared:
            raise LayoutError(f"experiments {owner[shared[0]]!r} and {name!r} both add embedding noise at step "
                              f"{shared[0]:,}" + (f" (and {len(shared) - 1} more shared steps)" if len(shared) > 1
                                                  else "") + ": give them different steps")
        owner.update({step: name for step in directive["steps"]})
    return [directive for _, directive in found]


def _fingerprint(path: Path) -> dict:
    return path.record() if isinstance(path, DatasetFolder) else fingerprint_files((path,))[0]


def write_eval_records(folder: Path, plan: Plan, payloads: list[Payload]) -> dict[str, dict]:
    """evals/NAME.json for each experiment with eval records; returns {name: {path, sha256}}."""
    written = {}
    for config, payload in zip(plan.experiments, payloads):
        if payload.eval_records is None:
            continue
        relative = f"{EVALS_FOLDER}/{config.name}.json"
        (folder / EVALS_FOLDER).mkdir(exist_ok=True)
        data = (json.dumps(payload.eval_records, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        (folder / relative).write_bytes(data)
        written[config.name] = {"path": relative, "sha256": hashlib.sha256(data).hexdigest()}
    return written


def experiment_records(plan: Plan, payloads: list[Payload], schedule: Schedule, evals: dict) -> list[dict]:
    """Per-experiment summary for the manifest: counts, tokens, share of the run, placement, input files."""
    copies = np.bincount(schedule.experiment, minlength=len(payloads))
    tokens = np.bincount(schedule.experiment, weights=schedule.length, minlength=len(payloads)).astype(np.int64)
    records = []
    for index, (config, payload) in enumerate(zip(plan.experiments, payloads)):
        files = {f.name: _fingerprint(getattr(config, f.name)) for f in dataclasses.fields(config)
                 if isinstance(getattr(config, f.name), Path) or is_remote(getattr(config, f.name))}
        record = {
            "name": config.name,
            "kind": config.kind,
            "items": len(payload.items),
            "repetitions": getattr(config, "repetitions", None),
            "insertions": int(copies[index]),
            "tokens": int(tokens[index]),
            "fraction_of_run": float(tokens[index] / plan.layout.total_tokens),
            "placement": dataclasses.asdict(payload.placement),
            "files": files,
        }
        record.update(payload.summary)
        if config.name in evals:
            record["eval_records"] = evals[config.name]
        records.append(record)
    return records


def written_part(schedule: Schedule, overlay: Overlay, until_token: int) -> tuple[Schedule, Overlay]:
    """The copies of a staged build's written steps (a copy never crosses a step, so none is cut)."""
    keep = slice(0, int(np.searchsorted(schedule.offset, until_token)))
    part = Schedule(schedule.experiment[keep], schedule.item[keep], schedule.repetition[keep], schedule.offset[keep],
                    schedule.length[keep], schedule.backfilled)
    return part, Overlay(overlay.offset[keep], overlay.length[keep], overlay.source[keep], overlay.pool)
