#!/usr/bin/env bash
# Does growing SK from a trained K3 network pay? (docs/training.md, "Growing SK: does it pay?")
#
# On fashion-mnist-scaled (objects drawn at varied sizes, where the receptive field matters), for
# each seed, with the study_cpu recipe (2 epochs on 12,000 images, batch 64: 374 steps a run):
#   pretrain      the K3 mini model (resnext_mini) from scratch;
#   k3_continued  (a) resnext_mini started from the pretrain's weights, the recipe once more;
#   grown         (b) sknet_mini grown from the pretrain's weights by sknet.to_sk (--init-from), the
#                     recipe once more: the same function as the pretrain at its first step;
#   sk_scratch    (c) sknet_mini from scratch for pretrain + fine-tune steps (4 epochs).
# Then every arm's test error (mean +- std over seeds), Welch's t-test per pair of arms, and the
# attention analysis (Fig. 3 / 4) of the grown models at scales 1.0 1.5 2.0.
#
#   bash scripts/grow_experiment.sh OUT [SEEDS...]       (defaults: seeds 0 1 2)
# Environment: DATA (Fashion-MNIST's idx files, default Debian's folder), PARALLEL (runs at once,
# each on one thread; default 2), PYTHON (.venv/bin/python); TRAIN_ARGS and ANALYZE_ARGS are added
# to every `sknet train` / `sknet analyze` (e.g. "--max-steps 2" for a smoke test). About 35 minutes
# on two CPU cores.
# A finished run is not run again, so the same command continues an interrupted experiment.
set -euo pipefail
OUT=${1:?usage: grow_experiment.sh OUT [SEEDS...]}
shift
SEEDS=${*:-0 1 2}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
PARALLEL=${PARALLEL:-2}
PYTHON=${PYTHON:-.venv/bin/python}
read -r -a TRAIN_ARGS <<< "${TRAIN_ARGS:-}"
read -r -a ANALYZE_ARGS <<< "${ANALYZE_ARGS:-}"
COMMON=(--config study_cpu --dataset fashion-mnist-scaled --data-dir "$DATA" --no-progress)

run() {  # OUTPUT ARGS...: train unless the run finished already
    mkdir -p "$(dirname "$1")"
    [ -f "$1/model.safetensors" ] && return 0
    rm -rf "$1"
    OMP_NUM_THREADS=1 $PYTHON -m sknet train --output "$@" "${COMMON[@]}" "${TRAIN_ARGS[@]}" > "$1.log" 2>&1
}

pool() {  # run each line of stdin ("OUTPUT ARGS...") as `run`, PARALLEL at once
    local pids=()
    while read -r -a args; do
        run "${args[@]}" &
        pids+=($!)
        if [ "${#pids[@]}" -ge "$PARALLEL" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
}

for seed in $SEEDS; do
    echo "$OUT/pretrain/seed$seed --model resnext_mini --seed $seed"
    echo "$OUT/sk_scratch/seed$seed --model sknet_mini --epochs 4 --seed $seed"
done | pool
for seed in $SEEDS; do
    echo "$OUT/k3_continued/seed$seed --model resnext_mini --weights $OUT/pretrain/seed$seed/model.safetensors --seed $seed"
    echo "$OUT/grown/seed$seed --model sknet_mini --init-from $OUT/pretrain/seed$seed/model.safetensors --seed $seed"
done | pool

for seed in $SEEDS; do
    [ -f "$OUT/grown/seed$seed/analysis/analysis.json" ] || OMP_NUM_THREADS=2 $PYTHON -m sknet analyze \
        --checkpoint "$OUT/grown/seed$seed/model.safetensors" --dataset fashion-mnist-scaled --data-dir "$DATA" \
        --scaling render --output "$OUT/grown/seed$seed/analysis" "${ANALYZE_ARGS[@]}" > "$OUT/grown/seed$seed/analysis.log" 2>&1
done

$PYTHON - "$OUT" <<'EOF'
import json
import statistics
import sys
from pathlib import Path

from sknet.analysis.study import welch
from sknet.weights import read_record

out = Path(sys.argv[1])
arms = {"pretrain": "K3, pretrain only", "k3_continued": "(a) K3 continued", "grown": "(b) grown to K3+K5 SK",
        "sk_scratch": "(c) K3+K5 SK from scratch"}
rows = {}
print("| arm | seeds | steps | test error, % (mean +- std) | per seed |\n| --- | --- | --- | --- | --- |")
for arm, label in arms.items():
    records = [read_record(p) for p in sorted((out / arm).glob("seed*/model.safetensors"))]
    errs = [r.metrics["test_top1_err"] for r in records]
    steps = {r.metrics["steps"] for r in records}
    if arm in ("k3_continued", "grown"):  # the pretrain's steps came before them
        pretrain = {read_record(p).metrics["steps"] for p in (out / "pretrain").glob("seed*/model.safetensors")}
        steps = {f"{p} + {s}" for p in pretrain for s in steps}
    rows[arm] = dict(seeds=len(errs), err_mean=statistics.fmean(errs) if errs else float("nan"),
                     err_std=statistics.stdev(errs) if len(errs) > 1 else float("nan"))
    print(f"| {label} | {len(errs)} | {', '.join(map(str, sorted(steps)))} | {rows[arm]['err_mean']:.2f} +- {rows[arm]['err_std']:.2f} | "
          + ", ".join(f"{e:.2f}" for e in errs) + " |")
print("\n| comparison | difference, points | t | df | verdict |\n| --- | --- | --- | --- | --- |")
for better, worse in (("grown", "k3_continued"), ("grown", "sk_scratch"), ("k3_continued", "sk_scratch")):
    w = welch(rows[better], rows[worse])
    diff = rows[worse]["err_mean"] - rows[better]["err_mean"]
    print(f"| {arms[better]} better than {arms[worse]} | {diff:+.2f} | {w['t']:.2f} | {w['df']} | {w['verdict']} |")
print("\nAttention of the grown models (a_K5 - a_K3, mean over images, at scales 1.0 / 1.5 / 2.0):")
for path in sorted((out / "grown").glob("seed*/analysis/analysis.json")):
    summary = json.loads(path.read_text())
    by_unit = {}
    for row in summary["fig3_right"]:
        by_unit.setdefault(row["unit"], []).append(f"{row['mean']:+.3f}")
    print(f"  {path.parts[-3]}: " + "; ".join(f"{u} {' / '.join(v)}" for u, v in by_unit.items()))
EOF
