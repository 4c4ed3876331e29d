#!/usr/bin/env bash
# Training on a GPU, end to end (docs/training.md): about 4-6 minutes on one H100; each step is
# limited to 240 s.
# Run from the repo root: PYTHONPATH=src OUT=/some/dir bash scripts/gpu_train.sh
# Writes $OUT/gpu_train.log (everything) and $OUT/gpu_train.json (the figures).
# Checks: CUDA training with --amp bf16/fp16 + --channels-last (+ --compile), SKNet-50 at 224 on
# synthetic data (img/s), the Fashion-MNIST demo recipe on fake 28x28 data, exact resume on GPU
# with deterministic algorithms, and sknet eval on the result.
set -uo pipefail
OUT="${OUT:-/tmp/gpu_train}"
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:-src}"
export CUBLAS_WORKSPACE_CONFIG=:4096:8   # needed by deterministic cuBLAS
PY="${PYTHON:-python}"
LOG="$OUT/gpu_train.log"
RUNS="$(mktemp -d)"
: > "$LOG"

step() {  # name, command...
    local name="$1"; shift
    echo "=== $name: $*" | tee -a "$LOG"
    local t0=$SECONDS
    timeout 240 "$@" >> "$LOG" 2>&1
    local rc=$?
    echo "=== $name: rc=$rc seconds=$((SECONDS - t0))" | tee -a "$LOG"
}

nvidia-smi >> "$LOG" 2>&1
# DEVICE=cpu IMG=32 N=256 tries the script's own path on a CPU in a minute or two.
DEVICE="${DEVICE:-cuda}"; IMG="${IMG:-224}"; N="${N:-7680}"
SK="$PY -m sknet train --dataset fake --no-progress --workers 4 --device $DEVICE"
# 1. SKNet-50 on 224x224 synthetic data: bf16 + channels_last, 60 steps of 128 images
step sknet50_bf16 $SK --model sknet50 --set image_size=$IMG --set train_limit=$N --set val_limit=512 \
    --batch-size 128 --epochs 1 --amp bf16 --channels-last --output "$RUNS/s50_bf16"
# 2. the same with fp16 + GradScaler
step sknet50_fp16 $SK --model sknet50 --set image_size=$IMG --set train_limit=$((N / 2)) --set val_limit=256 \
    --batch-size 128 --epochs 1 --amp fp16 --channels-last --output "$RUNS/s50_fp16"
# 3. torch.compile of the mini model
step mini_compile $SK --model sknet_mini --set train_limit=$((N + N / 2)) --batch-size 128 --epochs 2 --compile \
    --output "$RUNS/mini_compile"
# 4. exact resume on GPU (deterministic algorithms): 40 straight vs 20 + resume
COMMON="--model sknet_mini --set train_limit=1280 --set val_limit=256 --batch-size 64 --epochs 3 --set deterministic=true"
step resume_straight $SK $COMMON --max-steps 40 --output "$RUNS/straight"
step resume_first20 $SK $COMMON --max-steps 20 --output "$RUNS/resumed"
step resume_rest $SK $COMMON --max-steps 40 --output "$RUNS/resumed" --resume
# 5. eval of a safetensors result
step eval $PY -m sknet eval --checkpoint "$RUNS/s50_bf16/model.safetensors" --dataset fake --json --no-progress

$PY - "$RUNS" "$OUT/gpu_train.json" <<'PY' >> "$LOG" 2>&1
import csv, json, sys, pathlib
import torch
from safetensors.torch import load_file
runs, out = pathlib.Path(sys.argv[1]), sys.argv[2]
res = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "torch": torch.__version__}
for name in ("s50_bf16", "s50_fp16", "mini_compile", "straight", "resumed"):
    f = runs / name / "metrics.csv"
    res[name] = list(csv.DictReader(open(f))) if f.exists() else "no metrics.csv"
    res[name + "_finished"] = (runs / name / "model.safetensors").exists()
a, b = runs / "straight" / "model.safetensors", runs / "resumed" / "model.safetensors"
if a.exists() and b.exists():
    wa, wb = load_file(str(a)), load_file(str(b))
    res["resume_bit_identical"] = all(torch.equal(wa[k], wb[k]) for k in wa)
    res["resume_max_abs_diff"] = max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)
json.dump(res, open(out, "w"), indent=1)
print(json.dumps(res, indent=1))
PY
rm -rf "$RUNS"
echo "done; see $OUT/gpu_train.json"
