#!/usr/bin/env bash
# The one GPU suite (see benchmarks/gpu_suite.py): pytest -m gpu, augmentation throughput,
# train step + pipeline ratio, time to Dice vs the MONAI peer, CT inference,
# cohort throughput local vs --engine ray (needs medseg[cluster]).
#   bash benchmarks/gpu_suite.sh             # on a GPU machine: <= 9.5 min on one H100/H200
#   bash benchmarks/gpu_suite.sh --only cohort   # just the cohort entry (~90 s)
#   bash benchmarks/gpu_suite.sh --quick     # toy sizes on the CPU (what the test suite runs)
# Results: benchmarks/results/gpu_suite_<stamp>.json and .md. Research use only.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_suite.py "$@"
