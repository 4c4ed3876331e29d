"""sknet bench: the report's structure, the ratios, the memory accounting and bad input (no timing asserts)."""

import json

import numpy as np
import pytest
import torch

from sknet.bench import BenchConfig, _cpu_peak_alloc_bytes, build_model, run_bench
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
        assert len(r["img_per_s_rounds"]) == 2 and r["img_per_s"] > 0
        assert r["ratio"] == pytest.approx(r["img_per_s"] / ref["img_per_s"])
        per_round = sorted(x / y for x, y in zip(r["img_per_s_rounds"], ref["img_per_s_rounds"]))
        assert len(per_round) == len(ref["img_per_s_rounds"]) > 0
        assert r["paired_ratio"] == pytest.approx(float(np.median(per_round)))
        assert r["mem_ratio"] == pytest.approx(r["peak_mem_mb"] / ref["peak_mem_mb"])
    assert report["environment"]["torch"] == torch.__version__


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
    argv += ["--rounds", "1", "--warmup", "0", "--modes", "inference", "--no-memory", "--json", str(out)]
    assert main(argv) == 0
    assert "sknet_mini" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert [r["model"] for r in report["results"]] == ["resnext_mini", "sknet_mini"]
    assert report["results"][0]["peak_mem_mb"] is None


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
