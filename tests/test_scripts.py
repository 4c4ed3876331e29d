"""The measurement scripts that a GPU call runs (scripts/gpu_bench.sh): their maths and their
op classes, checked on the CPU so that the one prepared call does not fail on the device."""

import importlib.util
import types
from pathlib import Path

import pytest
import torch
import torchvision

import sknet

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("size", [14, 7])  # even, and odd (a phase grid gets a zero row)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_branch_formulations_compute_the_conv_as_written(size, layout):
    bench = load_script("bench_branch_convs")
    torch.manual_seed(0)
    c = 64
    x = torch.randn(2, c, size, size, dtype=torch.float64).contiguous(memory_format=layout)
    w1 = torch.randn(c, c // bench.GROUPS, 3, 3, dtype=torch.float64)
    w2 = torch.randn_like(w1)
    k5 = bench.k5(x, w2, 1)
    polyphase = bench.k5_polyphase(x, w2, 1)
    torch.testing.assert_close(polyphase, k5, rtol=1e-12, atol=1e-12)
    assert polyphase.is_contiguous(memory_format=layout)
    merged = torch.nn.functional.conv2d(x, bench.merged_weight(w1, w2), None, 1, 2, 1, bench.GROUPS)
    out3, out5 = bench.split_merged(merged, c)
    torch.testing.assert_close(out3, bench.k3(x, w1, 1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out5, k5, rtol=1e-12, atol=1e-12)
    strided = bench.k5(x, w2, 2)
    torch.testing.assert_close(bench.k5_subsampled(x, w2, 2), strided, rtol=1e-12, atol=1e-12)


def test_profile_puts_the_second_branch_in_its_own_class():
    profiler = load_script("profile_sk_overhead")
    args = types.SimpleNamespace(memory_format="channels_last", batch=2, size=32, mode="train", rounds=1)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    models = {"sk": sknet.create_model("sknet50"), "rx": torchvision.models.resnext50_32x4d()}
    result = profiler.profile_models(models, args, cpu, torch.float32)
    sk, rx = result["sk"]["classes"], result["rx"]["classes"]
    for classes in (sk, rx):
        for cls in ("stem conv", "1x1 conv", "grouped 3x3 conv, dilation 1", "batch norm", "optimizer"):
            assert classes.get(cls, 0) > 0 and classes.get(f"{cls} (backward)", 0) > 0 or cls == "optimizer", cls
    # SKNet-50's K5 branch (3x3, dilation 2) forward and backward; ResNeXt-50 has none
    assert sk["grouped 3x3 conv, dilation 2"] > 0 and sk["grouped 3x3 conv, dilation 2 (backward)"] > 0
    assert not any("dilation 2" in cls for cls in rx)
    assert sk.get("attention MLP", 0) > 0 and rx.get("attention MLP", 0) == 0
    assert "other conv" not in sk and "other conv" not in rx
