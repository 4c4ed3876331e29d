#!/usr/bin/env bash
# The attention analyses of a finished study (docs/replication.md, Fig. 3 / Fig. 4), used by
# cpu_study.sh and gpu_study.sh:
#   1. `sknet analyze` on every seed of each SK setting below whose data set is in DATASETS:
#      K3+K5 and K3+K5+K7 on the scaled set (objects redrawn at 28 / 42 / 56 px), K3+K5 with
#      the paper's centre-crop procedure on both sets; PARALLEL at a time, one thread each.
#      An analysis already done (its analysis.json exists) is skipped; a missing model is
#      reported and skipped, so a partial grid still gets the analyses it can.
#   2. `sknet analyze --compare` over the seeds of each setting (when two or more are there).
#
# Run from the repository root:  STUDY=runs/study_cpu bash scripts/analyze_study.sh
# Environment: STUDY (required)  DATA=/usr/share/datasets/fashion-mnist  SEEDS="0 1 2"
#   DATASETS="fashion-mnist fashion-mnist-scaled"  PARALLEL=2  DEVICE=cpu  BATCH_SIZE=64
#   MAX_IMAGES= (all test images)  PYTHON=python (.venv/bin/python if present)
set -euo pipefail

STUDY=${STUDY:?set STUDY to the study folder}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
SEEDS=${SEEDS:-"0 1 2"}
DATASETS=${DATASETS:-"fashion-mnist fashion-mnist-scaled"}
PARALLEL=${PARALLEL:-2}
DEVICE=${DEVICE:-cpu}
BATCH_SIZE=${BATCH_SIZE:-64}
MAX_IMAGES=${MAX_IMAGES:-}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}src
export STUDY DATA DEVICE BATCH_SIZE MAX_IMAGES PYTHON

#  name                      data set              variant    scaling
SETTINGS="scaled_k3k5_sk_render     fashion-mnist-scaled k3k5_sk   render
scaled_k3k5k7_sk_render   fashion-mnist-scaled k3k5k7_sk render
scaled_k3k5_sk_crop       fashion-mnist-scaled k3k5_sk   crop
fmnist_k3k5_sk_crop       fashion-mnist        k3k5_sk   crop"
wanted() { case " $DATASETS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# 1. one analysis per trained model and setting
jobs=()
while read -r name dataset variant scaling; do
  wanted "$dataset" || continue
  for seed in $SEEDS; do
    out="$STUDY/analysis/$name/seed$seed"
    model="$STUDY/runs/$dataset/$variant/seed$seed/model.safetensors"
    [ -f "$out/analysis.json" ] && continue
    if [ ! -f "$model" ]; then echo "analysis $name seed $seed skipped: no $model"; continue; fi
    jobs+=("$model $dataset $scaling $out")
  done
done <<< "$SETTINGS"
if [ ${#jobs[@]} -gt 0 ]; then
  # exit 255 stops xargs at the first failure, with that analysis's log printed
  printf '%s\n' "${jobs[@]}" | xargs -P "$PARALLEL" -L 1 sh -c '
    mkdir -p "$(dirname "$3")"
    OMP_NUM_THREADS=1 "$PYTHON" -m sknet analyze --checkpoint "$0" --dataset "$1" --data-dir "$DATA" \
      --scaling "$2" --channel-group 8 --device "$DEVICE" --batch-size "$BATCH_SIZE" \
      ${MAX_IMAGES:+--max-images "$MAX_IMAGES"} --output "$3" > "$3.log" 2>&1 \
      || { echo "analysis failed: $3"; cat "$3.log"; exit 255; }
    echo "analysed $0 ($2) -> $3"'
fi

# 2. across seeds
while read -r name dataset _; do
  wanted "$dataset" || continue
  dirs=()
  for seed in $SEEDS; do
    [ -f "$STUDY/analysis/$name/seed$seed/analysis.json" ] && dirs+=("$STUDY/analysis/$name/seed$seed")
  done
  if [ ${#dirs[@]} -ge 2 ]; then
    "$PYTHON" -m sknet analyze --compare "${dirs[@]}" --output "$STUDY/analysis/$name"
  else
    echo "comparison $name skipped: ${#dirs[@]} analysed seed(s)"
  fi
done <<< "$SETTINGS"
