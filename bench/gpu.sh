#!/usr/bin/env bash
# Every device check in one run, figures to one JSON file (bench/bench_gpu.py says what each is).
#   bash bench/gpu.sh [--smoke] [--out gpu.json]
# On a GPU machine: under 8 minutes on one H100. --smoke: toy sizes on the CPU (the test suite runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/bench_gpu.py "$@"
