#!/usr/bin/env bash
# Do SK units learn in 1-D and 3-D? (docs/architecture.md, "SK in 1-D and 3-D")
#
# On each synthetic task where the receptive field matters (bursts-1d: the class is the cycle count
# of a burst 16-128 samples wide; fashion-mnist-3d: Fashion-MNIST items extruded through a run of
# slices at random size and place), the mini models of that dimension, several seeds each, with the
# demo's recipe: the ResNeXt control (K3), a single dilated K3 (K5), the plain sum of K3 and K5, and
# SK (K3 + K5 with attention). Prints every run's test error and mean +- std per variant.
#
#   bash scripts/nd_experiment.sh OUT [SEEDS...]        (defaults: seeds 0 1 2)
#   TASKS=fashion-mnist-3d VARIANTS="k3 k3k5_sk" EPOCHS_3D=10 bash scripts/nd_experiment.sh OUT
# Environment: TASKS (default "bursts-1d fashion-mnist-3d"), VARIANTS (default "k3 k5 k3k5_sum k3k5_sk"),
# DATA (Fashion-MNIST's idx files, default Debian's folder), EPOCHS_1D (10),
# EPOCHS_3D (4), TRAIN_3D / TEST_3D (the first N training / test volumes, 2000 each; the
# 3-D convolutions are slow on two CPU cores), PYTHON (.venv/bin/python).
set -euo pipefail
OUT=${1:?usage: nd_experiment.sh OUT [SEEDS...]}
shift
SEEDS=${*:-0 1 2}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
PYTHON=${PYTHON:-.venv/bin/python}
TASKS=${TASKS:-bursts-1d fashion-mnist-3d}
VARIANTS=${VARIANTS:-k3 k5 k3k5_sum k3k5_sk}

run() {  # OUTPUT ARGS...: train unless the run finished already
    mkdir -p "$(dirname "$1")"
    [ -f "$1/model.safetensors" ] || $PYTHON -m sknet train --output "$@" > "$1.log"
}
variant() {  # NAME DIM: sets ARGS to the model and overrides of one variant
    case $1 in
        k3) ARGS=(--model "resnext_mini_$2") ;;
        k5) ARGS=(--model "sknet_mini_$2" --set 'model_overrides={branches: [[3, 2, 8]]}') ;;
        k3k5_sum) ARGS=(--model "sknet_mini_$2" --set 'model_overrides={select: sum}') ;;
        k3k5_sk) ARGS=(--model "sknet_mini_$2") ;;
        *) echo "unknown variant $1 (k3, k5, k3k5_sum, k3k5_sk)" >&2; exit 2 ;;
    esac
}
variants() {  # TASK DIM ARGS...: the chosen variants of one task, every seed
    local task=$1 dim=$2
    shift 2
    for seed in $SEEDS; do
        for name in $VARIANTS; do
            variant "$name" "$dim"
            run "$OUT/$task/$name/seed$seed" "${ARGS[@]}" --seed "$seed" "$@"
        done
    done
}
COMMON="--config fashion_mnist --batch-size 64 --workers 0 --no-progress"
for task in $TASKS; do
    case $task in
        bursts-1d) variants bursts-1d 1d $COMMON --dataset bursts-1d --epochs "${EPOCHS_1D:-10}" ;;
        fashion-mnist-3d) variants fashion-mnist-3d 3d $COMMON --dataset fashion-mnist-3d --data-dir "$DATA" \
            --epochs "${EPOCHS_3D:-4}" --set "train_limit=${TRAIN_3D:-2000}" --set "val_limit=${TEST_3D:-2000}" ;;
        *) echo "unknown task $task (bursts-1d, fashion-mnist-3d)" >&2; exit 2 ;;
    esac
done

$PYTHON - "$OUT" $TASKS <<'EOF'
import statistics
import sys
from pathlib import Path

from sknet.analysis.study import compare
from sknet.weights import read_record

out = Path(sys.argv[1])
rows = []
for task in sys.argv[2:]:
    print(f"{task}:")
    for variant in ("k3", "k5", "k3k5_sum", "k3k5_sk"):
        runs = sorted((out / task / variant).glob("seed*/model.safetensors"))
        if not runs:
            continue
        errs = [read_record(r).metrics["test_top1_err"] for r in runs]
        steps = {read_record(r).metrics["steps"] for r in runs}
        std = statistics.stdev(errs) if len(errs) > 1 else float("nan")
        rows.append(dict(dataset=task, variant=variant, seeds=len(errs), err_mean=statistics.fmean(errs), err_std=std))
        print(f"  {variant:<9} test error {rows[-1]['err_mean']:.2f} +- {std:.2f} % "
              f"({', '.join(f'{e:.2f}' for e in errs)}; {len(errs)} seeds, {steps} steps)")
print("Welch t-tests (difference > 0: the paper's direction):")
for c in compare(rows):
    print(f"  {c['dataset']}: {c['claim']}: {c['diff']:+.2f} points, t = {c['t']:.2f}, df = {c['df']}: {c['verdict']}")
EOF
