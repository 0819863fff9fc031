"""The exceptions injc raises for bad input.

Every error a user can cause is an `InjcError`; the CLI prints its lines (one per problem) and exits with code 2.
Anything else escaping is a bug in injc, not in the user's input.
"""


def some_of(names: list, shown: int = 5) -> str:
    """'a, b, c and 12 more': what an error line names of a long list, with the rest counted."""
    more = f" and {len(names) - shown:,} more" if len(names) > shown else ""
    return ", ".join(str(name) for name in names[:shown]) + more


def counted(count: int, noun: str) -> str:
    """'1 file', '3 files', '1,024 experiments': a count with its noun in the right number."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


class InjcError(Exception):
    """Base class: a problem with the user's input or environment, reported as one line per problem."""

    def __init__(self, *problems: str):
        self.problems = [p for p in problems if p]
        super().__init__("\n".join(self.problems))


class PlanError(InjcError):
    """The plan file is not valid TOML, or its keys, types or values are wrong."""


class InputError(InjcError):
    """A file the plan names is missing, unreadable or malformed (corpus, payloads, tokenizer)."""


class LayoutError(InjcError):
    """The requested experiments do not fit the run: too little corpus, too little free space, overlaps."""


class ManifestError(InjcError):
    """A manifest or its shards cannot be read as the format contract says."""


class CommandFailed(InjcError):
    """A command injc ran for the user (`injc run --train-cmd`) exited non-zero: the CLI exits with 1, not 2, since
    the input may be fine and a rerun continue."""

    exit_code = 1


class Interrupted(Exception):
    """The user pressed Ctrl-C; the message says what was kept and how to continue. The CLI exits with 130."""
