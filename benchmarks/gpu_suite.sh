#!/usr/bin/env bash
# The one GPU suite (see benchmarks/gpu_suite.py): pytest -m gpu, augmentation throughput,
# train step + pipeline ratio, time to Dice vs the MONAI peer, CT inference.
#   bash benchmarks/gpu_suite.sh             # on a GPU machine: <= 8 min on one H100/H200
#   bash benchmarks/gpu_suite.sh --quick     # toy sizes on the CPU (what the test suite runs)
# Results: benchmarks/results/gpu_suite_<stamp>.json and .md. Research use only.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_suite.py "$@"
