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

from injc.compiler.corpus import base_stream, fingerprint_files, token_corpus_warnings
from injc.compiler.hf_corpus import manifest_record
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


def build(plan_path: str | Path, out_dir: str | Path, *, clean: bool = False, force: bool = False,
          progress: bool = True, workers: int | None = None, only: Sequence[str] | None = None,
          seed: int | None = None, skip_tokens: int | None = None, fraction: float | None = None,
          until_step: int | None = None, extend: bool = False, counts: dict[str, list[int]] | None = None,
          control: list[dict] | None = None, target: str | None = None) -> BuildResult:
    """Compile a plan into shards, insertions.parquet and manifest.json under `out_dir`.

    `clean=True` writes the control stream of the same plan: the same base tokens and the same recorded
    schedule, with no payload written (it differs from the injected build only inside insertion intervals).
    Everything is written to a partial folder beside `out_dir` that is renamed into place only when complete.
    A build that was killed resumes: running the same command again keeps its finished shards (checked against
    their hashes) and continues reading the corpus where they end; the result is byte-identical.
    `workers` ≥ 2 tokenizes in that many processes, a `RayExecutor` on Ray tasks (None: the tokenizer's own
    threads); the bytes are the same.
    `only` writes just the named experiments (every experiment's payload is still made, so their items and
    held-out allocations are those of the whole plan; the manifest lists the selection); `seed` replaces the
    plan's seed and `skip_tokens` its [corpus] skip_tokens (another window of the corpus); `fraction` rescales
    the copies of each written random/range experiment to about that share of the run's tokens (see
    `rescale_copies`). They serve designs of several builds of one plan, such as `injc cpdt`.
    `until_step` writes only steps [0, until_step) and marks the manifest partial (a *staged* build); running
    the same build with a larger `until_step` (or none, for the whole run) appends the next steps, keeping the
    finished shards as they are. `extend=True` insists that `out_dir` is a staged build of the same plan. The
    schedule is prefix-stable, so a build grown in stages is byte-identical to the one-shot build.
    `counts` gives the decided per-window counts of `per_window = "dynamic"` experiments (windows past the list
    get 0; `injc run` grows a build window by window this way) and `control` the decisions' records, copied to
    the manifest.
    `target="olmo-core:SEED"` writes the rows straight into OLMo-core's order for that data seed (the files
    `injc export --to olmo-core` would write, with export.json), instead of the stream-order shards: one copy of
    the tokens. injc reads such a build through its row map (manifest version 2, `row_order`). Its files have their
    full size from the first stage (rows not written yet are zeros), so a staged target build grows like any other
    (each stage writes its rows at their destinations; OLMo-core's dataset fingerprint, file names and sizes, stays
    the same); a killed one resumes, each finished shard's rows read back and checked first.
    """
    if fraction is not None and not 0 < fraction < 1:
        raise InjcError(f"--fraction must be between 0 and 1, got {fraction}")
    target_seed = parse_target(target) if target else None
    started = time.perf_counter()
    out_dir = Path(out_dir)
    plan = load_plan(plan_path)
    if seed is not None:
        plan = dataclasses.replace(plan, seed=seed)
    if skip_tokens is not None:
        plan = dataclasses.replace(plan, corpus=dataclasses.replace(plan.corpus, skip_tokens=skip_tokens))
    selected = select(plan, only)
    steps = plan.layout.steps
    if until_step is not None and not 1 <= until_step <= steps:
        raise InjcError(f"--until-step must be between 1 and the run's {steps:,} steps, got {until_step:,}")
    until_step = until_step or steps
    plan, decided = with_counts(plan, counts or {}, until_step)
    undecided = [e.name for e in plan.experiments if getattr(e, "control", None) is not None and e.per_window is None]
    if undecided:
        raise InjcError(*(f"experiment {name!r} has per_window = \"dynamic\": its counts are decided window by "
                          f"window by injc run (or give per_window as a count or a list to build it)"
                          for name in undecided))
    from injc.compiler.check import validate_payloads  # check builds on this module: imported here, not above

    corpus_hashed = in_background(fingerprint_files, plan.corpus.files)  # while the payloads are checked
    tokenizer = load_tokenizer(plan.tokenizer.path, plan.tokenizer.eos)
    validated = validate_payloads(plan, tokenizer)
    staged = staged_build(out_dir)
    partial = out_dir.parent / f".{out_dir.name}.injc-partial"
    try:
        with folder_lock(out_dir, "build"):
            corpus_files = corpus_hashed()
            key = {"injc": INJC_VERSION, "schedule": SCHEDULE_VERSION, "plan": plan.sha256,
                   "tokenizer": tokenizer.sha256, "corpus": corpus_files, "clean": clean, "seed": plan.seed,
                   "selected": list(selected), "skip_tokens": plan.corpus.skip_tokens, "fraction": fraction,
                   "target": target,
                   **({"counts": decided} if decided else {})}
            growing = check_stage(out_dir, staged, key, until_step, extend, force)
            if not growing:
                check_output(out_dir, plan.input_files(), force)
            try:
                resume_key = {**key, "until_step": until_step}
                read_back = None
                if target_seed is not None:
                    def read_back():
                        return OlmoCoreFiles(partial, SHARDS_FOLDER + "/", plan.layout.total_rows,
                                             plan.layout.seq_len, tokenizer.dtype, target_seed, resume=True)
                done = resume_state(partial, resume_key, read_back)
                if growing and not done:
                    seed_from_stage(partial, out_dir, staged)
                    done = resume_state(partial, resume_key, read_back)
                with ray_session(workers) if isinstance(workers, RayExecutor) else nullcontext():
                    result = _build_into(partial, plan, tokenizer, clean, progress, done, corpus_files, workers,
                                         selected, fraction, until_step, key, control, target_seed, validated)
                replace_output(partial, out_dir)
            except (InjcError, OSError):
                shutil.rmtree(partial, ignore_errors=True)
                raise
    except OSError as error:
        raise InjcError(f"cannot write the build: {error.strerror or error}"
                        + (f" ({error.filename})" if error.filename else "")) from None
    shards, schedule = result
    written = until_step * plan.layout.tokens_per_step
    warnings = (token_corpus_warnings(plan.corpus.files, plan.corpus.dtype, tokenizer.eos_id)
                if plan.corpus.format == "tokens" else [])
    return BuildResult(out_dir, out_dir / MANIFEST_NAME, written, shards, len(schedule), int(schedule.length.sum()),
                       time.perf_counter() - started, schedule.backfilled,
                       until_step if until_step < plan.layout.steps else None, tuple(warnings))


def _build_into(tmp: Path, full_plan: Plan, tokenizer: LoadedTokenizer, clean: bool, progress: bool,
                done: list[dict], corpus_files: list[dict], workers: int | None, selected: tuple[int, ...],
                fraction: float | None, until_step: int, key: dict, control: list[dict] | None = None,
                target_seed: int | None = None, validated: dict | None = None):
    """Every step of the build inside the partial folder `tmp`; returns (number of shards, schedule)."""
    layout, dtype = full_plan.layout, tokenizer.dtype
    until_token = until_step * layout.tokens_per_step
    prepared = (PreparedStream(full_plan, tokenizer, tmp / PASS1_NAME, progress, workers)
                if needs_prepared_stream(full_plan) else None)
    payloads, ctx = make_payloads(full_plan, tokenizer, prepared, workers, validated)
    plan = dataclasses.replace(full_plan, experiments=tuple(full_plan.experiments[i] for i in selected))
    payloads = [payloads[i] for i in selected]
    if fraction is not None:
        payloads = [rescale_copies(p, fraction, layout.total_tokens) for p in payloads]
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
    olmo = None
    if target_seed is not None:
        (tmp / SHARDS_FOLDER).mkdir(exist_ok=True)
        olmo = OlmoCoreFiles(tmp, SHARDS_FOLDER + "/", layout.total_rows, layout.seq_len, dtype, target_seed,
                             resume=bool(done))
    names = [config.name for config in plan.experiments]
    written = written_part(schedule, overlay, until_token) if until_step < layout.steps else (schedule, overlay)
    with (ThreadPoolExecutor(1) as tables,
          tqdm(total=until_token, initial=first_token, unit="tok", unit_scale=True,
               desc="write" if prepared else "tokenize+write", disable=not progress, file=sys.stderr) as bar):
        tables_written = tables.submit(_write_tables, tmp, layout, names, *written, payloads)  # beside the shards
        on_ray = isinstance(workers, RayExecutor)
        for shard, cursor in write_shards(chunks, tmp, dtype, shard_tokens, until_token, None if clean else overlay,
                                          bar, len(done), olmo.write_synced if olmo else None,
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
        olmo.close()
        np.save(tmp / ROWS_NAME, olmo.rows())
        shards = [{"path": path, "first_token": int(first) * layout.seq_len, "num_tokens": rows * layout.seq_len,
                   "sha256": sha256_file(tmp / path)} for path, first, rows in zip(olmo.paths, olmo.first_rows,
                                                                                     olmo.row_counts)]
        row_order = {"target": "olmo-core", "seed": target_seed, "path": ROWS_NAME,
                     "sha256": sha256_file(tmp / ROWS_NAME)}
    holdout = None
    if prepared is not None:
        if len(prepared.holdout):
            np.asarray(prepared.holdout).tofile(tmp / HOLDOUT_NAME)
            holdout = {"path": HOLDOUT_NAME, "tokens": len(prepared.holdout), "sha256": sha256_file(tmp / HOLDOUT_NAME),
                       "allocations": ctx.holdout.allocations}
        del prepared
        (tmp / PASS1_NAME).unlink()
        (tmp / PASS1_NAME).with_suffix(".done").unlink()
    shutil.copyfile(tokenizer.path, tmp / TOKENIZER_NAME)
    manifest = {
        "format": FORMAT,
        "version": VERSION if row_order is None else ROW_ORDER_VERSION,
        **({"row_order": row_order} if row_order else {}),
        "created_by": f"injc {INJC_VERSION}",
        "variant": "clean" if clean else "injected",
        "layout": {
            "seq_len": layout.seq_len, "batch_size": layout.batch_size, "steps": layout.steps,
            "tokens_per_step": layout.tokens_per_step, "total_tokens": layout.total_tokens,
            "dtype": dtype.name, "eos_id": tokenizer.eos_id, "vocab_size": tokenizer.vocab_size,
        },
        "plan": {"path": str(plan.path), "sha256": plan.sha256, "seed": plan.seed,
                 "toml": plan.path.read_text(encoding="utf-8"),
                 "only": None if len(selected) == len(full_plan.experiments) else [e.name for e in plan.experiments],
                 "fraction": fraction},
        "tokenizer": {"path": TOKENIZER_NAME, "source": str(tokenizer.path), "sha256": tokenizer.sha256,
                      "eos": tokenizer.eos, "eos_id": tokenizer.eos_id},
        "corpus": {"format": plan.corpus.format, "files": corpus_files, "skip_tokens": plan.corpus.skip_tokens,
                   **(manifest_record(plan.corpus) if plan.corpus.format == "hf" else {})},
        "shards": shards,
        "insertions": {"path": INSERTIONS_NAME, "count": len(schedule), "sha256": sha256_file(tmp / INSERTIONS_NAME)},
        "items": {"path": ITEMS_NAME, "count": sum(len(p.items) for p in payloads),
                  "sha256": sha256_file(tmp / ITEMS_NAME)},
        "experiments": experiment_records(plan, payloads, schedule, write_eval_records(tmp, plan, payloads)),
        "schedule": {"rule": "prefix-stable", "version": SCHEDULE_VERSION, "backfilled": schedule.backfilled},
        "build_key": key,
        **({"control": control} if control is not None else {}),
        "directives": [] if clean else directives(plan, payloads),
        "holdout": holdout,
    }
    if until_step < layout.steps:
        manifest["until_step"] = until_step
        manifest["stage"] = {"done": [r for r in records if r["shard"]["num_tokens"] == shard_tokens]}
    shutil.rmtree(tmp / "done")
    (tmp / "build.json").unlink()
    write_manifest(tmp / MANIFEST_NAME, manifest)
    if row_order is not None:  # the folder is also an OLMo-core export of itself
        written = json.loads((tmp / MANIFEST_NAME).read_text(encoding="utf-8"))
        write_export_record(tmp, Path(MANIFEST_NAME), written, "olmo-core", target_seed, olmo.paths,
                            olmo_core_loader(written["layout"], target_seed),
                            hashes={shard["path"]: shard["sha256"] for shard in shards})
    return len(shards), schedule


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


def parse_target(target: str) -> int:
    """The data seed of `--target olmo-core:SEED`; refuses other trainers."""
    name, _, seed = target.partition(":")
    if name != "olmo-core":
        raise InjcError(f"--target {target!r}: only olmo-core is written directly (olmo-core:SEED); write the "
                        f"others with injc export")
    if not seed.isdigit():
        raise InjcError(f"--target {target!r}: give OLMo-core's data seed, as in olmo-core:1234")
    return int(seed)
