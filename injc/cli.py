"""The `injc` command: thin click glue over the Python API (one function per subcommand).

    injc build examples/demo/plan.toml --out out/demo
    injc inspect out/demo/manifest.json [--json] [--plot density.png] [--step 12]
    injc verify out/demo/manifest.json

Exit codes: 0 success; 1 `verify` found a mismatch; 2 bad input (one line per problem on stderr, no traceback).
"""

import json
import os
import sys
from functools import wraps

import click

from injc.errors import InjcError


def _user_errors(command):
    """Turn InjcError into its lines on stderr and exit code 2."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InjcError as error:
            for line in error.problems:
                click.echo(f"injc: error: {line}" if not line.startswith("  ") else line, err=True)
            sys.exit(2)

    return wrapper


@click.group()
@click.version_option(package_name="injc")
def main():
    """Compile controlled pretraining experiments into deterministic, pre-tokenized memmap shards."""


@main.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--clean", is_flag=True, help="Write the control stream: same base tokens and schedule, no payloads.")
@click.option("--force", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Tokenizer threads (default: all cores). The output is identical for any value.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_user_errors
def build(plan, out_dir, clean, force, workers, quiet, as_json):
    """Compile PLAN (a TOML file) into shards, insertions.parquet and manifest.json under --out."""
    if workers is not None:
        os.environ["RAYON_NUM_THREADS"] = str(workers)  # read by the tokenizer's pool on its first use
    from injc.compiler.build import build as run_build

    result = run_build(plan, out_dir, clean=clean, force=force, progress=not quiet)
    if as_json:
        click.echo(json.dumps({"manifest": str(result.manifest_path), "total_tokens": result.total_tokens,
                               "shards": result.shards, "insertions": result.insertions,
                               "inserted_tokens": result.inserted_tokens, "seconds": round(result.seconds, 3),
                               "tokens_per_second": round(result.tokens_per_second)}))
    else:
        click.echo(result.summary())


@main.command()
@click.argument("manifest", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Draw insertion density over steps to this PNG.")
@click.option("--step", type=click.IntRange(min=0), help="List every insertion of this step.")
@_user_errors
def inspect(manifest, as_json, plot, step):
    """Show what MANIFEST's build injected where: per experiment, and per step."""
    from injc.shards.inspect import inspect as run_inspect

    report = run_inspect(manifest)
    if step is not None and step >= report.manifest.layout.steps:
        raise InjcError(f"--step {step} is outside the run of {report.manifest.layout.steps:,} steps")
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    elif step is not None:
        click.echo(report.step_table(step))
    else:
        click.echo(report.to_text())
    if plot:
        report.plot(plot)
        click.echo(f"wrote {plot}", err=True)


@main.command()
@click.argument("manifest", type=click.Path())
@_user_errors
def verify(manifest):
    """Re-read every byte of MANIFEST's build; exit 1 on any mismatch."""
    from injc.shards.verify import verify as run_verify

    problems = run_verify(manifest)
    for problem in problems:
        click.echo(f"injc: mismatch: {problem}", err=True)
    if problems:
        sys.exit(1)
    click.echo(f"ok: {manifest} verified")
