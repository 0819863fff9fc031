"""`injc build plan.toml --out DIR`: plan → payloads → schedule → shards + insertions table + manifest.

The whole data path in one place:

1. load and validate the plan (every problem at once), load the tokenizer;
2. each experiment's injector turns its section into payload items (token arrays, EOS-wrapped);
3. `compile_schedule` places every copy at a global token offset (pure, seeded, never drops);
4. the corpus is streamed through the tokenizer into shards, copies written over the base tokens;
5. insertions.parquet, tokenizer.json and manifest.json are written, all into a temporary folder that is
   renamed to DIR only once everything succeeded.
"""

import dataclasses
import json
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
from tqdm import tqdm

from injc.compiler.corpus import base_stream, fingerprint_files, token_corpus_warnings, with_streamed_sha256
from injc.compiler.hf_corpus import manifest_record
from injc.compiler.options import BuildOptions
from injc.compiler.outputs import check_output, check_stage, resume_state, seed_from_stage, staged_build
from injc.compiler.payloads import (
    directives,
    experiment_records,
    make_payloads,
    rescale_copies,
    schedule_payloads,
    write_eval_records,
    written_part,
)
from injc.compiler.plan import Plan, load_plan, with_counts
from injc.compiler.schedule import SCHEDULE_VERSION
from injc.compiler.source import PreparedStream, corpus_too_small
from injc.compiler.workers import RayExecutor, ray_session, ray_shard_writer
from injc.errors import InjcError, counted
from injc.shards.exports import ROWS_NAME, write_export_record
from injc.shards.files import folder_lock, replace_output, sha256_file, write_atomic
from injc.shards.insertions import write_insertions, write_items
from injc.shards.manifest import (
    FORMAT,
    HOLDOUT_NAME,
    INSERTIONS_NAME,
    ITEMS_NAME,
    MANIFEST_NAME,
    ROW_ORDER_VERSION,
    SHARDS_FOLDER,
    TOKENIZER_NAME,
    VERSION,
    write_manifest,
)
from injc.shards.olmo_core import OlmoCoreFiles, olmo_core_loader
from injc.shards.writer import write_here, write_shards
from injc.tables import did_you_mean
from injc.tokenizer import LoadedTokenizer, load_tokenizer

INJC_VERSION = version("injc")
RAY_SHARDS_IN_FLIGHT = 2
"""Shards being written by Ray tasks while the next ones are filled (each a copy in Ray's object store)."""

PASS1_NAME = "stream.pass1.tmp"


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    manifest_path: Path
    total_tokens: int
    shards: int
    insertions: int
    inserted_tokens: int
    seconds: float
    backfilled: int = 0
    """Copies that could not stay prefix-stable (see docs/format.md, "The schedule is prefix-stable")."""
    until_step: int | None = None
    """Steps written by a staged build (None: the whole run)."""
    warnings: tuple[str, ...] = ()
    """What looks wrong but does not stop the build (a token corpus without EOS)."""

    @property
    def tokens_per_second(self) -> float:
        return self.total_tokens / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        staged = f" (staged: steps [0, {self.until_step:,}))" if self.until_step is not None else ""
        return (f"built {self.manifest_path}{staged}: {self.total_tokens:,} tokens in {counted(self.shards, 'shard')}, "
                f"{self.insertions:,} insertions ({self.inserted_tokens:,} tokens), "
                f"{self.seconds:.1f} s, {self.tokens_per_second:,.0f} tok/s"
                + (f"; {self.backfilled:,} copies found no room before their range ended and were placed earlier "
                   "in it, so steps before them are not prefix-stable" if self.backfilled else ""))


def _counted(chunks, counter: list[int]):
    for chunk, locate in chunks:
        counter[0] += len(chunk)
        yield chunk, locate


def needs_prepared_stream(plan: Plan) -> bool:
    """A held-out tail, or an experiment that must read the base tokens, needs pass 1 (see injc.compiler.source)."""
    return plan.corpus.holdout_tokens > 0 or any(getattr(e, "reads_base_stream", False) for e in plan.experiments)


def select(plan: Plan, only: Sequence[str] | None) -> tuple[int, ...]:
    """Indices of the experiments to write: all (None), or those named in `only` (unknown names are an error)."""
    if only is None:
        return tuple(range(len(plan.experiments)))
    names = [e.name for e in plan.experiments]
    unknown = [name for name in only if name not in names]
    if unknown:
        raise InjcError(*(f"--only: the plan has no experiment {name!r}" + did_you_mean(name, names)
                          for name in unknown))
    return tuple(i for i, name in enumerate(names) if name in set(only))


def build(plan_path: str | Path, out_dir: str | Path, options: BuildOptions | None = None, /,
          **fields) -> BuildResult:
    """Compile a plan into shards, insertions.parquet and manifest.json under `out_dir`, built as `options` say
    (`BuildOptions`: clean, staged, a selection, another seed, OLMo-core's order, ...; keyword arguments are its
    fields, as in `build(plan, out, clean=True)`).

    Everything is written to a partial folder beside `out_dir` that is renamed into place only when complete.
    A build that was killed resumes: running the same command again keeps its finished shards (checked against
    their hashes) and continues reading the corpus where they end; the result is byte-identical. A staged build
    (`until_step`) grows the same way, from the finished shards of its last stage.
    """
    options = dataclasses.replace(options or BuildOptions(), **fields)
    started = time.perf_counter()
    out_dir = Path(out_dir)
    plan = options.applied(load_plan(plan_path))
    selected = select(plan, options.only)
    until_step = options.last_step(plan.layout.steps)
    plan, decided = with_counts(plan, dict(options.counts or {}), until_step)
    refuse_undecided(plan)
    from injc.compiler.check import validate_payloads  # check builds on this module: imported here, not above

    corpus_hashed = in_background(fingerprint_files, plan.corpus.files, False)  # while the payloads are checked
    tokenizer = load_tokenizer(plan.tokenizer.path, plan.tokenizer.eos)
    validated = validate_payloads(plan, tokenizer)
    staged = staged_build(out_dir)
    partial = out_dir.parent / f".{out_dir.name}.injc-partial"
    try:
        with folder_lock(out_dir, "build"):
            corpus_files = corpus_hashed()
            key = build_key(plan, tokenizer, corpus_files, selected, options, decided)
            growing = check_stage(out_dir, staged, key, until_step, options.extend, options.force)
            if not growing:
                check_output(out_dir, plan.input_files(), options.force)
            try:
                done = _resume(partial, out_dir, staged if growing else None, {**key, "until_step": until_step},
                               plan, tokenizer, options.target_seed)
                workers = options.workers
                with ray_session(workers) if isinstance(workers, RayExecutor) else nullcontext():
                    shards, schedule = _build_into(partial, plan, tokenizer, options, done, corpus_files, selected,
                                                   until_step, key, validated)
                replace_output(partial, out_dir)
            except (InjcError, OSError):
                shutil.rmtree(partial, ignore_errors=True)
                raise
    except OSError as error:
        raise InjcError(f"cannot write the build: {error.strerror or error}"
                        + (f" ({error.filename})" if error.filename else "")) from None
    written = until_step * plan.layout.tokens_per_step
    warnings = (token_corpus_warnings(plan.corpus.files, plan.corpus.dtype, tokenizer.eos_id)
                if plan.corpus.format == "tokens" else [])
    return BuildResult(out_dir, out_dir / MANIFEST_NAME, written, shards, len(schedule), int(schedule.length.sum()),
                       time.perf_counter() - started, schedule.backfilled,
                       until_step if until_step < plan.layout.steps else None, tuple(warnings))


def refuse_undecided(plan: Plan) -> None:
    """A `per_window = "dynamic"` experiment is built only with its counts decided (by `injc run`)."""
    undecided = [e.name for e in plan.experiments if getattr(e, "control", None) is not None and e.per_window is None]
    if undecided:
        raise InjcError(*(f"experiment {name!r} has per_window = \"dynamic\": its counts are decided window by "
                          f"window by injc run (or give per_window as a count or a list to build it)"
                          for name in undecided))


def build_key(plan: Plan, tokenizer: LoadedTokenizer, corpus_files: list[dict], selected: tuple[int, ...],
              options: BuildOptions, decided: dict[str, list[int]]) -> dict:
    """What the written stream depends on: a staged build grows, and a killed one resumes, only under the same key
    (recorded in the manifest as `build_key`)."""
    return {"injc": INJC_VERSION, "schedule": SCHEDULE_VERSION, "plan": plan.sha256, "tokenizer": tokenizer.sha256,
            "corpus": corpus_files, "clean": options.clean, "seed": plan.seed, "selected": list(selected),
            "skip_tokens": plan.corpus.skip_tokens, "fraction": options.fraction, "target": options.target,
            **({"counts": decided} if decided else {})}


def _resume(partial: Path, out_dir: Path, stage: dict | None, resume_key: dict, plan: Plan,
            tokenizer: LoadedTokenizer, target_seed: int | None) -> list[dict]:
    """The finished shards' records to continue from: a killed build's in `partial`, else those of the staged
    build `stage` that this build grows (seeded into `partial`), else none."""
    read_back = None
    if target_seed is not None:
        def read_back():
            return OlmoCoreFiles(partial, SHARDS_FOLDER + "/", plan.layout.total_rows, plan.layout.seq_len,
                                 tokenizer.dtype, target_seed, resume=True)
    done = resume_state(partial, resume_key, read_back)
    if stage is not None and not done:
        seed_from_stage(partial, out_dir, stage)
        done = resume_state(partial, resume_key, read_back)
    return done


def _build_into(tmp: Path, full_plan: Plan, tokenizer: LoadedTokenizer, options: BuildOptions, done: list[dict],
                corpus_files: list[dict], selected: tuple[int, ...], until_step: int, key: dict,
                validated: dict | None = None):
    """Every step of the build inside the partial folder `tmp`; returns (number of shards, schedule)."""
    layout, dtype, workers = full_plan.layout, tokenizer.dtype, options.workers
    until_token = until_step * layout.tokens_per_step
    prepared = (PreparedStream(full_plan, tokenizer, tmp / PASS1_NAME, options.progress, workers)
                if needs_prepared_stream(full_plan) else None)
    payloads, ctx = make_payloads(full_plan, tokenizer, prepared, workers, validated)
    plan = dataclasses.replace(full_plan, experiments=tuple(full_plan.experiments[i] for i in selected))
    payloads = [payloads[i] for i in selected]
    if options.fraction is not None:
        payloads = [rescale_copies(p, options.fraction, layout.total_tokens) for p in payloads]
    schedule, overlay = schedule_payloads(plan, payloads, dtype)
    resume_from = done[-1]["next"] if done else None
    read = [0]
    if prepared:
        chunks = prepared.chunks(resume_from)
    else:
        chunks = _counted(base_stream(plan.corpus, tokenizer, resume_from, workers), read)
    shards = [record["shard"] for record in done]
    first_token = sum(s["num_tokens"] for s in shards)
    shard_tokens = plan.shard_steps * layout.tokens_per_step
    records = list(done)
    olmo = _target_files(tmp, layout, dtype, options.target_seed, resume=bool(done))
    names = [config.name for config in plan.experiments]
    written = written_part(schedule, overlay, until_token) if until_step < layout.steps else (schedule, overlay)
    with (ThreadPoolExecutor(1) as tables,
          tqdm(total=until_token, initial=first_token, unit="tok", unit_scale=True,
               desc="write" if prepared else "tokenize+write", disable=not options.progress, file=sys.stderr) as bar):
        tables_written = tables.submit(_write_tables, tmp, layout, names, *written, payloads)  # beside the shards
        on_ray = isinstance(workers, RayExecutor)
        for shard, cursor in write_shards(chunks, tmp, dtype, shard_tokens, until_token,
                                          None if options.clean else overlay, bar, len(done),
                                          olmo.write_synced if olmo else None,
                                          ray_shard_writer() if on_ray else write_here, RAY_SHARDS_IN_FLIGHT * on_ray):
            shards.append(dataclasses.asdict(shard))
            records.append({"shard": shards[-1], "next": cursor})
            write_atomic(tmp / "done" / f"{len(shards) - 1:05d}.json", json.dumps(records[-1]).encode())
        tables_written.result()
    schedule, overlay = written
    if sum(s["num_tokens"] for s in shards) < until_token:
        raise corpus_too_small(read[0] + first_token, plan)
    row_order = None
    if olmo is not None:
        shards, row_order = _finish_target(tmp, olmo, layout.seq_len, options.target_seed)
    holdout = _write_holdout(tmp, prepared, ctx) if prepared is not None else None
    del prepared
    shutil.copyfile(tokenizer.path, tmp / TOKENIZER_NAME)
    manifest = {
        "format": FORMAT,
        "version": VERSION if row_order is None else ROW_ORDER_VERSION,
        **({"row_order": row_order} if row_order else {}),
        "created_by": f"injc {INJC_VERSION}",
        "variant": "clean" if options.clean else "injected",
        "layout": {
            "seq_len": layout.seq_len, "batch_size": layout.batch_size, "steps": layout.steps,
            "tokens_per_step": layout.tokens_per_step, "total_tokens": layout.total_tokens,
            "dtype": dtype.name, "eos_id": tokenizer.eos_id, "vocab_size": tokenizer.vocab_size,
        },
        "plan": {"path": str(plan.path), "sha256": plan.sha256, "seed": plan.seed,
                 "toml": plan.path.read_text(encoding="utf-8"),
                 "only": None if len(selected) == len(full_plan.experiments) else [e.name for e in plan.experiments],
                 "fraction": options.fraction},
        "tokenizer": {"path": TOKENIZER_NAME, "source": str(tokenizer.path), "sha256": tokenizer.sha256,
                      "eos": tokenizer.eos, "eos_id": tokenizer.eos_id},
        "corpus": {"format": plan.corpus.format, "files": with_streamed_sha256(corpus_files, plan.corpus.files),
                   "skip_tokens": plan.corpus.skip_tokens,
                   **(manifest_record(plan.corpus) if plan.corpus.format == "hf" else {})},
        "shards": shards,
        "insertions": {"path": INSERTIONS_NAME, "count": len(schedule), "sha256": sha256_file(tmp / INSERTIONS_NAME)},
        "items": {"path": ITEMS_NAME, "count": sum(len(p.items) for p in payloads),
                  "sha256": sha256_file(tmp / ITEMS_NAME)},
        "experiments": experiment_records(plan, payloads, schedule, write_eval_records(tmp, plan, payloads)),
        "schedule": {"rule": "prefix-stable", "version": SCHEDULE_VERSION, "backfilled": schedule.backfilled},
        "build_key": key,
        **({"control": list(options.control)} if options.control is not None else {}),
        "directives": [] if options.clean else directives(plan, payloads),
        "holdout": holdout,
        **(_stage_fields(records, shard_tokens, until_step) if until_step < layout.steps else {}),
    }
    shutil.rmtree(tmp / "done")
    (tmp / "build.json").unlink()
    write_manifest(tmp / MANIFEST_NAME, manifest)
    if row_order is not None:  # the folder is also an OLMo-core export of itself
        written = json.loads((tmp / MANIFEST_NAME).read_text(encoding="utf-8"))
        write_export_record(tmp, Path(MANIFEST_NAME), written, "olmo-core", options.target_seed, olmo.paths,
                            olmo_core_loader(written["layout"], options.target_seed),
                            hashes={shard["path"]: shard["sha256"] for shard in shards})
    return len(shards), schedule


def _target_files(tmp: Path, layout, dtype, target_seed: int | None, resume: bool) -> OlmoCoreFiles | None:
    """A target build's files in OLMo-core's order, written at full size from the first stage (rows not written
    yet are zeros), so OLMo-core's dataset fingerprint (file names and sizes) stays the same as a build grows;
    None for stream-order shards."""
    if target_seed is None:
        return None
    (tmp / SHARDS_FOLDER).mkdir(exist_ok=True)
    return OlmoCoreFiles(tmp, SHARDS_FOLDER + "/", layout.total_rows, layout.seq_len, dtype, target_seed,
                         resume=resume)


def _finish_target(tmp: Path, olmo: OlmoCoreFiles, seq_len: int, target_seed: int) -> tuple[list[dict], dict]:
    """A target build's shard records (one per OLMo-core file) and its manifest `row_order`, with rows.npy
    written: the row map injc reads the build through."""
    olmo.close()
    np.save(tmp / ROWS_NAME, olmo.rows())
    shards = [{"path": path, "first_token": int(first) * seq_len, "num_tokens": rows * seq_len,
               "sha256": sha256_file(tmp / path)}
              for path, first, rows in zip(olmo.paths, olmo.first_rows, olmo.row_counts)]
    return shards, {"target": "olmo-core", "seed": target_seed, "path": ROWS_NAME,
                    "sha256": sha256_file(tmp / ROWS_NAME)}


def _write_holdout(tmp: Path, prepared: PreparedStream, ctx) -> dict | None:
    """The held-out tail's tokens (when the plan keeps one) and their manifest record; pass 1's file removed."""
    holdout = None
    if len(prepared.holdout):
        np.asarray(prepared.holdout).tofile(tmp / HOLDOUT_NAME)
        holdout = {"path": HOLDOUT_NAME, "tokens": len(prepared.holdout), "sha256": sha256_file(tmp / HOLDOUT_NAME),
                   "allocations": ctx.holdout.allocations}
    (tmp / PASS1_NAME).unlink()
    (tmp / PASS1_NAME).with_suffix(".done").unlink()
    return holdout


def _stage_fields(records: list[dict], shard_tokens: int, until_step: int) -> dict:
    """A staged build's manifest fields: where it ends, and its whole shards (the next stage keeps those)."""
    return {"until_step": until_step,
            "stage": {"done": [r for r in records if r["shard"]["num_tokens"] == shard_tokens]}}


def in_background(function, *args):
    """Start function(*args) on a daemon thread and return what waits for its result (or raises its error): a build
    that fails before it needs the result exits at once instead of waiting for, say, a large corpus's hash."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = function(*args)
        except BaseException as error:  # handed to the waiting thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def wait():
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]
    return wait


def _write_tables(folder: Path, layout, names: list[str], schedule, overlay, payloads: list) -> None:
    """insertions.parquet and items.parquet: on a thread beside the shard writing (pyarrow's writer releases the
    GIL, so the table's compression runs on the other core)."""
    write_insertions(folder / INSERTIONS_NAME, layout, names, schedule.experiment, schedule.item, schedule.repetition,
                     overlay)
    write_items(folder / ITEMS_NAME, names, [p.items for p in payloads], [p.copies for p in payloads])
