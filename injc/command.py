"""The `injc` click group and the error handling every command shares: InjcError → its lines and exit 2,
Ctrl-C → one line and 130. The commands register on `main` from injc/cli.py (data) and injc/cli_models.py (models);
this module imports neither, so the two command modules depend only on it."""

import sys
from functools import wraps

import click

from injc.errors import InjcError, Interrupted

ON_INTERRUPT = {"build": "run the same command again to resume (finished shards are kept)",
                "cpdt": "run the same command again to continue with the rows not finished",
                "run": "run the same command again to continue from the last finished window"}
"""What an interrupted command leaves and how to continue, when there is more to say than 'interrupted'."""


def user_errors(command):
    """Turn InjcError (and OSError) into its lines on stderr and exit code 2; Ctrl-C into one line and 130."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except Interrupted as stop:
            click.echo(f"injc: interrupted: {stop}", err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            hint = ON_INTERRUPT.get(click.get_current_context().info_name)
            click.echo("injc: interrupted" + (f"; {hint}" if hint else ""), err=True)
            sys.exit(130)
        except InjcError as error:
            for line in error.problems:
                click.echo(f"injc: error: {line}" if not line.startswith("  ") else line, err=True)
            sys.exit(getattr(error, "exit_code", 2))
        except OSError as error:  # a file system problem outside injc's control: one line, no traceback
            where = f" ({error.filename})" if error.filename else ""
            click.echo(f"injc: error: {error.strerror or error}{where}", err=True)
            sys.exit(2)

    return wrapper


@click.group()
@click.version_option(package_name="injc")
def main():
    """Compile controlled pretraining experiments into deterministic, pre-tokenized memmap shards."""
