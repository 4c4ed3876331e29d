#!/usr/bin/env bash
# The whole replication on a 2-core CPU (docs/replication.md), in about 2 hours:
#   1. `sknet study` on the CPU recipe (the study_cpu recipe): 9 mini models x
#      {fashion-mnist, fashion-mnist-scaled} x 3 seeds, two runs at a time, one thread each.
#      Resumable: rerun the script and finished runs (and analyses) are skipped.
#   2. `sknet analyze` (Fig. 3 / Fig. 4) on every seed of the SK models: K3+K5 and K3+K5+K7
#      on the scaled set (objects redrawn at 28 / 42 / 56 px), K3+K5 with the paper's
#      centre-crop procedure on both sets; two at a time.
#   3. `sknet analyze --compare` over the seeds of each of those four settings.
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

# 2. the attention analyses, one per trained model and setting (skipped when done)
#    name             data set              variant    scaling
SETTINGS="scaled_k3k5_sk_render     fashion-mnist-scaled k3k5_sk   render
scaled_k3k5k7_sk_render   fashion-mnist-scaled k3k5k7_sk render
scaled_k3k5_sk_crop       fashion-mnist-scaled k3k5_sk   crop
fmnist_k3k5_sk_crop       fashion-mnist        k3k5_sk   crop"
jobs=()
while read -r name dataset variant scaling; do
  for seed in $SEEDS; do
    out="$STUDY/analysis/$name/seed$seed"
    [ -f "$out/analysis.json" ] && continue
    jobs+=("$STUDY/runs/$dataset/$variant/seed$seed/model.safetensors $dataset $scaling $out")
  done
done <<< "$SETTINGS"
if [ ${#jobs[@]} -gt 0 ]; then
  printf '%s\n' "${jobs[@]}" | xargs -P "$PARALLEL" -L 1 sh -c '
    mkdir -p "$(dirname "$3")"
    OMP_NUM_THREADS=1 '"$PYTHON"' -m sknet analyze --checkpoint "$0" --dataset "$1" --data-dir '"$DATA"' \
      --scaling "$2" --channel-group 8 --device cpu --output "$3" > "$3.log" 2>&1 \
      || { echo "analysis failed: $3"; cat "$3.log"; exit 255; }
    echo "analysed $0 ($2) -> $3"'
fi

# 3. across seeds
while read -r name _; do
  dirs=()
  for seed in $SEEDS; do dirs+=("$STUDY/analysis/$name/seed$seed"); done
  $PYTHON -m sknet analyze --compare "${dirs[@]}" --output "$STUDY/analysis/$name"
done <<< "$SETTINGS"
echo "done: $STUDY/results.md, $STUDY/comparisons.csv, $STUDY/analysis/*/comparison.md"
