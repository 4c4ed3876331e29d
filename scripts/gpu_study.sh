#!/usr/bin/env bash
# The replication grid on one GPU machine (docs/replication.md), in about 7 minutes on an
# H100 with 16 CPU cores:
#   1. `sknet study`: 9 mini models x {fashion-mnist, fashion-mnist-scaled} x 3 seeds, all on
#      the same recipe (the study recipe, EPOCHS epochs), PARALLEL runs at once (one
#      process each, one CPU thread each, all sharing the GPU). Seed-major order and a time
#      limit: if the machine is slower than planned, whole seeds finish and the rest is
#      reported as not started (rerun the script with the same OUT-less study folder to
#      continue; finished runs are skipped).
#   2. `sknet analyze` (Fig. 3 / Fig. 4) on the trained SK models of the grid.
#   3. $OUT/study.tgz (tables, per-run results and logs, the analysed models, figures),
#      plus results.md, comparisons.csv and gpu_study.log beside it.
#
# Run from the repository root:  OUT=/some/dir bash scripts/gpu_study.sh
# Environment (defaults for the H100 run):
#   DATA=.data/fashion-mnist  EPOCHS=4  PARALLEL=16  SEEDS="0 1 2"  STUDY_LIMIT_S=300
#   DEVICE=cuda  STUDY=runs/study_gpu  PYTHON=python
#   CPU check of the logic: EPOCHS=1 TRAIN_LIMIT=512 VAL_LIMIT=256 SEEDS="0 1" PARALLEL=2 DEVICE=cpu \
#     MAX_IMAGES=200 VARIANTS="k3 k3k5_sk k3k5k7_sk" DATA=/usr/share/datasets/fashion-mnist
set -uo pipefail

OUT=${OUT:?set OUT to the folder for the results}
DATA=${DATA:-.data/fashion-mnist}
EPOCHS=${EPOCHS:-4}
PARALLEL=${PARALLEL:-16}
SEEDS=${SEEDS:-"0 1 2"}
STUDY_LIMIT_S=${STUDY_LIMIT_S:-300}
DEVICE=${DEVICE:-cuda}
STUDY=${STUDY:-runs/study_gpu}
PYTHON=${PYTHON:-python}
TRAIN_LIMIT=${TRAIN_LIMIT:-}
VAL_LIMIT=${VAL_LIMIT:-}
MAX_IMAGES=${MAX_IMAGES:-}
VARIANTS=${VARIANTS:-}
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}src
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$STUDY"
LOG="$OUT/gpu_study.log"
T0=$(date +%s)
say() { echo "[$(($(date +%s) - T0)) s] $*" | tee -a "$LOG"; }

{
  echo "date: $(date -u)"; echo "host: $(hostname)"; nproc
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $PYTHON -c 'import torch, torchvision, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.cuda.is_available() and torch.cuda.get_device_name())'
  git log -1 --format='commit %H %s' 2>/dev/null || true
} > "$STUDY/environment.txt" 2>&1
cat "$STUDY/environment.txt" | tee -a "$LOG"
ls "$DATA"/*.gz >/dev/null 2>&1 || { say "no Fashion-MNIST .gz files in $DATA"; exit 2; }

# 1. the grid ---------------------------------------------------------------------------
limits=()
[ -n "$TRAIN_LIMIT" ] && limits+=(--train-limit "$TRAIN_LIMIT")
[ -n "$VAL_LIMIT" ] && limits+=(--val-limit "$VAL_LIMIT")
[ -n "$VARIANTS" ] && limits+=(--variants $VARIANTS)
say "study: epochs $EPOCHS, seeds $SEEDS, $PARALLEL at a time, limit ${STUDY_LIMIT_S}s"
# timeout is the backstop (it signals the whole process group, pool workers included);
# --time-limit is the plan: no run starts that would end after it.
timeout -k 10 $((STUDY_LIMIT_S + 120)) $PYTHON -m sknet study --output "$STUDY" --data-dir "$DATA" \
  --epochs "$EPOCHS" --seeds $SEEDS --parallel "$PARALLEL" --threads 1 --device "$DEVICE" \
  --time-limit "$STUDY_LIMIT_S" "${limits[@]}" 2>&1 | tee -a "$LOG"
say "study exit status ${PIPESTATUS[0]}"
$PYTHON -m sknet study --output "$STUDY" --table > /dev/null 2>>"$LOG" || say "no finished runs to tabulate"

# 2. the analysis (Fig. 3 / Fig. 4) on the SK models ------------------------------------
an() {  # an NAME RUN_DIR DATASET SCALING [more args]
  local name=$1 run=$2 ds=$3 scaling=$4; shift 4
  if [ -f "$run/model.safetensors" ]; then
    $PYTHON -m sknet analyze --checkpoint "$run/model.safetensors" --dataset "$ds" --data-dir "$DATA" \
      --scaling "$scaling" --channel-group 8 --device "$DEVICE" --batch-size 256 \
      ${MAX_IMAGES:+--max-images $MAX_IMAGES} --output "$STUDY/analysis/$name" "$@" > "$STUDY/analysis_$name.log" 2>&1 \
      && say "analysis $name done" || say "analysis $name FAILED (see $STUDY/analysis_$name.log)"
  else
    say "analysis $name skipped: $run has no model.safetensors"
  fi
}
R="$STUDY/runs"
mkdir -p "$STUDY/analysis"
for s in $SEEDS; do
  an "scaled_k3k5_sk_seed${s}_render" "$R/fashion-mnist-scaled/k3k5_sk/seed$s" fashion-mnist-scaled render &
done
wait
first=${SEEDS%% *}
an "scaled_k3k5_sk_seed${first}_crop" "$R/fashion-mnist-scaled/k3k5_sk/seed$first" fashion-mnist-scaled crop &
an "scaled_k3k5k7_sk_seed${first}_render" "$R/fashion-mnist-scaled/k3k5k7_sk/seed$first" fashion-mnist-scaled render &
an "fmnist_k3k5_sk_seed${first}_crop" "$R/fashion-mnist/k3k5_sk/seed$first" fashion-mnist crop &
wait

# 3. what comes back ------------------------------------------------------------------
say "packing"
cp "$STUDY/results.md" "$OUT/results.md" 2>/dev/null || true
cp "$STUDY/comparisons.csv" "$OUT/comparisons.csv" 2>/dev/null || true
# every run's small files; the weights only of the analysed models (checkpoint.pt never)
( cd "$STUDY" && find . -type f \( -name checkpoint.pt -o -name '*.tmp' \) -prune -o -type f -print \
    | grep -v -E '/runs/.*/model\.safetensors$' ; \
  ls runs/fashion-mnist-scaled/k3k5_sk/seed*/model.safetensors runs/*/k3k5_sk/seed${first}/model.safetensors \
     runs/fashion-mnist-scaled/k3k5k7_sk/seed${first}/model.safetensors 2>/dev/null ) \
  | sed 's|^\./||' | sort -u > "$OUT/.files"
tar czf "$OUT/study.tgz" -C "$STUDY" -T "$OUT/.files"
rm -f "$OUT/.files"
say "done: $(du -h "$OUT/study.tgz" | cut -f1) in $OUT/study.tgz"
ls -la "$OUT" | tee -a "$LOG"
