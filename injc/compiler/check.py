"""`injc check PLAN`: the plan and every input it names, validated without writing anything, in seconds.

What it does, in order: loads the plan (every problem at once) and the tokenizer (EOS); sizes the corpus
(format = "tokens": exactly, from file sizes, with the dtype checks; a text corpus up to EXACT_BYTES: counted
exactly; larger: tokenized from a sample at the start of a few files and extrapolated by file size, and it
says so); makes every experiment's payload (payload files, lengths, token ids, explicit offsets) except those
that need a pass over the corpus (held-out rows, rare-token counts, verbatim search), which it names; and
places every copy it made (the same pure schedule as the build), so a run without room fails here.
"""

import dataclasses
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import zstandard

from injc.compiler.corpus import base_stream, check_token_file, token_corpus_warnings
from injc.compiler.payloads import schedule_payloads
from injc.compiler.plan import CorpusConfig, Plan, load_plan, with_counts
from injc.errors import InjcError, InputError, counted
from injc.injectors.base import Context, HoldoutPool, Payload
from injc.storage import open_binary
from injc.tokenizer import LoadedTokenizer, load_tokenizer

EXACT_BYTES = 32 << 20
"""A text corpus up to this many bytes on disk is tokenized whole: exact, and still seconds."""
SAMPLE_BYTES = 1 << 20
"""Bytes on disk read from the start of each sampled file of a larger corpus."""
SAMPLE_FILES = 4
"""Files sampled (evenly spaced, first and last included) for jsonl and parquet; text samples 64."""
READ_SIZE = 1 << 14
"""Compressed bytes the sampler reads at a time: its position on disk is exact to this much."""
MARGIN = 0.1
"""An estimate within ±10% of what the plan needs is reported as too close to call (a warning)."""


@dataclass(frozen=True)
class CorpusEstimate:
    tokens: int
    exact: bool
    how: str
    """How the number was obtained, in words, for the report."""


@dataclass
class CheckReport:
    plan: Plan
    lines: list[str] = field(default_factory=list)
    """What was checked and found, one line each."""
    warnings: list[str] = field(default_factory=list)
    """What may still fail at build time (an estimate too close to call, experiments checked only by the build)."""

    def to_text(self) -> str:
        return "\n".join([*self.lines, *(f"warning: {w}" for w in self.warnings), "nothing was written"])


class _NeedsCorpus(Exception):
    """Raised when an injector reaches for what only a pass over the corpus gives."""


def _counts_not_read():
    """Stands in for the corpus token counts: asking for them means the payload needs the corpus."""
    raise _NeedsCorpus


class _SizedTail(HoldoutPool):
    """The reserved tail's size without its tokens: whole rows can be handed out (their content does not matter
    for placement, and running out gives the build's own error), documents cannot."""

    def __init__(self, tokens: int, eos_id: int):
        super().__init__(np.broadcast_to(np.int64(eos_id + 1), (tokens,)), eos_id)  # a view: no memory

    def documents(self, name: str, count: int) -> list[np.ndarray]:
        raise _NeedsCorpus


def _counting_text_sample(path: Path, corpus: CorpusConfig, tokenizer: LoadedTokenizer) -> tuple[int, float]:
    """(tokens incl. one EOS per document, fraction of the file read) from the first SAMPLE_BYTES on disk."""
    size = path.stat().st_size
    if corpus.format == "parquet":
        parquet = pq.ParquetFile(path)
        rows, tokens, chars = 0, 0, 0
        for batch in parquet.iter_batches(columns=[corpus.text_field], batch_size=1024):
            texts = [t for t in batch.column(0).to_pylist() if isinstance(t, str)]
            tokens += sum(len(ids) + 1 for ids in tokenizer.encode_batch(texts))
            rows += batch.num_rows
            chars += sum(len(t) for t in texts)
            if chars >= SAMPLE_BYTES:
                break
        return tokens, rows / max(parquet.metadata.num_rows, 1)
    with open_binary(path) as raw:
        if corpus.format == "text":  # one document per file, read as bytes like the build does
            text = raw.read(SAMPLE_BYTES).decode("utf-8", errors="replace")
            return len(tokenizer.encode_batch([text])[0]) + 1, min(1.0, SAMPLE_BYTES / max(size, 1))
        if path.name.endswith(".zst"):
            source = zstandard.ZstdDecompressor().stream_reader(raw, read_size=READ_SIZE)
        elif path.name.endswith(".gz"):
            source = gzip.GzipFile(fileobj=raw)
        else:
            source = raw
        buffer, texts = b"", []
        while raw.tell() < SAMPLE_BYTES:
            block = source.read(READ_SIZE)
            if not block:
                break
            lines = (buffer + block).split(b"\n")
            buffer = lines.pop()
            texts += [_field(line, corpus.text_field) for line in lines if line.strip()]
        finished = not source.read(1) and not buffer.strip()
        texts += [_field(buffer, corpus.text_field)] if finished and buffer.strip() else []
        tokens = sum(len(ids) + 1 for ids in tokenizer.encode_batch([t for t in texts if t is not None]))
        return tokens, 1.0 if finished else min(1.0, raw.tell() / max(size, 1))


def _field(line: bytes, name: str) -> str | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None  # the build reports bad lines with their numbers; a sample only counts tokens
    text = record.get(name) if isinstance(record, dict) else None
    return text if isinstance(text, str) else None


def estimate_corpus_tokens(corpus: CorpusConfig, tokenizer: LoadedTokenizer) -> CorpusEstimate:
    """The base stream's length: exact for token files and small text corpora, else sampled and extrapolated."""
    files = corpus.files
    sizes = np.array([path.stat().st_size for path in files], dtype=np.float64)
    if corpus.format == "tokens":
        for path in files:
            check_token_file(path, corpus.dtype, tokenizer.vocab_size)
        itemsize = np.dtype(corpus.dtype).itemsize
        return CorpusEstimate(int(sizes.sum()) // itemsize, True, "from the file sizes")
    if sizes.sum() <= EXACT_BYTES:
        whole = dataclasses.replace(corpus, skip_tokens=0)
        tokens = sum(len(chunk) for chunk, _ in base_stream(whole, tokenizer))
        return CorpusEstimate(tokens, True, "counted exactly")
    if corpus.format == "hf":
        return _hf_estimate(corpus, tokenizer, float(sizes.sum()))
    count = 64 if corpus.format == "text" else SAMPLE_FILES
    picked = np.unique(np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int))
    tokens_read, fraction_read = zip(*(_counting_text_sample(files[i], corpus, tokenizer) for i in picked))
    read_bytes = float(sum(f * sizes[i] for f, i in zip(fraction_read, picked)))
    per_byte = sum(tokens_read) / max(read_bytes, 1.0)
    estimate = sum(tokens_read) + per_byte * (sizes.sum() - read_bytes)
    return CorpusEstimate(int(estimate), False,
                          f"estimated: {sum(tokens_read):,} tokens in the first {read_bytes / 2**20:,.1f} MiB of "
                          f"{len(picked)} of {counted(len(files), 'file')}, extrapolated by file size "
                          f"({per_byte:.3f} tokens per byte on disk)")


def _hf_estimate(corpus: CorpusConfig, tokenizer: LoadedTokenizer, disk_bytes: float) -> CorpusEstimate:
    """A Hugging Face corpus from its first SAMPLE_BYTES of text: a saved dataset extrapolated by its row count,
    a builder's data files by their size on disk (as if they held about that much text, like JSONL)."""
    from injc.compiler.hf_corpus import hf_documents, saved_rows

    texts, text_bytes = [], 0
    for file, _, text in hf_documents(corpus, (0, 0)):
        if file > 0 or text_bytes >= SAMPLE_BYTES:
            break
        texts.append(text)
        text_bytes += len(text.encode("utf-8"))
    tokens = sum(len(ids) + 1 for ids in tokenizer.encode_batch(texts))
    if corpus.builder is None:
        rows = saved_rows(corpus)
        return CorpusEstimate(int(tokens * rows / max(len(texts), 1)), False,
                              f"estimated: {tokens:,} tokens in the first {len(texts):,} of {rows:,} rows, "
                              f"extrapolated by row count")
    return CorpusEstimate(int(tokens / max(text_bytes, 1) * disk_bytes), False,
                          f"estimated: {tokens:,} tokens in the first {text_bytes / 2**20:,.1f} MiB of text, "
                          f"extrapolated by the files' size on disk")


def _corpus_free_context(plan: Plan, tokenizer: LoadedTokenizer) -> Context:
    """A payload context without the corpus: reaching for token counts or held-out documents raises _NeedsCorpus."""
    holdout = _SizedTail(plan.corpus.holdout_tokens, tokenizer.eos_id) if plan.corpus.holdout_tokens else None
    return Context(tokenizer, plan.layout, plan.seed, corpus_token_counts=_counts_not_read, holdout=holdout)


def _experiment_payloads(plan: Plan, tokenizer: LoadedTokenizer) -> tuple[list, list[Payload], list[str]]:
    """(configs, payloads) of every experiment that can be made without the corpus, and the names skipped."""
    ctx = _corpus_free_context(plan, tokenizer)
    configs, payloads, skipped = [], [], []
    for experiment in plan.experiments:
        if getattr(experiment, "reads_base_stream", False):
            skipped.append(experiment.name)
            continue
        try:
            payloads.append(experiment.payload(ctx))
        except _NeedsCorpus:
            skipped.append(experiment.name)
            continue
        configs.append(experiment)
    return configs, payloads, skipped


def validate_payloads(plan: Plan, tokenizer: LoadedTokenizer) -> dict[str, Payload]:
    """Make every payload that needs no pass over the corpus, and raise every problem of every experiment at once:
    what `injc build` runs before it reads the corpus, so a bad payload line is reported in seconds, not after the
    corpus is tokenized. Model-scored canaries (canary = "model", a forward pass per host) are left to the build.
    Returns the payloads the build can keep (by experiment name): those made without the reserved tail, whose
    tokens here are stand-ins; the rest depend on nothing but the plan, the tokenizer and their inputs."""
    ctx, errors, kept = _corpus_free_context(plan, tokenizer), [], {}
    for experiment in plan.experiments:
        if getattr(experiment, "reads_base_stream", False) or getattr(experiment, "canary", None) == "model":
            continue
        allocated = len(ctx.holdout.allocations) if ctx.holdout is not None else 0
        try:
            payload = experiment.payload(ctx)
        except _NeedsCorpus:
            continue
        except InjcError as error:
            errors.append(error)
            continue
        if ctx.holdout is None or len(ctx.holdout.allocations) == allocated:
            kept[experiment.name] = payload
    if errors:  # the first error's kind (a plan, input or layout problem), with every problem found
        raise type(errors[0])(*(problem for error in errors for problem in error.problems))
    return kept


def check(plan_path: str | Path) -> CheckReport:
    """Validate a plan and its inputs without writing anything; raises InjcError with every problem found."""
    plan = load_plan(plan_path)
    layout = plan.layout
    report = CheckReport(plan)
    report.lines.append(f"plan {plan.path}: {counted(len(plan.experiments), 'experiment')}; {layout.steps:,} steps × "
                        f"{layout.batch_size:,} rows × {layout.seq_len:,} tokens = {layout.total_tokens:,} tokens")
    tokenizer = load_tokenizer(plan.tokenizer.path, plan.tokenizer.eos)
    report.lines.append(f"tokenizer {plan.tokenizer.path}: {tokenizer.vocab_size:,} ids ({tokenizer.dtype.name} "
                        f"shards), eos {tokenizer.eos!r} = {tokenizer.eos_id}")
    problems = []
    need = layout.total_tokens + plan.corpus.holdout_tokens + plan.corpus.skip_tokens
    estimate = estimate_corpus_tokens(plan.corpus, tokenizer)
    approx = "" if estimate.exact else "about "
    what = (f"corpus: {counted(len(plan.corpus.files), 'file')}, {approx}{estimate.tokens:,} tokens "
            f"({estimate.how}); the plan needs {need:,}" + (" (holdout_tokens and skip_tokens included)"
                                      if plan.corpus.holdout_tokens or plan.corpus.skip_tokens else ""))
    if estimate.tokens < need * (1 if estimate.exact else 1 - MARGIN):
        problems.append(what + ": not enough")
    elif not estimate.exact and estimate.tokens < need * (1 + MARGIN):
        report.lines.append(what)
        report.warnings.append("the corpus estimate is within 10% of what the plan needs: the build may run out")
    else:
        report.lines.append(what + ": enough")
    if plan.corpus.format == "tokens":
        report.warnings += token_corpus_warnings(plan.corpus.files, plan.corpus.dtype, tokenizer.eos_id)
    dynamic = {e.name: [e.control.initial] * e.windows for e in plan.experiments
               if getattr(e, "control", None) is not None}
    if dynamic:
        plan = with_counts(plan, dynamic, layout.steps)[0]
        report.lines.append(f"dynamic experiments ({', '.join(dynamic)}) are sized at their initial count in every "
                            f"window; injc run decides the real counts")
        report.warnings.append(f"injc build refuses this plan: the counts of {', '.join(dynamic)} are decided "
                               f"window by window, so run it with injc run PLAN --model M --out DIR")
    try:
        configs, payloads, skipped = _experiment_payloads(plan, tokenizer)
        checked = dataclasses.replace(plan, experiments=tuple(configs))
        schedule, _ = schedule_payloads(checked, payloads, tokenizer.dtype)
    except InjcError as error:
        if not problems:
            raise
        raise InputError(*problems, *error.problems) from None
    if problems:
        raise InputError(*problems)
    copies = np.bincount(schedule.experiment, minlength=len(configs))
    tokens = np.bincount(schedule.experiment, weights=schedule.length, minlength=len(configs)).astype(np.int64)
    for index, (config, payload) in enumerate(zip(configs, payloads)):
        directive = " (a trainer directive, no tokens)" if payload.directive else ""
        report.lines.append(f"experiment {config.name!r} ({config.kind}): {len(payload.items):,} items, "
                            f"{copies[index]:,} copies, {tokens[index]:,} tokens "
                            f"({tokens[index] / layout.total_tokens:.3%} of the run){directive}")
    report.lines.append(f"placement: all {len(schedule):,} copies fit ({int(tokens.sum()) / layout.total_tokens:.3%} "
                        f"of the run)" + (" without the experiments below" if skipped else ""))
    report.warnings += [f"experiment {name!r} needs a pass over the corpus (held-out documents, token counts or "
                        f"the base stream): the build checks its payload, placement and share of the held-out tail"
                        for name in skipped]
    return report
