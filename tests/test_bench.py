"""sknet bench: the report's structure, the ratios, the memory accounting and bad input (no timing asserts)."""

import json
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from sknet import bench
from sknet.bench import BenchConfig, _cpu_peak_alloc_bytes, build_model, median_ms, run_bench
from sknet.cli import main
from sknet.layers import SKConv


def _cfg(**kw):
    base = dict(
        models=("sknet_mini", "sknet_mini@reference", "sknet_mini+fuse"),
        reference="resnext_mini",
        batch_size=4,
        input_size=28,
        warmup=1,
        rounds=2,
        keep_freed_memory=False,  # mallopt would change this test process's allocator for good
    )
    return BenchConfig(**(base | kw))


def test_report_has_every_model_and_mode_with_ratios_to_the_reference():
    report = run_bench(_cfg(), log=lambda s: None)
    rows = {(r["model"], r["mode"]): r for r in report["results"]}
    assert set(rows) == {
        ("resnext_mini", "inference"),
        ("sknet_mini", "inference"),
        ("sknet_mini@reference", "inference"),
        ("sknet_mini+fuse", "inference"),
        ("resnext_mini", "train"),
        ("sknet_mini", "train"),
        ("sknet_mini@reference", "train"),
    }  # a fused model is not trained
    for r in report["results"]:
        ref = rows[("resnext_mini", r["mode"])]
        assert len(r["img_per_s_rounds"]) == 2 and r["img_per_s"] == statistics.median(r["img_per_s_rounds"])
        assert r["ratio"] == pytest.approx(r["img_per_s"] / ref["img_per_s"])
        per_round = sorted(x / y for x, y in zip(r["img_per_s_rounds"], ref["img_per_s_rounds"]))
        assert len(per_round) == len(ref["img_per_s_rounds"]) > 0
        assert r["paired_ratio"] == pytest.approx(float(np.median(per_round)))
        assert r["mem_ratio"] == pytest.approx(r["peak_mem_mb"] / ref["peak_mem_mb"])
    assert report["environment"]["torch"] == torch.__version__
    assert report["environment"]["malloc"] == "as is"
    if sys.platform.startswith("linux"):  # getrusage is there: the faults are measured (their value: below)
        assert all(isinstance(r["minor_faults_per_step"], float) for r in report["results"])


class FakeClock:
    """``time`` for sknet.bench, with a ``perf_counter`` that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


def test_median_ms_runs_warmup_then_rounds_and_takes_the_median(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(bench, "time", clock)
    durations = iter([60.0, 60.0, 0.004, 0.001, 0.009, 0.002, 0.003])  # s: 2 warm-up calls, then 5 rounds

    def fn():
        clock.now += next(durations)

    ms = median_ms(fn, torch.device("cpu"), rounds=5, warmup=2)
    assert next(durations, None) is None  # 7 calls, the last one timed (a call more would raise)
    assert ms == pytest.approx(3.0)  # the median round, in ms; the warm-up calls are not timed


def test_throughput_and_faults_are_per_image_and_per_step_of_the_timed_steps(monkeypatch):
    """On a clock and a page-fault counter that move only inside a model's step (per reference step:
    0.1 s and 7 faults; per SK step: 0.25 s and 3 faults), the report's figures are exact: images
    (each mode's own batch) per second over the timed steps, faults per step, and the ratios."""
    clock, faults = FakeClock(), [0]
    cost = {"resnext_mini": (0.1, 7), "sknet_mini": (0.25, 3)}
    step = bench.Runner.step

    def costly_step(self):
        step(self)
        seconds, n = cost[self.spec]
        clock.now += seconds
        faults[0] += n

    monkeypatch.setattr(bench, "time", clock)
    monkeypatch.setattr(bench.Runner, "step", costly_step)
    monkeypatch.setattr(bench, "_minor_faults", lambda: faults[0])
    cfg = _cfg(models=("sknet_mini",), batch_size=4, train_batch_size=2, iters=3, rounds=3, memory=False)
    report = run_bench(cfg, log=lambda s: None)
    rows = {(r["model"], r["mode"]): r for r in report["results"]}
    assert len(rows) == 4
    for (model, mode), r in rows.items():
        (seconds, n), batch = cost[model], 4 if mode == "inference" else 2
        assert r["batch_size"] == batch
        assert r["img_per_s_rounds"] == pytest.approx([batch / seconds] * 3)
        assert r["img_per_s"] == pytest.approx(batch / seconds)
        assert r["minor_faults_per_step"] == pytest.approx(n)
        if model == "sknet_mini":
            assert r["ratio"] == pytest.approx(0.4) and r["paired_ratio"] == pytest.approx(0.4)


def test_cpu_peak_memory_counts_live_allocations_only():
    n = 1_000_000

    def step():
        a = torch.ones(n)  # 4 MB
        b = torch.ones(2 * n)  # 8 MB, both live: 12 MB
        del a, b
        c = torch.ones(n)  # 4 MB after the frees
        del c

    peak = _cpu_peak_alloc_bytes(step)
    assert 12 * 10**6 <= peak < 13 * 10**6


def test_training_peak_includes_parameters_and_optimizer_state():
    report = run_bench(_cfg(models=("sknet_mini",), modes=("train",), rounds=1), log=lambda s: None)
    params_mb = sum(p.numel() for p in build_model("sknet_mini").parameters()) * 4 / 2**20
    for r in report["results"]:  # weights + momentum + gradients at least
        assert r["peak_mem_mb"] > 2 * params_mb


def test_spec_options_reach_the_sk_modules():
    model = build_model("sknet_mini@reference")
    assert all(m.impl == "reference" for m in model.modules() if isinstance(m, SKConv))
    model = build_model("sknet_mini@nolean,nofold")
    sks = [m for m in model.modules() if isinstance(m, SKConv)]
    assert sks and all(m.impl == "fast" and not m.lean_training and not m.fold_eval_bn for m in sks)
    assert all(m.subsample_strided for m in sks)
    model = build_model("sknet_mini@nosubsample")
    sks = [m for m in model.modules() if isinstance(m, SKConv)]
    assert all(m.lean_training and m.fold_eval_bn and not m.subsample_strided for m in sks)
    with pytest.raises(ValueError, match="unknown SK option"):
        build_model("sknet_mini@turbo")


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "sknet_mini", "--reference", "resnext_mini", "--input-size", "28", "--batch-size", "2"]
    argv += ["--rounds", "1", "--warmup", "0", "--modes", "inference", "--no-memory", "--system-malloc"]
    argv += ["--json", str(out)]
    assert main(argv) == 0
    assert "sknet_mini" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert [r["model"] for r in report["results"]] == ["resnext_mini", "sknet_mini"]
    assert report["results"][0]["peak_mem_mb"] is None


GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_keep_freed_memory_stops_the_page_faults_of_reallocated_maps():
    """A 64 MiB block is above glibc's largest adaptive mmap threshold (32 MiB): by default every
    allocation maps fresh pages and faults on each one; after keep_freed_memory() the freed
    block is reused. In a subprocess: mallopt changes the process for good."""
    code = """
import resource, torch
from sknet.bench import keep_freed_memory

def faults():
    n = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.empty(16 * 2**20).fill_(1.0)  # 64 MiB, freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - n

before = faults()
assert keep_freed_memory()
faults()  # the first use of the kept block faults once
print(before, faults())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after = map(int, out.split())
    pages = 5 * 64 * 2**20 // 4096
    assert before >= 0.9 * pages
    assert after < 0.01 * pages


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_cli_keeps_freed_memory_by_default_and_says_so(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["bench", "sknet_mini", "--reference", "resnext_mini", "--input-size", "28", "--batch-size", "2"]
    argv += ["--rounds", "1", "--warmup", "0", "--modes", "inference", "--no-memory", "--json", str(out)]
    subprocess.run([sys.executable, "-m", "sknet", *argv], capture_output=True, text=True, check=True)
    assert json.loads(out.read_text())["environment"]["malloc"] == "glibc, freed memory kept (mallopt)"


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--dtype", "fp64"], "invalid choice"),
        (["--batch-size", "0"], "batch size"),
        (["--device", "cuda"], "cuda"),
    ],
)
def test_bad_options_say_what_is_wrong(argv, match, capsys):
    if argv[-1] == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA present")
    try:
        code = main(["bench", "sknet_mini", "--reference", "resnext_mini", *argv])
    except SystemExit as e:  # argparse's own choices check
        code = e.code
    assert code == 2
    assert match in capsys.readouterr().err


def test_the_profiler_does_not_flood_the_terminal(tmp_path):
    """The CPU memory pass runs the PyTorch profiler, whose C++ side logs every start and stop to
    stderr ("USDT: ... profiler_start"); the command shows only its own lines."""
    argv = ["bench", "sknet_mini", "--reference", "resnext_mini", "--input-size", "28", "--batch-size", "2"]
    argv += ["--rounds", "1", "--warmup", "0", "--modes", "inference", "--system-malloc"]
    proc = subprocess.run([sys.executable, "-m", "sknet", *argv], capture_output=True, text=True, check=True)
    assert "profiler_start" not in proc.stderr and ".cpp:" not in proc.stderr
    assert "[inference] round 1/1" in proc.stderr and "sknet_mini" in proc.stdout
    assert "peak MB" in proc.stdout  # the memory pass did run
