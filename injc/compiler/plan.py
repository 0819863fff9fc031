"""The plan: a strict TOML file describing the layout, tokenizer, corpus and experiments of one run.

Loading collects every problem (unknown keys, wrong types, bad values, missing files) and raises one `PlanError`
that lists them all, each with its TOML location. See docs/plan.md for every key.
"""

import dataclasses
import glob
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import tomllib

from injc.compiler.hf_corpus import BUILDERS, column_problem
from injc.errors import InjcError, InputError, PlanError
from injc.hfdata import saved_files
from injc.injectors import KINDS
from injc.injectors.saved import DatasetFolder, split_problem
from injc.shards.layout import Layout
from injc.storage import expand, is_remote, is_url, secret_options
from injc.tables import TableReader, resolve_path

CORPUS_FORMATS = ("jsonl", "parquet", "text", "tokens", "hf")
TOKEN_DTYPES = ("uint16", "uint32")
DEFAULT_SHARD_TOKENS = 1 << 28


@dataclass(frozen=True)
class TokenizerConfig:
    path: Path
    """A Hugging Face `tokenizers` JSON file."""
    eos: str | None
    """Separator between documents and around payloads; None: the tokenizer's own."""


@dataclass(frozen=True)
class CorpusConfig:
    files: tuple[Path, ...]
    """Every file the globs matched, sorted within each glob, globs in plan order."""
    format: str
    """jsonl (.jsonl, .jsonl.gz, .jsonl.zst) | parquet | text (one document per file) | tokens (raw ids)."""
    text_field: str
    """The document text's key (jsonl) or column (parquet)."""
    dtype: str | None
    """format = "tokens" only: uint16 | uint32, little-endian."""
    holdout_tokens: int = 0
    """Tokens reserved after the run's own: never trained on, a pool for replacements and controls."""
    skip_tokens: int = 0
    """Tokens of the corpus stream passed over before the run's first: another window of the same corpus."""
    dataset: Path | None = None
    """format = "hf" without a builder: the `save_to_disk` folder (`files` are its split's Arrow files)."""
    split: str | None = None
    """format = "hf": the split of a saved DatasetDict (default "train"), or the split a builder makes."""
    builder: str | None = None
    """format = "hf": a `datasets` builder (parquet, json, text, arrow, csv) that reads `files` as data files."""
    storage_options: tuple = ()
    """fsspec options for URL paths (endpoint, profile, region; never a credential), as (key, value) pairs."""


@dataclass(frozen=True)
class Plan:
    path: Path
    sha256: str
    """Fingerprint of the plan file's bytes."""
    layout: Layout
    seed: int
    """Seeds every random choice of the build: same plan and inputs, same bytes."""
    shard_tokens: int
    """Target tokens per shard, rounded down to whole steps (at least one step)."""
    tokenizer: TokenizerConfig
    corpus: CorpusConfig
    experiments: tuple
    """One config per [[experiments]] table; its class depends on `kind` (see injc.injectors)."""
    cpdt_outcomes: dict = dataclasses.field(default_factory=dict)
    """Experiment name → `cpdt_outcome` key: a dotted path into its eval result that `injc cpdt` uses instead of
    the kind's default outcome (e.g. "metrics.tiers.144.accuracy")."""

    @property
    def shard_steps(self) -> int:
        return max(1, self.shard_tokens // self.layout.tokens_per_step)

    def input_files(self) -> list[Path]:
        """Every file the plan reads: itself, the tokenizer, the corpus, each experiment's files."""
        files = [self.path, self.tokenizer.path, *self.corpus.files]
        for experiment in self.experiments:
            files += [value for f in dataclasses.fields(experiment)
                      if isinstance(value := getattr(experiment, f.name), Path) or is_remote(value)]
        return files


def _read_layout(reader: TableReader) -> tuple[Layout | None, int, int]:
    seq_len = reader.int("seq_len", min=2, max=1 << 24)
    batch_size = reader.int("batch_size", min=1, max=1 << 24)
    steps = reader.int("steps", min=1, max=1 << 40)
    seed = reader.int("seed", 0, min=0, max=(1 << 63) - 1)
    shard_tokens = reader.int("shard_tokens", DEFAULT_SHARD_TOKENS, min=1)
    reader.finish()
    if None in (seq_len, batch_size, steps):
        return None, seed or 0, shard_tokens or DEFAULT_SHARD_TOKENS
    return Layout(seq_len, batch_size, steps), seed or 0, shard_tokens or DEFAULT_SHARD_TOKENS


def _read_corpus(reader: TableReader, base: Path) -> CorpusConfig:
    patterns = reader.str_list("paths") or []
    fmt = reader.str("format", "jsonl", choices=CORPUS_FORMATS)
    text_field = reader.str("text_field", "text")
    dtype = reader.str("dtype", None, choices=TOKEN_DTYPES)
    holdout_tokens = reader.int("holdout_tokens", 0, min=0)
    skip_tokens = reader.int("skip_tokens", 0, min=0)
    split = reader.str("split", None)
    builder = reader.str("builder", None, choices=BUILDERS)
    storage_options = reader.get("storage_options", {})
    if not isinstance(storage_options, dict):
        reader.problem("expected a table of fsspec options, as storage_options = { endpoint_url = \"...\" }",
                       "storage_options")
        storage_options = {}
    for key in secret_options(storage_options):
        reader.problem(f"{key!r} is a credential: the plan is copied into the manifest, so credentials come from "
                       f"the environment or the store's config files (~/.aws, gcloud), not the plan",
                       "storage_options")
    for key in ("split", "builder"):
        if fmt != "hf" and reader.has(key):
            reader.problem("only valid with format = \"hf\"", key)
    if fmt == "tokens" and dtype is None and not reader.has("dtype"):
        reader.problem("format = \"tokens\" needs dtype = \"uint16\" or \"uint32\"", "dtype")
    if fmt != "tokens" and reader.has("dtype"):
        reader.problem("only valid with format = \"tokens\"", "dtype")
    reader.finish()
    if fmt == "hf" and builder is None:
        return _saved_dataset(reader, patterns, base, text_field, split, holdout_tokens or 0, skip_tokens or 0)
    files: list = []
    for pattern in patterns:
        if is_url(pattern):
            try:
                matches = expand(pattern, storage_options)
            except InputError as error:
                reader.problem(str(error), "paths")
                continue
            if not matches:
                reader.problem(f"{pattern!r} matches no file", "paths")
            files.extend(matches)
            continue
        resolved = resolve_path(pattern, base, lambda message: reader.problem(message, "paths"))
        if resolved is None:
            continue
        matches = sorted(Path(m) for m in glob.glob(str(resolved), recursive=True) if Path(m).is_file())
        if not matches:
            reader.problem(f"{pattern!r} matches no file", "paths")
        files.extend(matches)
    return CorpusConfig(tuple(files), fmt, text_field, dtype, holdout_tokens or 0, skip_tokens or 0, split=split,
                        builder=builder, storage_options=tuple(sorted(storage_options.items())))


def _saved_dataset(reader: TableReader, patterns: list[str], base: Path, text_field: str, split: str | None,
                   holdout_tokens: int, skip_tokens: int) -> CorpusConfig:
    """A `save_to_disk` folder as the corpus: checked from its JSON (split, text column and its type)."""
    unread = CorpusConfig((), "hf", text_field, None, holdout_tokens, skip_tokens, split=split)
    if len(patterns) != 1:
        reader.problem('format = "hf" reads one saved dataset folder (or data files, with builder = ...); '
                       f"got {len(patterns)} paths", "paths")
        return unread
    if is_url(patterns[0]):
        reader.problem(f"{patterns[0]!r}: a saved dataset is read from a local folder (save_to_disk); to read from "
                       f"object storage, give its data files with builder = \"parquet\", \"json\", ...", "paths")
        return unread
    folder = resolve_path(patterns[0], base, lambda message: reader.problem(message, "paths"))
    if folder is None:
        return unread
    if not folder.exists():
        reader.problem(f"{patterns[0]!r} does not exist ({str(folder)!r})", "paths")
        return unread
    if not folder.is_dir():
        reader.problem(f"{patterns[0]!r} is not a folder: a saved dataset is the folder save_to_disk wrote "
                       "(data files need builder = \"parquet\", \"json\", ...)", "paths")
        return unread
    files, state, problems = saved_files(folder, split)
    problem = problems[0] if problems else column_problem(state["features"] or {}, text_field, repr(str(folder)))
    if problem:
        reader.problem(problem, "paths" if problems else "text_field")
        return unread
    return CorpusConfig(tuple(files), "hf", text_field, None, holdout_tokens, skip_tokens, dataset=folder,
                        split=split)


def _read_experiments(tables, base: Path, steps: int | None, problems: list[str]) -> tuple[tuple, dict]:
    if not isinstance(tables, list):
        problems.append("experiments: expected an array of tables ([[experiments]])")
        return (), {}
    experiments, seen, outcomes = [], set(), {}
    for index, table in enumerate(tables):
        reader = TableReader(table, f"experiments[{index}]", problems)
        name = reader.str("name")
        if name in seen:
            reader.problem(f"duplicate experiment name {name!r}", "name")
        seen.add(name)
        if isinstance(name, str):
            reader.where = f"experiments[{index}] {json.dumps(name, ensure_ascii=False)}"  # errors name it
        kind = reader.str("kind", choices=tuple(KINDS))
        outcome = reader.str("cpdt_outcome", None)
        if isinstance(outcome, str):
            if all(part.strip() for part in outcome.split(".")):
                outcomes[name] = outcome
            else:
                reader.problem(f"expected a dotted path into the eval result (metrics.mean_loss), got {outcome!r}",
                               "cpdt_outcome")
        if kind is None or name is None:
            reader.used.update(reader.table)
            continue
        reader.saved_datasets = True
        fields, split = _field_map(reader), reader.str("dataset_split", None)
        experiments.append(_saved_inputs(KINDS[kind].read(reader, name, kind, base, steps), reader, fields, split))
        reader.finish()
    return tuple(experiments), outcomes


def _field_map(reader: TableReader) -> dict:
    """An experiment's `fields`: injc field → dotted path (or list of paths), `labels` a path, `answer_base` an int."""
    fields = reader.get("fields", {})
    if not isinstance(fields, dict):
        reader.problem("expected a table such as { question = \"question\", choices = \"choices.text\" }", "fields")
        return {}
    for key, value in fields.items():
        if key == "answer_base":
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str) or (key != "labels" and isinstance(value, list) and value
                                            and all(isinstance(v, str) for v in value))
        if not ok:
            reader.problem(f"{key} = {value!r}: expected "
                           + ("an integer" if key == "answer_base" else "a dotted path" if key == "labels"
                              else "a dotted path or a list of them"), "fields")
    return fields


def _saved_inputs(config, reader: TableReader, fields: dict, split: str | None):
    """The experiment with each input that is a saved Hugging Face dataset folder read with `dataset_split` and
    `fields`."""
    saved = {f.name: value for f in dataclasses.fields(config)
             if isinstance(value := getattr(config, f.name), Path) and value.is_dir()}
    if (fields or split is not None) and not saved:
        reader.problem("fields and dataset_split apply to saved Hugging Face dataset folders; no input of this "
                       "experiment is one", "fields" if fields else "dataset_split")
    for value in saved.values():
        problem = split_problem(value, split)
        if problem:
            reader.problem(problem, "dataset_split")
    return dataclasses.replace(config, **{key: DatasetFolder.of(value, fields, split) for key, value in saved.items()})


def load_plan(path: str | Path) -> Plan:
    """Parse and validate a plan file; raises PlanError listing every problem found."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise PlanError(f"plan {str(path)!r} cannot be read: {error.strerror or error}") from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PlanError(f"plan {str(path)!r} is not valid UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise PlanError(f"plan {str(path)!r} is not valid TOML: {error}") from None

    problems: list[str] = []
    base = path.parent
    top = TableReader(document, "plan", problems)
    layout, seed, shard_tokens = _read_layout(TableReader(top.get("layout", {}), "layout", problems))
    tok_reader = TableReader(top.get("tokenizer", {}), "tokenizer", problems)
    tokenizer = TokenizerConfig(tok_reader.path("path", base), tok_reader.str("eos", None))
    tok_reader.finish()
    corpus = _read_corpus(TableReader(top.get("corpus", {}), "corpus", problems), base)
    experiments, outcomes = _read_experiments(top.get("experiments", []), base, layout.steps if layout else None,
                                              problems)
    top.finish()
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise PlanError(f"{len(problems)} {noun} in {path}:", *(f"  {p}" for p in problems))
    return Plan(path, hashlib.sha256(raw).hexdigest(), layout, seed, shard_tokens, tokenizer, corpus, experiments,
                outcomes)


def with_counts(plan: Plan, counts: dict[str, list[int]], until_step: int) -> tuple[Plan, dict[str, list[int]]]:
    """The plan with the decided counts of its dynamic experiments, and those counts as far as the written steps
    reach (what the stream depends on: the build key's `counts`)."""
    dynamic = {e.name: e for e in plan.experiments if getattr(e, "control", None) is not None}
    unknown = sorted(set(counts) - set(dynamic))
    if unknown:
        raise InjcError(*(f"counts given for {name!r}, which is not a per_window = \"dynamic\" experiment"
                          for name in unknown))
    for name, values in counts.items():
        if len(values) > dynamic[name].windows:
            raise InjcError(f"{len(values)} counts given for {name!r}, which has {dynamic[name].windows} windows")
    experiments = tuple(e.with_counts(counts[e.name]) if e.name in counts else e for e in plan.experiments)
    decided = {name: [int(n) for n in values[:math.ceil(until_step / dynamic[name].window_steps)]]
               for name, values in sorted(counts.items())}
    return dataclasses.replace(plan, experiments=experiments), decided
