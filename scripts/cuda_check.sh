#!/usr/bin/env bash
# The CUDA checks in one command, for a machine with a CUDA device: the CUDA-marked
# tests, then scripts/bench.py on CUDA (fp32 and bf16, our step eager and replayed from
# a CUDA graph). The GPU's name, the logs and the benchmark's JSON go to $OUT.
#
# Each stage runs under its own time limit (TEST_TIMEOUT, BENCH_TIMEOUT, in seconds), so
# the whole check fits a fixed slot of a batch queue; the benchmark writes its JSON after
# every row and measures dcgan32 first, so a run cut short keeps what it measured.
# On a node without network, install wgangp first with `make install-offline`.
#
#   bash scripts/cuda_check.sh
#   OUT=/tmp/cuda CONFIGS=mlp,dcgan32 REPEATS=3 bash scripts/cuda_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/cuda_check}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$PYTHON" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/gpu.txt"
timeout "${TEST_TIMEOUT:-150}" "$PYTHON" -m pytest -q -rs -s -m cuda -p no:cacheprovider \
    --continue-on-collection-errors tests/ 2>&1 | tee "$OUT/cuda_tests.log"
tests_rc=${PIPESTATUS[0]}
timeout "${BENCH_TIMEOUT:-400}" "$PYTHON" scripts/bench.py --devices cuda \
    --configs "${CONFIGS:-dcgan32,mlp,dcgan64,resnet32}" --repeats "${REPEATS:-5}" \
    --json "$OUT/bench_cuda.json" 2>&1 | tee "$OUT/bench_cuda.log"
bench_rc=${PIPESTATUS[0]}
echo "cuda tests: exit $tests_rc; cuda benchmark: exit $bench_rc; results in $OUT"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
