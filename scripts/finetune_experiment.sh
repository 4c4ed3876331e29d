#!/usr/bin/env bash
# Does starting from pretrained weights help? (docs/training.md, "Fine-tuning")
#
#   1. Fashion-MNIST written as two image folders of PNG files: classes 0-4 (all their 30,000
#      training and 5,000 test images) and classes 5-9 (PER_CLASS training images per class, all
#      5,000 test images).
#   2. `sknet_mini` pretrained on classes 0-4 (the demo's recipe, PRETRAIN_EPOCHS epochs).
#   3. For each seed, on classes 5-9, for the same number of steps: fine-tuned from those weights
#      with the packaged `finetune` recipe (an ImageNet recipe at 224; SMALL below sets its image
#      size, padding and crop for 28x28 images), and with its backbone at a tenth of the
#      classifier's learning rate; started from those weights with the demo's recipe; trained
#      from scratch with the demo's recipe. Prints every run's test error, mean +- std.
#
#   bash scripts/finetune_experiment.sh OUT [SEEDS...]      (defaults: seeds 0 1 2)
# Environment: DATA (Fashion-MNIST's idx files, default Debian's folder), PER_CLASS (100),
# EPOCHS (fine-tuning and scratch epochs, 15), PRETRAIN_EPOCHS (3), PYTHON (.venv/bin/python).
set -euo pipefail
OUT=${1:?usage: finetune_experiment.sh OUT [SEEDS...]}
shift
SEEDS=${*:-0 1 2}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
PER_CLASS=${PER_CLASS:-100}
EPOCHS=${EPOCHS:-15}
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-3}
PYTHON=${PYTHON:-.venv/bin/python}
SMALL="--set image_size=28 --set pad=2 --set eval_crop_ratio=1.0 --workers 0 --no-progress"

[ -d "$OUT/folders/b" ] || $PYTHON - "$DATA" "$OUT/folders" "$PER_CLASS" <<'EOF'
import sys
from pathlib import Path

from PIL import Image

from sknet.data import FASHION_MNIST_CLASSES, load_fashion_mnist

data, out, per_class = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
for train in (True, False):
    images, labels = load_fashion_mnist(data, train)
    seen = [0] * 10
    for i, (img, y) in enumerate(zip(images.numpy(), labels.tolist())):
        part = "a" if y < 5 else "b"
        if train and part == "b" and seen[y] >= per_class:
            continue
        seen[y] += 1
        folder = out / part / ("train" if train else "val") / FASHION_MNIST_CLASSES[y].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i}.png")
EOF

run() {  # OUTPUT ARGS...: train unless the run finished already
    mkdir -p "$(dirname "$1")"
    [ -f "$1/model.safetensors" ] || $PYTHON -m sknet train --output "$@" > "$1.log"
}
run "$OUT/pretrain" --config fashion_mnist --dataset imagefolder --data-dir "$OUT/folders/a" \
    --epochs "$PRETRAIN_EPOCHS" $SMALL
for seed in $SEEDS; do
    for factor in 1 0.1; do
        arm=finetune$([ "$factor" = 1 ] || echo "_backbone_lr_$factor")
        run "$OUT/$arm/seed$seed" --config finetune --model sknet_mini --data-dir "$OUT/folders/b" \
            --weights "$OUT/pretrain/model.safetensors" --backbone-lr-factor "$factor" --epochs "$EPOCHS" \
            --batch-size 64 --seed "$seed" $SMALL
    done
    run "$OUT/pretrained_demo_recipe/seed$seed" --config fashion_mnist --dataset imagefolder \
        --data-dir "$OUT/folders/b" --weights "$OUT/pretrain/model.safetensors" --epochs "$EPOCHS" --batch-size 64 \
        --seed "$seed" $SMALL
    run "$OUT/scratch/seed$seed" --config fashion_mnist --dataset imagefolder --data-dir "$OUT/folders/b" \
        --epochs "$EPOCHS" --batch-size 64 --seed "$seed" $SMALL
done

$PYTHON - "$OUT" <<'EOF'
import statistics
import sys
from pathlib import Path

from sknet.weights import read_record

out = Path(sys.argv[1])
print(f"pretrained on classes 0-4: test error {read_record(out / 'pretrain' / 'model.safetensors').metrics['test_top1_err']:.2f} %")
for arm in ("finetune", "finetune_backbone_lr_0.1", "pretrained_demo_recipe", "scratch"):
    runs = sorted((out / arm).glob("seed*/model.safetensors"))
    errs = [read_record(r).metrics["test_top1_err"] for r in runs]
    steps = {read_record(r).metrics["steps"] for r in runs}
    spread = f" +- {statistics.stdev(errs):.2f}" if len(errs) > 1 else ""
    print(f"{arm:<24} classes 5-9: test error {statistics.fmean(errs):.2f}{spread} % "
          f"({', '.join(f'{e:.2f}' for e in errs)}; {len(errs)} seeds, {steps} steps)")
EOF
