#!/usr/bin/env bash
# GPU benchmark for docs/performance.md (issue 4): SKNet-50 vs torchvision ResNeXt-50 vs timm
# SK-ResNeXt-50, bf16 autocast, channels_last, batch 256, inference and training step, eager and
# torch.compile. Run once from the repo root on an H100; budget about 4 minutes in all:
#   OUT=/some/dir bash scripts/gpu_bench.sh
# Every stage has its own time limit and writes its own JSON + table under $OUT, so a stage that
# runs out of time loses only itself. Smoke test of the same code path on a CPU:
#   DEVICE=cpu BATCH=2 SIZE=64 DTYPE=fp32 OUT=/tmp/gb bash scripts/gpu_bench.sh
set -u
OUT=${OUT:?set OUT to the output folder}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-256}
SIZE=${SIZE:-224}
DTYPE=${DTYPE:-bf16}
PY=${PY:-python}
mkdir -p "$OUT"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-16}
start=$(date +%s)
{ nvidia-smi 2>/dev/null || true; $PY -c 'import torch, torchvision, timm; print(torch.__version__, torchvision.__version__, timm.__version__)'; } > "$OUT/env.txt" 2>&1

TRIO="sknet50 torchvision:resnext50_32x4d timm:skresnext50_32x4d"
COMMON="--device $DEVICE --dtype $DTYPE --memory-format channels_last --input-size $SIZE --warmup 3 --rounds 5 --iters 3"

stage() {  # stage NAME LIMIT_S ARGS... ; on out-of-memory retries at half the batch
  local name=$1 limit=$2; shift 2
  local b=$BATCH
  while :; do
    echo "== $name (batch $b, limit ${limit}s, t=$(( $(date +%s) - start ))s)"
    timeout "$limit" $PY -m sknet bench $COMMON "$@" --batch-size "$b" --json "$OUT/$name.json" \
      > "$OUT/$name.txt" 2> "$OUT/$name.log"
    local rc=$?
    if [ $rc -ne 0 ] && grep -qi "out of memory" "$OUT/$name.log" && [ "$b" -gt 32 ]; then
      b=$(( b / 2 )); continue
    fi
    cat "$OUT/$name.txt"; [ $rc -eq 0 ] || { echo "   stage $name failed or timed out (rc $rc); see $name.log"; tail -3 "$OUT/$name.log"; }
    return 0
  done
}

# 0. micro-benchmarks (~15 s): does one merged 5x5 grouped conv beat the two 3x3 branch convs
#    (inference, and forward + backward)? Would the CPU's rewrite of the strided dilated branch
#    (stride-1 conv on every other pixel, SKConv._conv) pay on this device too?
timeout 20 $PY scripts/bench_merge_branches.py --device "$DEVICE" --batch "$BATCH" --dtype "$DTYPE" > "$OUT/merge_branches.txt" 2>&1
timeout 30 $PY scripts/bench_merge_branches.py --device "$DEVICE" --batch "$BATCH" --dtype "$DTYPE" --mode train > "$OUT/merge_branches_train.txt" 2>&1
timeout 30 $PY scripts/bench_strided_dilated.py --device "$DEVICE" --batch "$BATCH" --dtype "$DTYPE" > "$OUT/strided_dilated.txt" 2>&1
cat "$OUT/merge_branches.txt" "$OUT/merge_branches_train.txt" "$OUT/strided_dilated.txt"
# 1. eager, all three plus the ablation (reference SK path, plain-autograd training, fused
#    inference for both sides): ~50 s
stage eager 60 $TRIO sknet50@reference sknet50@nolean sknet50+fuse torchvision:resnext50_32x4d+fuse
# 2. compiled inference, all three: three compilations, ~20 s each
stage compiled_inference 70 $TRIO --modes inference --compile --rounds 3
# 3. compiled training (forward + backward graphs, the slowest compilations): SKNet-50 and
#    ResNeXt-50 only, to stay inside the budget; timm's compiled training is not measured here
stage compiled_train 80 sknet50 torchvision:resnext50_32x4d --modes train --compile --rounds 3
echo "total $(( $(date +%s) - start ))s" | tee "$OUT/total.txt"
