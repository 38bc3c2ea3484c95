#!/usr/bin/env bash
# The GPU checks of the performance work, as one script: the throughput bench on CUDA
# (eager and compiled, packed seeds in the grouped layout), minutes per paper-budget
# ResNet-56 run alone and packed with 5 seeds, and the GPU-only tests. Results go to
# $OUT (default gpu-results/): JSON per bench, the console output, the test log.
# Usage: bash scripts/gpu_checks.sh   (in the repository root, .venv set up by make setup)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())' \
  | tee -a "$OUT/gpu.txt"
bench() {  # name, then bench arguments
  local name=$1; shift
  timeout 900 $PY -m studies.bench --device cuda --threads 8 --json "$OUT/$name.json" "$@" \
    2>&1 | tee "$OUT/$name.txt"
}
bench bench-d20 --depth 20 --iters 50 --pack 4
bench bench-d56 --depth 56 --iters 50 --pack 5 --rows reference,fp32,bf16,packed
bench bench-d56-compiled --depth 56 --iters 50 --pack 5 --compile max-autotune \
  --rows fp32,bf16,packed
# Minutes per paper-budget ResNet-56 run (64k iterations; measured over 4,000 and scaled),
# alone and packed with 5 seeds, eager and compiled with CUDA graphs.
bench paper-run-d56 --depth 56 --rows augment --pack 5 --paper-run 4000
bench paper-run-d56-compiled --depth 56 --rows augment --pack 5 --paper-run 4000 \
  --compile reduce-overhead
timeout 900 $PY -m pytest -q -m gpu -p no:cacheprovider 2>&1 | tee "$OUT/tests-gpu.txt"
