#!/usr/bin/env bash
# The whole replication on a 2-core CPU (docs/replication.md), in about 2 hours:
#   1. `sknet study` on the CPU recipe (the study_cpu recipe): 9 mini models x
#      {fashion-mnist, fashion-mnist-scaled} x 3 seeds, two runs at a time, one thread each.
#      Resumable: rerun the script and finished runs (and analyses) are skipped.
#   2. scripts/analyze_study.sh: `sknet analyze` (Fig. 3 / Fig. 4) on every seed of the SK
#      models (four settings), then `sknet analyze --compare` over the seeds of each.
#
# Run from the repository root:  bash scripts/cpu_study.sh
# Environment: DATA=/usr/share/datasets/fashion-mnist  STUDY=runs/study_cpu  SEEDS="0 1 2"
#   PARALLEL=2  PYTHON=python (.venv/bin/python if present)
set -euo pipefail

DATA=${DATA:-/usr/share/datasets/fashion-mnist}
STUDY=${STUDY:-runs/study_cpu}
SEEDS=${SEEDS:-"0 1 2"}
PARALLEL=${PARALLEL:-2}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}src
export PYTHONUNBUFFERED=1
ls "$DATA"/*-ubyte* >/dev/null 2>&1 || { echo "no Fashion-MNIST files in $DATA (sh scripts/get_fashion_mnist.sh)"; exit 2; }

# 1. the grid
$PYTHON -m sknet study --config study_cpu --output "$STUDY" --data-dir "$DATA" \
  --seeds $SEEDS --parallel "$PARALLEL" --threads 1 --device cpu

# 2. the attention analyses of every seed, and the comparisons across seeds
STUDY="$STUDY" DATA="$DATA" SEEDS="$SEEDS" PARALLEL="$PARALLEL" DEVICE=cpu PYTHON="$PYTHON" bash scripts/analyze_study.sh
echo "done: $STUDY/results.md, $STUDY/comparisons.csv, $STUDY/analysis/*/comparison.md"
