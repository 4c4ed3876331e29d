#!/usr/bin/env bash
# The demo model that ships with sknet (create_model("sknet_mini", pretrained=True); docs/training.md,
# "The demo: Fashion-MNIST on two CPU cores"): sknet_mini trained by the demo's command, its weights
# written to src/sknet/models/weights/sknet_mini.fashion_mnist.safetensors with the run's record
# (class names, normalisation, test metrics, the whole training config) plus how it was made:
# recipe, seed, commit, command, date and machine.
#
#   bash scripts/make_demo_weights.sh RUN      (e.g. /work/runs/demo-weights; not inside the repository)
#
# RUN without model.safetensors: the demo is trained there first, at the checked-out commit (a clean
# working tree: the commit must be the code that ran), and the commit is kept in RUN/commit. A RUN
# trained already is packaged as it is, with the commit in RUN/commit (write it there if the run was
# made by hand). Environment: DATA (Fashion-MNIST's idx files, default Debian's folder), PYTHON
# (.venv/bin/python). The training takes 4 to 6 minutes on two CPU cores with nothing else running.
set -euo pipefail
RUN=${1:?usage: make_demo_weights.sh RUN}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
PYTHON=${PYTHON:-.venv/bin/python}
COMMAND="sknet train --config fashion_mnist --data-dir $DATA --output $RUN"

if [ ! -f "$RUN/model.safetensors" ]; then
    if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
        echo "make_demo_weights.sh: the working tree has changes; commit them first (the record names the commit)" >&2
        exit 2
    fi
    mkdir -p "$RUN"
    git rev-parse HEAD > "$RUN/commit"
    "$PYTHON" -m sknet train --config fashion_mnist --data-dir "$DATA" --output "$RUN" --no-progress
fi
if [ ! -f "$RUN/commit" ]; then
    echo "make_demo_weights.sh: $RUN/commit is missing: write the commit the run was trained at there" >&2
    exit 2
fi

"$PYTHON" - "$RUN" "$(cat "$RUN/commit")" "$COMMAND" <<'EOF'
import datetime
import os
import platform
import sys

import sknet
from sknet.models.sources import pretrained_source
from sknet.weights import read_record, save_weights

run, commit, command = sys.argv[1:]
path = os.path.join(run, "model.safetensors")
record = read_record(path)
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
record.provenance.update(
    recipe="fashion_mnist",
    seed=record.provenance["config"]["seed"],
    commit=commit,
    command=command,
    date=datetime.date.fromtimestamp(os.path.getmtime(path)).isoformat(),
    machine=f"{cpu or platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
)
dest = pretrained_source("sknet_mini").packaged_file
save_weights(sknet.load_model(path), dest, record=record)
print(f"{dest}: test accuracy {100 - record.metrics['test_top1_err']:.2f} %, commit {commit[:7]}")
EOF
