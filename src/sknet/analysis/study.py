"""``sknet study``: the paper's ablations at small scale, several seeds each, as one resumable grid.

The grid mirrors the paper's Tables 3, 5 and 7 with the mini family on Fashion-MNIST and
on its scale-varied version (:class:`sknet.data.ScaledFashionMNIST`). Every run trains with
:func:`sknet.training.train` on the same recipe (the packaged ``study`` recipe by default) and
budget; only the model, the data set and the seed change.

Layout of the output folder::

    OUT/study.json                         the grid and recipe asked for last
    OUT/runs/<dataset>/<variant>/seed<k>/  one training run (sknet train's files + result.json)
    OUT/results.md, results.csv            mean +- std over seeds per (dataset, variant)
    OUT/runs.csv                           every finished run
    OUT/comparisons.md                     the paper's claims as pairwise tests

A run counts as finished when its ``result.json`` exists (written atomically after
training); finished runs are skipped, interrupted ones resume from their checkpoint. The
tables are rebuilt from the ``result.json`` files alone (``sknet study --table``).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import logging
import math
import multiprocessing as mp
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..complexity import complexity
from ..io import write_csv, write_text
from ..logs import log_to
from ..models import create_model
from ..training import load_config, resolve_config, train
from ..training.config import same_values

_log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- the grid

K3, K5, K7 = [3, 1, 8], [3, 2, 8], [3, 3, 8]  # G = 8; K5 / K7 as in docs/paper.md, 'Selective kernel convolution'


@dataclass(frozen=True)
class Variant:
    """One model of the grid: a mini-family model with overrides."""

    label: str
    model: str
    overrides: dict = field(default_factory=dict)
    note: str = ""


VARIANTS: dict[str, Variant] = {
    "k3": Variant("K3 (M=1)", "resnext_mini", {}, "one 3x3 branch: the ResNeXt baseline"),
    "k5": Variant("K5 (M=1)", "sknet_mini", {"branches": [K5]}, "one 3x3 branch, dilation 2"),
    "k3k5_sum": Variant("K3+K5 sum", "sknet_mini", {"select": "sum"}, "two branches, naive sum"),
    "k3k5_sk": Variant("K3+K5 SK", "sknet_mini", {}, "two branches, SK attention (sknet_mini)"),
    "k3k5k7_sum": Variant("K3+K5+K7 sum", "sknet_mini", {"branches": [K3, K5, K7], "select": "sum"}, "three, sum"),
    "k3k5k7_sk": Variant("K3+K5+K7 SK", "sknet_mini", {"branches": [K3, K5, K7]}, "three branches, SK attention"),
    "se": Variant("SE", "senet_mini", {}, "K3 with squeeze-and-excitation (r=16)"),
    # At sknet_mini's cost (6.79 MMACs at 28x28): one more unit in the middle stage
    # (+4.0% MACs), or 9 groups of width 4 with a 24-channel stem (+1.7% MACs); the
    # paper's controls are in docs/replication.md.
    "deeper": Variant("deeper K3", "resnext_mini", {"layers": [1, 2, 1]}, "one more unit in stage 2"),
    "wider": Variant(
        "wider K3", "resnext_mini", {"groups": 9, "width_per_group": 4, "stem_width": 24}, "9x4d, stem 24"
    ),
}
STUDY_DATASETS = ("fashion-mnist", "fashion-mnist-scaled")
# Keys of the train config that do not change what a run computes.
NOT_RECIPE = {"output", "resume", "device", "data_dir", "workers", "progress", "tensorboard", "download"}
DEFAULT_RECIPE = "study"


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid."""

    dataset: str
    variant: str
    seed: int
    output: str
    recipe: dict  # train config keys shared by every run (epochs, lr, ...)
    settings: dict = field(default_factory=dict)  # shared keys that do not change results (workers, progress)
    data_dir: str | None = None
    device: str = "auto"
    threads: int = 1

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.variant}/seed{self.seed}"

    def config(self) -> dict:
        """The full train config of this run."""
        v = VARIANTS[self.variant]
        return dict(
            self.recipe,
            **self.settings,
            model=v.model,
            model_overrides=v.overrides,
            dataset=self.dataset,
            seed=self.seed,
            output=self.output,
            data_dir=self.data_dir,
            device=self.device,
        )


def run_dir(out: str | Path, dataset: str, variant: str, seed: int) -> Path:
    return Path(out) / "runs" / dataset / variant / f"seed{seed}"


def load_recipe(config: str | Path | None = None, **overrides) -> dict:
    """The study recipe: the packaged ``study`` recipe (or ``config``, a name or path) with
    ``overrides`` on top, validated against the train config; keys a study sets per run (model,
    data set, seed, output) are refused."""
    base = load_config(config or DEFAULT_RECIPE)
    recipe = {**base, **{k: v for k, v in overrides.items() if v is not None}}
    per_run = sorted({"model", "model_overrides", "dataset", "seed", "output"} & set(recipe))
    if per_run:
        raise ValueError(f"the study recipe must not set {per_run}: the grid sets them per run")
    cfg = asdict(resolve_config(recipe))  # validates keys and values; the full recipe, defaults included
    per_run_keys = {"model", "model_overrides", "dataset", "seed", "output", "data_dir", "device", "resume"}
    return {k: v for k, v in cfg.items() if k not in per_run_keys and (k not in NOT_RECIPE or k in recipe)}


def plan(
    out: str | Path,
    recipe: dict,
    datasets=STUDY_DATASETS,
    variants=tuple(VARIANTS),
    seeds=(0, 1, 2),
    data_dir: str | None = None,
    device: str = "auto",
    threads: int = 1,
) -> list[RunSpec]:
    """Every run, seed-major (all of seed 0 first): a study cut short still has whole seeds."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANTS)}")
    settings = {k: v for k, v in recipe.items() if k in NOT_RECIPE}
    recipe = {k: v for k, v in recipe.items() if k not in NOT_RECIPE}
    return [
        RunSpec(d, v, s, str(run_dir(out, d, v, s)), recipe, settings, data_dir, device, threads)
        for s in seeds
        for d in datasets
        for v in variants
    ]


def status(spec: RunSpec) -> str:
    """``"done"`` (result.json with this recipe), ``"partial"`` (checkpoint, no result) or ``"new"``.

    Raises:
        ValueError: A finished run in this folder used another recipe.
    """
    out = Path(spec.output)
    result = out / "result.json"
    if result.is_file():
        saved = json.loads(result.read_text()).get("recipe", {})
        if not same_values(saved, spec.recipe):
            diff = sorted(k for k in set(saved) | set(spec.recipe) if not same_values(saved.get(k), spec.recipe.get(k)))
            raise ValueError(
                f"{result} was trained with another recipe (differs in {diff}); use another --output for "
                "this recipe, or the same settings to extend that study"
            )
        return "done"
    return "partial" if (out / "checkpoint.pt").is_file() else "new"


# --------------------------------------------------------------------------- running


def complexity_of(dataset: str, variant: str) -> dict:
    """Params and multiply-adds of a variant at the data set's input size."""
    v = VARIANTS[variant]
    size = (1, 56, 56) if dataset == "fashion-mnist-scaled" else (1, 28, 28)
    c = complexity(create_model(v.model, **v.overrides), size)
    return dict(params=c.params, macs=c.macs, input_size=list(size))


def run_one(spec: RunSpec) -> dict:
    """Train one run (resuming it if it was interrupted) and write its ``result.json``.

    Output of training goes to ``log.txt`` in the run folder.
    """
    torch.set_num_threads(max(1, spec.threads))
    out = Path(spec.output)
    out.mkdir(parents=True, exist_ok=True)
    resume = (out / "checkpoint.pt").is_file()
    t0 = time.perf_counter()
    with open(out / "log.txt", "a") as f, contextlib.redirect_stderr(f), log_to(f):
        _log.info(f"# {spec.key} {'resumed' if resume else 'started'} {time.strftime('%Y-%m-%d %H:%M:%S')}")
        result = train(spec.config(), resume=resume)
    record = dict(
        dataset=spec.dataset,
        variant=spec.variant,
        label=VARIANTS[spec.variant].label,
        model=VARIANTS[spec.variant].model,
        overrides=VARIANTS[spec.variant].overrides,
        seed=spec.seed,
        recipe=spec.recipe,
        test_top1_err=result["test_top1_err"],
        test_loss=result["test_loss"],
        train_loss=result["train_loss"],
        epochs=result["epochs"],
        steps=result["steps"],
        train_time_s=result["train_time_s"],
        run_wall_s=time.perf_counter() - t0,
        resumed=resume,
        device=str(spec.device),
        torch=torch.__version__,
        gpu=torch.cuda.get_device_name() if torch.cuda.is_available() and "cpu" not in spec.device else None,
        **complexity_of(spec.dataset, spec.variant),
    )
    write_text(out / "result.json", json.dumps(record, indent=1))
    return record


def _pool(parallel: int):
    kwargs = dict(max_workers=parallel, mp_context=mp.get_context("spawn"))
    if sys.version_info >= (3, 11):
        kwargs["max_tasks_per_child"] = 1  # a fresh process per run: no state or GPU memory carried over
    return cf.ProcessPoolExecutor(**kwargs)


def run_study(
    specs: list[RunSpec], parallel: int = 1, time_limit: float | None = None, log: Callable[[str], None] | None = None
) -> dict:
    """Run the unfinished runs of ``specs``, ``parallel`` at a time, in order.

    With ``time_limit`` (seconds) no run starts once the elapsed time plus the median
    duration of the runs finished so far would pass the limit (runs already going finish).

    Returns:
        Counts: ``skipped`` (already done), ``finished``, ``failed`` (key -> error),
        ``not_started`` (time limit).
    """
    log = log or _log.info
    todo = deque(s for s in specs if status(s) != "done")
    summary = dict(skipped=len(specs) - len(todo), finished=0, failed={}, not_started=0)
    log(f"study: {len(specs)} runs, {summary['skipped']} already finished, {len(todo)} to run, {parallel} at a time")
    t0 = time.monotonic()
    durations: list[float] = []

    def may_start() -> bool:
        if time_limit is None:
            return True
        elapsed = time.monotonic() - t0
        est = statistics.median(durations) if durations else 0.0
        return elapsed + est <= time_limit

    def report(spec: RunSpec, started: float, result=None, error=None) -> None:
        dt = time.monotonic() - started
        n = summary["finished"] + len(summary["failed"])
        if error is None:
            durations.append(dt)
            summary["finished"] += 1
            err = result["test_top1_err"]
            log(f"[{n + 1}/{len(specs) - summary['skipped']}] {spec.key}: test error {err:.2f}% ({dt:.0f} s)")
        else:
            summary["failed"][spec.key] = f"{type(error).__name__}: {error}"
            log(f"[{n + 1}/{len(specs) - summary['skipped']}] {spec.key}: FAILED {type(error).__name__}: {error} "
                f"(see {spec.output}/log.txt)")  # fmt: skip

    if parallel <= 1:
        while todo:
            if not may_start():
                break
            spec, started = todo.popleft(), time.monotonic()
            try:
                report(spec, started, run_one(spec))
            except Exception as e:  # noqa: BLE001 - one failed run must not stop the grid
                report(spec, started, error=e)
    else:
        with _pool(parallel) as pool:
            running: dict = {}
            while todo or running:
                while todo and len(running) < parallel and may_start():
                    spec = todo.popleft()
                    running[pool.submit(run_one, spec)] = (spec, time.monotonic())
                if not running:
                    break
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    spec, started = running.pop(fut)
                    try:
                        report(spec, started, fut.result())
                    except Exception as e:  # noqa: BLE001
                        report(spec, started, error=e)
    summary["not_started"] = len(todo)
    if todo:
        log(f"study: time limit reached, {len(todo)} run(s) not started (run the same command again to continue)")
    return summary


# --------------------------------------------------------------------------- tables

# Two-sided 95% critical values of Student's t (df -> t); Welch's df is rounded down.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 10**9: 1.960}  # fmt: skip

# The paper's claims (docs/paper.md, 'Claims to test') as (claim, expected better, expected worse).
CLAIMS = [
    ("1: M=2 beats M=1 (K3+K5 SK vs K3)", "k3k5_sk", "k3"),
    ("1: M=2 beats M=1 (K3+K5 SK vs K5)", "k3k5_sk", "k5"),
    ("1: M=3 beats M=2 (SK)", "k3k5k7_sk", "k3k5_sk"),
    ("1: SK beats the sum (K3+K5)", "k3k5_sk", "k3k5_sum"),
    ("1: SK beats the sum (K3+K5+K7)", "k3k5k7_sk", "k3k5k7_sum"),
    ("2: SK beats a deeper K3 at its cost", "k3k5_sk", "deeper"),
    ("2: SK beats a wider K3 at its cost", "k3k5_sk", "wider"),
    ("3: SK beats SE", "k3k5_sk", "se"),
]


def collect(out: str | Path) -> list[dict]:
    """Every finished run's ``result.json`` under ``out/runs``."""
    runs = sorted(Path(out).glob("runs/*/*/seed*/result.json"))
    return [json.loads(p.read_text()) for p in runs]


def aggregate(results: list[dict]) -> list[dict]:
    """One row per (dataset, variant): seeds, mean and std of the test error, cost, time."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["variant"]), []).append(r)
    order = {v: i for i, v in enumerate(VARIANTS)}
    rows = []
    for (dataset, variant), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))):
        errs = [r["test_top1_err"] for r in sorted(rs, key=lambda r: r["seed"])]
        rows.append(
            dict(
                dataset=dataset,
                variant=variant,
                label=rs[0]["label"],
                model=rs[0]["model"],
                overrides=json.dumps(rs[0]["overrides"]),
                seeds=len(errs),
                err_mean=statistics.fmean(errs),
                err_std=statistics.stdev(errs) if len(errs) > 1 else float("nan"),
                errs=" ".join(f"{e:.2f}" for e in errs),
                params=rs[0]["params"],
                macs=rs[0]["macs"],
                train_time_s=statistics.fmean(r["train_time_s"] for r in rs),
                epochs=rs[0]["epochs"],
            )
        )
    return rows


def compare(rows: list[dict]) -> list[dict]:
    """The paper's claims as Welch t-tests on the seeds' test errors, per data set."""
    by = {(r["dataset"], r["variant"]): r for r in rows}
    out = []
    for dataset in sorted({r["dataset"] for r in rows}):
        for claim, better, worse in CLAIMS:
            a, b = by.get((dataset, better)), by.get((dataset, worse))
            if a is None or b is None:
                continue
            diff = b["err_mean"] - a["err_mean"]  # > 0: the paper's direction
            row = dict(dataset=dataset, claim=claim, better=better, worse=worse, diff=diff, n=(a["seeds"], b["seeds"]))
            row.update(welch(a, b))
            out.append(row)
    return out


def welch(a: dict, b: dict) -> dict:
    """Welch's t-test of ``b``'s mean test error minus ``a``'s (> 0: ``a`` is better), from two rows of
    :func:`aggregate` (``seeds``, ``err_mean``, ``err_std``): ``se``, ``t``, ``df`` and a verdict,
    two-sided at 95 %."""
    diff = b["err_mean"] - a["err_mean"]
    if a["seeds"] < 2 or b["seeds"] < 2:
        return dict(se=float("nan"), t=float("nan"), df=0, verdict="one seed: no test possible")
    va, vb = a["err_std"] ** 2 / a["seeds"], b["err_std"] ** 2 / b["seeds"]
    se = math.sqrt(va + vb)
    if se == 0:
        t, df = (math.inf if diff else 0.0), 10**9
    else:
        t = diff / se
        den = (va**2 / (a["seeds"] - 1) if va else 0) + (vb**2 / (b["seeds"] - 1) if vb else 0)
        df = int((va + vb) ** 2 / den) if den else 10**9
    crit = _T95[max(k for k in _T95 if k <= max(df, 1))]
    if abs(t) < crit:
        verdict = "not distinguishable from seed noise"
    else:
        verdict = "replicated" if t > 0 else "reversed (significantly)"
    return dict(se=se, t=t, df=df, verdict=verdict)


def format_tables(rows: list[dict], comparisons: list[dict], meta: dict | None = None) -> str:
    """``results.md``: per data set, the grid's table; then the claims."""
    lines = ["# sknet study results", ""]
    if meta:
        lines += [f"- {k}: {v}" for k, v in meta.items()] + [""]
    for dataset in sorted({r["dataset"] for r in rows}):
        rs = [r for r in rows if r["dataset"] == dataset]
        ref = next((r for r in rs if r["variant"] == "k3k5_sk"), None)
        lines += [
            f"## {dataset}",
            "",
            "| variant | model, overrides | params (M) | MMACs | MACs vs K3+K5 SK | test error (%) mean +- std | seeds "
            "| per seed | train time (s) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
        ]
        for r in rs:
            rel = f"{100 * (r['macs'] / ref['macs'] - 1):+.1f}%" if ref else "-"
            std = "-" if math.isnan(r["err_std"]) else f"{r['err_std']:.2f}"
            lines.append(
                f"| {r['label']} | `{r['model']}` {r['overrides'] if r['overrides'] != '{}' else ''} "
                f"| {r['params'] / 1e6:.3f} | {r['macs'] / 1e6:.2f} | {rel} | {r['err_mean']:.2f} +- {std} "
                f"| {r['seeds']} | {r['errs']} | {r['train_time_s']:.0f} |"
            )
        lines.append("")
    if comparisons:
        lines += [
            "## The paper's claims (docs/paper.md, 'Claims to test'), Welch t-test over seeds, two-sided 95%",
            "",
            "difference = error(expected worse) - error(expected better): positive is the paper's direction.",
            "",
            "| data set | claim | difference (points) | s.e. | t | df | verdict |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for c in comparisons:
            se = "-" if math.isnan(c["se"]) else f"{c['se']:.2f}"
            t = "-" if math.isnan(c["t"]) else f"{c['t']:+.2f}"
            lines.append(
                f"| {c['dataset']} | {c['claim']} | {c['diff']:+.2f} | {se} | {t} | {c['df']} | {c['verdict']} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_tables(out: str | Path, meta: dict | None = None) -> str:
    """Rebuild ``results.md``, ``results.csv``, ``runs.csv`` and ``comparisons.md`` from ``out``'s runs."""
    out = Path(out)
    results = collect(out)
    if not results:
        raise FileNotFoundError(f"no finished runs (runs/*/*/seed*/result.json) under {str(out)!r}")
    rows = aggregate(results)
    comparisons = compare(rows)
    if meta is None and (out / "study.json").is_file():
        meta = json.loads((out / "study.json").read_text()).get("meta")
    text = format_tables(rows, comparisons, meta)
    flat = [{k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()} for r in results]
    write_text(out / "results.md", text)
    write_csv(out / "results.csv", rows)
    write_csv(out / "runs.csv", flat)
    write_csv(out / "comparisons.csv", [dict(c, n=f"{c['n'][0]}/{c['n'][1]}") for c in comparisons])
    return text


def save_plan(out: str | Path, specs: list[RunSpec], datasets, variants, seeds, meta: dict) -> Path:
    """``OUT/study.json``: the grid and recipe asked for, and how (``meta``: command, parallel, device)."""
    recipe = specs[0].recipe if specs else None
    study = dict(datasets=list(datasets), variants=list(variants), seeds=list(seeds), recipe=recipe, meta=meta)
    return write_text(Path(out) / "study.json", json.dumps(study, indent=1))
