#!/usr/bin/env bash
# Where SKNet-50 loses speed against ResNeXt-50 on a GPU, and how fast it is
# (docs/performance.md). About 6-7 minutes on one H100 / H200 with 16 CPU cores, in three stages:
#   1. profiles (scripts/profile_sk_overhead.py): one SKNet-50 and one ResNeXt-50 step, bf16
#      autocast, batch 256, {inference, training} x {channels_last, NCHW}; GPU kernel time per
#      op class and the top kernels of each model.
#   2. the branch convolutions alone (scripts/bench_branch_convs.py): K3, K5 (dilation 2) and
#      other formulations of K5, both memory formats, cudnn.benchmark off and on.
#   3. `sknet bench`: SKNet-50 against torchvision's ResNeXt-50 and timm's SK-ResNeXt-50,
#      eager (with the fast path's ablations and the fused models), then compiled inference,
#      then compiled training (SKNet-50 and ResNeXt-50).
# Each command has its own time limit (45-110 s; 495 s in all, so the script ends within about 9
# minutes however slow the machine) and its own files, so a command that runs out of time loses
# only itself. Output: $OUT/report.md (every command's printed output, in order) and
# $OUT/gpu_bench.tgz (those outputs, the JSON reports, the logs, the environment).
#
# Run from the repository root:  OUT=/some/dir bash scripts/gpu_bench.sh
# Environment: DEVICE=cuda BATCH=256 SIZE=224 DTYPE=bf16 PYTHON=python3 COMPILE=1
# The same code paths on a CPU, in about 3 minutes (a check of the logic):
#   OUT=/tmp/gb DEVICE=cpu BATCH=2 SIZE=64 DTYPE=fp32 PYTHON=.venv/bin/python COMPILE=0 bash scripts/gpu_bench.sh
set -u
OUT=${OUT:?set OUT to the output folder}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-256}
SIZE=${SIZE:-224}
DTYPE=${DTYPE:-bf16}
PYTHON=${PYTHON:-python3}
COMPILE=${COMPILE:-1}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-16}
start=$(date +%s)
REPORT="$OUT/report.md"
log() { echo "$*" | tee -a "$REPORT"; }

{
  date -u; nvidia-smi 2>/dev/null || echo "no nvidia-smi"
  $PYTHON -c 'import sys, torch, torchvision, timm; print("python", sys.version.split()[0], "torch", torch.__version__, "torchvision", torchvision.__version__, "timm", timm.__version__, "cudnn", torch.backends.cudnn.version())'
  git log -1 --format='commit %H %s' 2>/dev/null || echo "commit: not a git checkout"
} > "$WORK/env.txt" 2>&1
log "# GPU bench ($DEVICE, $DTYPE, batch $BATCH, ${SIZE}x$SIZE)"
log '```'; tee -a "$REPORT" < "$WORK/env.txt"; log '```'

run() {  # run NAME LIMIT_S COMMAND...: output to $WORK/NAME.txt, stderr to NAME.log, both kept
  local name=$1 limit=$2; shift 2
  log ""; log "## $name (limit ${limit}s, started at $(( $(date +%s) - start ))s)"; log '```'
  timeout -k 5 "$limit" "$@" > "$WORK/$name.txt" 2> "$WORK/$name.log"
  local rc=$?
  grep -v -E '^(USDT|ERROR:.*gpuGetDeviceCount)' "$WORK/$name.txt" | tee -a "$REPORT"
  [ $rc -eq 0 ] || { log "stage $name failed or timed out (rc $rc); the end of its log:"; tail -5 "$WORK/$name.log" | tee -a "$REPORT"; }
  log '```'
}

# 1. profiles: ~15-25 s each
for mode in inference train; do
  for fmt in channels_last contiguous; do
    run "profile_${mode}_$fmt" 45 $PYTHON scripts/profile_sk_overhead.py --device "$DEVICE" --dtype "$DTYPE" \
      --mode "$mode" --batch "$BATCH" --size "$SIZE" --memory-format "$fmt" --rounds 3 --top 15 \
      --json "$WORK/profile_${mode}_$fmt.json"
  done
done
# 2. the branch convolutions alone: ~30 s
run branch_convs 60 $PYTHON scripts/bench_branch_convs.py --device "$DEVICE" --dtype "$DTYPE" --batch "$BATCH" \
  --json "$WORK/branch_convs.json"
# 3. sknet bench: eager (~50 s), compiled inference (three compilations), compiled training
COMMON=(--device "$DEVICE" --dtype "$DTYPE" --memory-format channels_last --input-size "$SIZE" --batch-size "$BATCH")
run bench_eager 70 $PYTHON -m sknet bench "${COMMON[@]}" --warmup 3 --rounds 5 --iters 3 --json "$WORK/bench_eager.json" \
  sknet50 torchvision:resnext50_32x4d timm:skresnext50_32x4d sknet50@reference sknet50@nolean \
  sknet50+fuse torchvision:resnext50_32x4d+fuse
if [ "$COMPILE" = 1 ]; then
  run bench_compiled_inference 75 $PYTHON -m sknet bench "${COMMON[@]}" --compile --modes inference --warmup 3 \
    --rounds 3 --iters 3 --json "$WORK/bench_compiled_inference.json" sknet50 torchvision:resnext50_32x4d timm:skresnext50_32x4d
  run bench_compiled_train 110 $PYTHON -m sknet bench "${COMMON[@]}" --compile --modes train --warmup 3 \
    --rounds 3 --iters 3 --no-memory --json "$WORK/bench_compiled_train.json" sknet50 torchvision:resnext50_32x4d
fi
log ""; log "total $(( $(date +%s) - start ))s"
cp "$REPORT" "$WORK/report.md"
tar czf "$OUT/gpu_bench.tgz" -C "$WORK" .
rm -rf "$WORK"
ls -la "$OUT"
