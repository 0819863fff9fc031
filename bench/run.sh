#!/usr/bin/env bash
# Every benchmark figure of docs/benchmarks.md, each next to its anchor measured in the same run.
#   bash bench/run.sh            (about 15 minutes on 2 cores; add --huge to bench_scale.py for 100M copies)
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== P1 build throughput, schedule (bench_compiler.py)"
python3 bench/bench_compiler.py --ray --hf
echo "== P4 trainer overhead, devices and strategies, litgpt pretrain (bench_train.py)"
python3 bench/bench_train.py --litgpt
echo "== P7 eval throughput (bench_eval.py)"
python3 bench/bench_eval.py
echo "== P8 injc eval --benchmarks against lm_eval (bench_benchmarks.py)"
python3 bench/bench_benchmarks.py
echo "== P9 a build from object storage against download + local build (bench_remote.py)"
python3 bench/bench_remote.py --copies 16
echo "== start-up of injc --help, inspect, locate (bench_startup.py)"
python3 bench/bench_startup.py
echo "== the device checks at toy size on the CPU (gpu.sh --smoke; on a GPU machine run bash bench/gpu.sh)"
bash bench/gpu.sh --smoke --out "$(mktemp -d)/gpu.json"
echo "== P2, P3, P5, inspect/verify, export (bench_scale.py)"
python3 bench/bench_scale.py "$@"
