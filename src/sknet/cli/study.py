"""``sknet study``: the paper's ablations at small scale, several seeds each, as one resumable grid."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..analysis import study


def register(sub) -> None:
    p = sub.add_parser(
        "study",
        help="train the grid of small models (K3/K5/sum/SK/SE/deeper/wider) over seeds; tables of mean +- std",
        description="Resumable: finished runs are skipped, interrupted ones resume. --table only rebuilds the tables.",
    )
    p.add_argument("--output", required=True, help="study folder (runs/, results.md, results.csv)")
    p.add_argument("--table", action="store_true", help="only rebuild the tables from the finished runs in --output")
    p.add_argument("--config", help=f"recipe: a packaged name or a YAML file (default {study.DEFAULT_RECIPE})")
    p.add_argument("--datasets", nargs="+", default=list(study.STUDY_DATASETS), help="data sets of the grid")
    p.add_argument("--variants", nargs="+", default=list(study.VARIANTS), help=f"variants: {', '.join(study.VARIANTS)}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, help="epochs of every run (overrides the recipe)")
    p.add_argument("--batch-size", type=int, help="batch size of every run (overrides the recipe)")
    p.add_argument("--train-limit", type=int, help="train on the first N images only (smoke runs)")
    p.add_argument("--val-limit", type=int, help="test on the first N images only (smoke runs)")
    p.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files (both data sets use it)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--parallel", type=int, default=1, help="runs at once, each in its own process")
    p.add_argument("--threads", type=int, help="torch threads per run (default: CPU cores / --parallel)")
    p.add_argument("--time-limit", type=float, help="seconds: start no run that would end after this")
    p.set_defaults(run=run)


def run(args) -> int:
    out = Path(args.output)
    if args.table:
        print(study.write_tables(out))
        return 0
    overrides = dict(epochs=args.epochs, batch_size=args.batch_size, train_limit=args.train_limit,
                     val_limit=args.val_limit)  # fmt: skip
    recipe = study.load_recipe(args.config, **overrides)
    parallel = max(1, args.parallel)
    threads = args.threads or max(1, (os.cpu_count() or 1) // parallel)
    specs = study.plan(out, recipe, args.datasets, args.variants, args.seeds, args.data_dir, args.device, threads)
    for s in specs:
        study.status(s)  # a recipe mismatch stops the study before anything runs
    meta = dict(
        command="sknet study " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["study"] else None,
        recipe=json.dumps(specs[0].recipe) if specs else None,
        parallel=parallel,
        device=args.device,
    )
    study.save_plan(out, specs, args.datasets, args.variants, args.seeds, meta)
    summary = study.run_study(specs, parallel, args.time_limit)
    if study.collect(out):
        print(study.write_tables(out, meta))
    print(f"study: {summary['finished']} finished, {summary['skipped']} skipped (already done), "
          f"{len(summary['failed'])} failed, {summary['not_started']} not started; tables in {out}")  # fmt: skip
    return 1 if summary["failed"] else 0
