"""`python -m injc ...` is the same as the `injc` command."""

from injc.cli import main

main()
