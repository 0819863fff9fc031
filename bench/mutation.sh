#!/usr/bin/env bash
# Mutation testing of the code that computes what users read: mutmut mutates the modules [tool.mutmut] in
# pyproject.toml names (only_mutate), runs the eval tests that reach each mutant, then bench/mutation_report.py
# prints the kill rate per module over the non-equivalent mutants and lists every survivor. Not part of CI's run
# (minutes); needs the `mutation` extra: pip install -e '.[mutation]'. Extra arguments go to the report (--min).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mutmut >/dev/null || { echo "bench/mutation.sh needs mutmut: pip install -e '.[mutation]'" >&2; exit 2; }
rm -rf mutants
mutmut run >mutants.log 2>&1 || { tail -20 mutants.log >&2; exit 1; }
python3 bench/mutation_report.py "$@"
