"""The `injc` command: thin click glue over the Python API (one function per subcommand). This file holds the data
commands (check, build, inspect, verify, export, locate, tasks); the commands that take a model or its reports
(train, eval, compare, run, cpdt, verbatim-candidates, convert) are in cli_models.py, imported at the end to
register them; the click group and the error handling both use are in command.py.

    injc build examples/demo/plan.toml --out out/demo
    injc inspect out/demo/manifest.json [--json] [--plot density.png] [--step 12]
    injc verify out/demo/manifest.json
    injc train out/demo/manifest.json --model examples/demo/tiny-gpt.yaml --out runs/demo --audit
    injc eval out/demo/manifest.json --checkpoint runs/demo/final --out reports/demo

Exit codes: 0 success; 1 `verify` found a mismatch; 2 bad input (one line per problem on stderr, no traceback);
130 interrupted (Ctrl-C), with a line saying how to continue.
"""

import json
import sys
from pathlib import Path

import click

from injc.command import main, user_errors
from injc.errors import InjcError


@main.command(short_help="Compile a plan into shards, insertions and a manifest.")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--clean", is_flag=True, help="Write the control stream: same base tokens and schedule, no payloads.")
@click.option("--force", is_flag=True,
              help="Replace an earlier injc build in --out (never anything else, nor a folder holding the plan's "
                   "inputs).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Tokenize in N processes (default: one process using the tokenizer's threads). "
                   "The output is identical for any value.")
@click.option("--only", help="Write only these experiments (comma-separated names; '' for none): the other "
                             "experiments' payloads are still made, so items match the whole plan's.")
@click.option("--seed", type=click.IntRange(min=0), help="Use this seed instead of the plan's [layout] seed.")
@click.option("--until-step", type=click.IntRange(min=1),
              help="Write only steps [0, K): a staged build. The same command with a larger K (or without it) "
                   "appends the next steps and keeps the finished shards; the result equals the one-shot build.")
@click.option("--extend", is_flag=True, help="Insist on growing the staged build in --out (same plan and options).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: read and tokenize the corpus on Ray tasks (--workers N at a time; default one per CPU of "
                   "the cluster) and write the shards on Ray tasks. The output is identical.")
@click.option("--ray-address", help="With --executor ray: a running cluster (default: a local Ray instance).")
@click.option("--target", help="olmo-core:SEED: write the rows straight into OLMo-core's order for that data seed "
                               "(one copy; the folder is also its export, see docs/trainers.md).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@user_errors
def build(plan, out_dir, clean, force, workers, only, seed, until_step, extend, executor, ray_address, target, quiet,
          as_json):
    """Compile PLAN (a TOML file) into shards, insertions.parquet and manifest.json under --out."""
    from injc.compiler.build import build as run_build
    from injc.compiler.options import BuildOptions

    names = None if only is None else [name.strip() for name in only.split(",") if name.strip()]
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise InjcError("--executor ray needs ray: pip install -e '.[distributed]'") from None
        from injc.compiler.workers import RayExecutor

        workers = RayExecutor(ray_address, workers)
    elif ray_address:
        raise InjcError("--ray-address goes with --executor ray")
    result = run_build(plan, out_dir, BuildOptions(clean=clean, force=force, progress=not quiet, workers=workers,
                                                   only=names, seed=seed, until_step=until_step, extend=extend,
                                                   target=target))
    if as_json:
        click.echo(json.dumps({"manifest": str(result.manifest_path), "total_tokens": result.total_tokens,
                               "shards": result.shards, "insertions": result.insertions,
                               "inserted_tokens": result.inserted_tokens, "seconds": round(result.seconds, 3),
                               "tokens_per_second": round(result.tokens_per_second),
                               "until_step": result.until_step, "backfilled": result.backfilled,
                               "warnings": list(result.warnings)}))
    else:
        click.echo(result.summary())
        for warning in result.warnings:
            click.echo(f"injc: warning: {warning}", err=True)


@main.command(short_help="Validate a plan and its inputs; write nothing.")
@click.argument("plan", type=click.Path(dir_okay=False))
@user_errors
def check(plan):
    """Validate PLAN and every input it names, and estimate whether the corpus is long enough; writes nothing.

    Exit 0 when a build should succeed (warnings say what only the build can check), 2 with every problem found.
    """
    from injc.compiler.check import check as run_check

    click.echo(run_check(plan).to_text())


@main.command(short_help="What was injected where: per experiment, per step.")
@click.argument("manifest", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Draw insertion density over steps to this PNG (and print only where it went).")
@click.option("--step", type=click.IntRange(min=0), help="List every insertion of this step.")
@click.option("--text", "show_text", is_flag=True, help="With --step: each payload decoded to text.")
@user_errors
def inspect(manifest, as_json, plot, step, show_text):
    """Show what MANIFEST's build injected where: per experiment, and per step."""
    from injc.shards.inspect import inspect as run_inspect

    report = run_inspect(manifest)
    if step is not None and step >= report.manifest.layout.steps:
        raise InjcError(f"--step {step} is outside the run of {report.manifest.layout.steps:,} steps")
    if show_text and step is None:
        raise InjcError("--text goes with --step S: it decodes that step's payloads")
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    elif step is not None:
        click.echo(report.step_table(step, text=show_text))
    elif not plot:
        click.echo(report.to_text())
    if plot:
        report.plot(plot)
        click.echo(f"wrote {plot}", err=as_json or step is not None)


@main.command(short_help="Re-read every byte of a build or an export.")
@click.argument("manifest", type=click.Path())
@click.option("--inputs", is_flag=True, help="Also read the corpus files again where they are (on disk or in object "
                                             "storage) against the manifest's size, ETag and sha256 of each.")
@user_errors
def verify(manifest, inputs):
    """Re-read every byte of MANIFEST's build and, for an `injc export` folder (or a `--target` build, which is
    both), its files' hashes and that its rows in the trainer's order are the manifest's steps; exit 1 on any
    mismatch."""
    from injc.shards.export_check import verify_export
    from injc.shards.exports import EXPORT_NAME
    from injc.shards.manifest import MANIFEST_NAME
    from injc.shards.verify import check_inputs
    from injc.shards.verify import verify as run_verify
    from injc.storage import folder as storage_folder
    from injc.storage import is_url

    if is_url(manifest):  # an export in object storage (injc export --to olmo-core --out s3://...)
        folder, is_build, is_export = manifest, False, (storage_folder(manifest) / EXPORT_NAME).is_file()
    else:
        folder = Path(manifest)
        if not folder.exists():
            raise InjcError(f"{manifest!r} cannot be read: it does not exist")
        is_build = not folder.is_dir() or (folder / MANIFEST_NAME).is_file()
        is_export = folder.is_dir() and (folder / EXPORT_NAME).is_file()
    if not (is_build or is_export):
        raise InjcError(f"{manifest!r} is neither an injc build (no {MANIFEST_NAME}) nor an export (no {EXPORT_NAME})"
                        + ("; give the build's folder, the one above shards/" if Path(manifest).name == "shards"
                           else ""))
    problems = (run_verify(manifest) if is_build else []) + (verify_export(folder) if is_export else [])
    if inputs:
        if not is_build:
            raise InjcError("--inputs checks a build's corpus files: give the build's manifest")
        problems += check_inputs(manifest)
    for problem in problems:
        click.echo(f"injc: mismatch: {problem}", err=True)
    if problems:
        sys.exit(1)
    click.echo(f"ok: {manifest} verified")


@main.command(short_help="Write a build in a trainer's own order and format.")
@click.argument("manifest", type=click.Path())
@click.option("--to", "target", required=True,
              help="The trainer whose own loader will read the export: olmo-core, megatron, litdata or nanogpt.")
@click.option("--seed", type=click.IntRange(min=0),
              help="The trainer's data seed (olmo-core, megatron: it decides the order; litdata: the order of "
                   "StreamingDataset(shuffle=True, seed=SEED), litgpt pretrain's is 42; refused for nanogpt).")
@click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="litdata: the StreamingDataLoader's num_workers to write the order for.")
@click.option("--num-ranks", type=click.IntRange(min=1), default=1, show_default=True,
              help="litdata: the data-parallel ranks (each reads batch_size / ranks rows a step).")
@click.option("--micro-batch-size", type=click.IntRange(min=1),
              help="litdata with --seed: rows per StreamingDataLoader batch on each rank (default: batch_size / "
                   "ranks); the trainer accumulates batch_size / (micro × ranks) of them a step.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Export folder (new); for olmo-core also an object-storage prefix (s3://bucket/prefix).")
@user_errors
def export(manifest, target, seed, num_workers, num_ranks, micro_batch_size, out_dir):
    """Write MANIFEST's build in a trainer's own order and format, so that the trainer's own loader, with the
    settings export.json states, serves the manifest's step k at step k (see docs/trainers.md)."""
    from injc.shards.exports import export as run_export
    from injc.storage import folder, is_url

    if (num_workers or num_ranks > 1) and target != "litdata":
        raise InjcError("--num-workers and --num-ranks are for --to litdata")
    if is_url(out_dir):
        from injc.shards.remote_export import export_to_store

        written = export_to_store(manifest, target, out_dir, seed)
    else:
        written = run_export(manifest, target, out_dir, seed, num_workers, num_ranks, micro_batch_size)
    path = folder(written)
    click.echo(f"wrote {path.parent} for {target}; the loader settings are in {path}")
    noise = json.loads(path.read_text()).get("trainer_must_apply", {}).get("embedding_noise")
    if noise:
        click.echo(f"injc: note: {', '.join(noise['experiments'])} adds embedding noise at {noise['steps']:,} steps, "
                   f"which the files cannot hold: your trainer must apply it with "
                   f"injc.train.noise.attach_embedding_noise (export.json's trainer_must_apply; docs/trainers.md)",
                   err=True)


@main.command(short_help="Find every occurrence of a token sequence.")
@click.argument("manifest", type=click.Path())
@click.option("--text", help="Text to find, tokenized with the build's tokenizer; searched as given and after a "
                             "space (as a word reads mid-document).")
@click.option("--tokens", help="Token ids to find, comma-separated.")
@click.option("--experiment", help="Find every item of this experiment (its tokens without EOS wrappers).")
@click.option("--item", type=click.IntRange(min=0), help="With --experiment: only this item.")
@click.option("--export", "export_dir", type=click.Path(file_okay=False),
              help="An injc export folder: also give the file and row the trainer reads each occurrence from.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: the queries searched, every occurrence, and the counts (also when none).")
@user_errors
def locate(manifest, text, tokens, experiment, item, export_dir, as_json):
    """Every occurrence of a token sequence in the stream: offset, step, row, col, and whether it is a recorded
    insertion (experiment, item, repetition) or natural text. --text searches the text as given and after a space
    (how a word reads mid-document), and says which form each occurrence has."""
    from injc.shards.locate import item_tokens, text_forms, token_ids
    from injc.shards.locate import locate as run_locate
    from injc.shards.manifest import load_manifest

    if sum(x is not None for x in (text, tokens, experiment)) != 1:
        raise InjcError("give one of --text, --tokens or --experiment")
    if item is not None and experiment is None:
        raise InjcError("--item goes with --experiment")
    loaded = load_manifest(manifest)
    if text is not None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(loaded.root / loaded.data["tokenizer"]["path"]))
        queries = [({"query_text": form}, ids) for form, ids in text_forms(tokenizer, text)]
    elif tokens is not None:
        queries = [({}, token_ids(tokens, loaded.data["layout"]["vocab_size"]))]
    else:
        queries = [({"query_item": index}, ids) for index, ids in item_tokens(loaded, experiment, item)]
    occurrences = [{**query, **found} for query, ids in queries for found in run_locate(loaded, ids, export_dir)]
    total = {kind: sum(o["kind"] == kind for o in occurrences) for kind in ("inserted", "natural")}
    if as_json:
        click.echo(json.dumps({"queries": [{**query, "tokens": [int(i) for i in ids]} for query, ids in queries],
                               "occurrences": occurrences, **total}))
        return
    for found in occurrences:
        where = f" {found['experiment']} item {found['item']} rep {found['repetition']}" \
            if found["kind"] == "inserted" else ""
        file = f"  → {found['file']} row {found['file_row']}" if "file" in found else ""
        query = (f"item {found['query_item']}: " if "query_item" in found else
                 f"{found['query_text']!r}: " if "query_text" in found else "")
        click.echo(f"{query}offset {found['offset']:,} step {found['step']} row {found['row']} col "
                   f"{found['col']}  {found['kind']}{where}{file}")
    searched = " and ".join(repr(query["query_text"]) for query, _ in queries) if text is not None else ""
    click.echo(f"{total['inserted'] + total['natural']:,} occurrences: {total['inserted']:,} inserted, "
               f"{total['natural']:,} natural" + (f" (searched {searched})" if searched else ""))


@main.command(short_help="Write the contamination questions as lm-eval tasks, one per tier.")
@click.argument("manifest", type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the tasks (a JSONL and a YAML each); give it to injc eval --tasks-dir.")
@user_errors
def tasks(manifest, out_dir):
    """Write every contamination experiment of MANIFEST as lm-evaluation-harness tasks, one per tier
    (injc_NAME_holdout, injc_NAME_x4, ...), scored as injc's contamination eval scores them."""
    from injc.evals.benchmarks import write_contamination_tasks

    names = write_contamination_tasks(manifest, out_dir)
    click.echo(f"wrote {len(names)} tasks to {out_dir}: {','.join(names)}")
    click.echo(f"run them: injc eval {manifest} --checkpoint CKPT --out REPORT --benchmarks {','.join(names)} "
               f"--tasks-dir {out_dir}")


import injc.cli_models  # noqa: E402,F401  (registers the model commands on `main`)
