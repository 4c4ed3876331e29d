#!/usr/bin/env bash
# The replication grid at the longer recipe on one GPU (docs/replication.md), in about 9 minutes
# on an H100 / H200 with 16 CPU cores (the two time limits below bound it):
#   1. `sknet study` (the study recipe: EPOCHS epochs on all 60,000 images, batch 256): the 9
#      mini models x DATASETS x SEEDS, PARALLEL runs at once (one process each, one CPU thread
#      each, all sharing the GPU). Seed-major order and a time limit: no run starts that would end
#      after STUDY_LIMIT_S (360 s), and the study is stopped 90 s after it; if the machine is
#      slower than planned, whole seeds finish and the rest is reported as not started
#      (rerun with the same STUDY folder to continue; finished runs are skipped).
#   2. scripts/analyze_study.sh: `sknet analyze` (Fig. 3 / Fig. 4) on every seed of the SK
#      settings of DATASETS, then the comparison across seeds; ANALYSIS_LIMIT_S at most.
#   3. $OUT/study.tgz (tables, per-run results, metrics, configs and logs, the analyses, the
#      SK models' weights; never checkpoint.pt), plus results.md, comparisons.csv and
#      gpu_study.log beside it.
#
# Data: Fashion-MNIST's four idx files in DATA, by default .data/fashion-mnist inside the
# repository (git-ignored), e.g.  mkdir -p .data && cp -r /usr/share/datasets/fashion-mnist .data/
# Run from the repository root:  OUT=/some/dir bash scripts/gpu_study.sh
# Environment (defaults):
#   DATA=.data/fashion-mnist  DATASETS=fashion-mnist-scaled  EPOCHS=4  PARALLEL=16
#   SEEDS="0 1 2"  STUDY_LIMIT_S=360  ANALYSIS_LIMIT_S=100  DEVICE=cuda  STUDY=runs/study_gpu
#   PYTHON=python3
# The same script, end to end in about 2 minutes on 2 CPU cores (a check of the logic):
#   OUT=/tmp/gs STUDY=/tmp/gs_study DEVICE=cpu PYTHON=.venv/bin/python DATA=/usr/share/datasets/fashion-mnist \
#     EPOCHS=1 TRAIN_LIMIT=256 VAL_LIMIT=128 MAX_IMAGES=60 PARALLEL=2 VARIANTS="k3 k3k5_sk k3k5k7_sk" \
#     bash scripts/gpu_study.sh
set -uo pipefail

OUT=${OUT:?set OUT to the folder for the results}
DATA=${DATA:-.data/fashion-mnist}
DATASETS=${DATASETS:-fashion-mnist-scaled}
EPOCHS=${EPOCHS:-4}
PARALLEL=${PARALLEL:-16}
SEEDS=${SEEDS:-"0 1 2"}
STUDY_LIMIT_S=${STUDY_LIMIT_S:-360}
ANALYSIS_LIMIT_S=${ANALYSIS_LIMIT_S:-100}
DEVICE=${DEVICE:-cuda}
STUDY=${STUDY:-runs/study_gpu}
PYTHON=${PYTHON:-python3}
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
  git log -1 --format='commit %H %s' 2>/dev/null || echo "commit: not a git checkout"
} > "$STUDY/environment.txt" 2>&1
tee -a "$LOG" < "$STUDY/environment.txt"
ls "$DATA"/*-ubyte* >/dev/null 2>&1 || { say "no Fashion-MNIST files in $DATA (see the top of this script)"; exit 2; }

# 1. the grid ---------------------------------------------------------------------------
extra=()
[ -n "$TRAIN_LIMIT" ] && extra+=(--train-limit "$TRAIN_LIMIT")
[ -n "$VAL_LIMIT" ] && extra+=(--val-limit "$VAL_LIMIT")
[ -n "$VARIANTS" ] && extra+=(--variants $VARIANTS)
say "study: $DATASETS, epochs $EPOCHS, seeds $SEEDS, $PARALLEL at a time, limit ${STUDY_LIMIT_S}s"
# timeout is the backstop (it signals the whole process group, pool workers included);
# --time-limit is the plan: no run starts that would end after it.
timeout -k 10 $((STUDY_LIMIT_S + 90)) $PYTHON -m sknet study --config study --output "$STUDY" \
  --data-dir "$DATA" --datasets $DATASETS --epochs "$EPOCHS" --seeds $SEEDS --parallel "$PARALLEL" \
  --threads 1 --device "$DEVICE" --time-limit "$STUDY_LIMIT_S" "${extra[@]}" 2>&1 | tee -a "$LOG"
say "study exit status ${PIPESTATUS[0]}"
$PYTHON -m sknet study --output "$STUDY" --table > /dev/null 2>>"$LOG" || say "no finished runs to tabulate"

# 2. the analyses (Fig. 3 / Fig. 4) of every seed of the SK settings, and across seeds ----
say "analyses, limit ${ANALYSIS_LIMIT_S}s"
STUDY="$STUDY" DATA="$DATA" SEEDS="$SEEDS" DATASETS="$DATASETS" PARALLEL="$PARALLEL" DEVICE="$DEVICE" \
  BATCH_SIZE=256 MAX_IMAGES="$MAX_IMAGES" PYTHON="$PYTHON" \
  timeout -k 10 "$ANALYSIS_LIMIT_S" bash scripts/analyze_study.sh 2>&1 | tee -a "$LOG"
say "analyses exit status ${PIPESTATUS[0]}"

# 3. what comes back ------------------------------------------------------------------
say "packing"
cp "$STUDY/results.md" "$OUT/results.md" 2>/dev/null || true
cp "$STUDY/comparisons.csv" "$OUT/comparisons.csv" 2>/dev/null || true
# every small file; of the weights, only the SK models' (the analysed ones; checkpoint.pt never)
( cd "$STUDY" && find . -type f ! -name checkpoint.pt ! -name '*.tmp' ! -name model.safetensors -print \
    && find runs -path '*_sk/seed*/model.safetensors' ) | sed 's|^\./||' | sort -u > "$OUT/.files"
tar czf "$OUT/study.tgz" -C "$STUDY" -T "$OUT/.files"
rm -f "$OUT/.files"
say "done: $(du -h "$OUT/study.tgz" | cut -f1) in $OUT/study.tgz"
ls -la "$OUT" | tee -a "$LOG"
