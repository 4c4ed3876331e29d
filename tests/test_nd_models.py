"""The 1-D and 3-D networks: registered like the 2-D ones, stage outputs, the fast path on whole
networks, fused models exported to ONNX."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import sknet
from conftest import assert_as_accurate, assert_close_rel, randomize_bn
from sknet.layers import sk_impl
from sknet.models.table import model_table

pytestmark = pytest.mark.usefixtures("one_thread")

ND = ["resnext_mini_1d", "sknet_mini_1d", "resnext_mini_3d", "sknet_mini_3d", "sknet50_1d", "sknet50_3d"]


@pytest.mark.parametrize("name", ND)
def test_stage_outputs_have_the_strides_stage_info_gives(name):
    entry = sknet.get_model_entry(name)
    model = sknet.create_model(name).eval()
    c, *spatial = entry.input_size
    size = [min(s, 32) for s in spatial] if len(spatial) == 3 else [min(s, 256) for s in spatial]
    with torch.no_grad():
        maps = sknet.features(model)(torch.randn(1, c, *size))
    video = entry.family == "video"
    for (name_, out), info in zip(maps.items(), model.stage_info, strict=True):
        assert name_ == info["module"] and out.shape[1] == info["num_chs"]
        strides = [info["reduction"]] * len(size)
        if video:  # the video stem keeps T: time is reduced half as much
            strides[0] //= 2
        assert list(out.shape[2:]) == [-(-s // r) for s, r in zip(size, strides)], (name_, out.shape)


def test_registered_with_their_kind_of_input_and_cost():
    rows = {r["name"]: r for r in model_table("*_[13]d")}
    assert set(rows) == set(ND) | {"resnext50_32x4d_1d", "resnext50_32x4d_3d"}
    assert rows["sknet50_3d"]["input"] == "16x112x112" and rows["sknet_mini_1d"]["input"] == "256"
    sk, base = rows["sknet50_3d"], rows["resnext50_32x4d_3d"]
    assert sk["params_m"] > base["params_m"] and sk["gmacs"] > base["gmacs"]  # SK's second branch and fcs
    m = sknet.create_model("sknet50_3d")
    assert isinstance(m.conv1, nn.Conv3d) and m.conv1.kernel_size == (3, 7, 7) and m.conv1.stride == (1, 2, 2)
    sks = [x for x in m.modules() if isinstance(x, sknet.SKConv)]
    assert len(sks) == 16 and all(x.dims == 3 and x.paths[1].conv.dilation == (2, 2, 2) for x in sks)


@pytest.mark.parametrize("name, size", [("sknet_mini_1d", (1, 64)), ("sknet_mini_3d", (1, 8, 16, 16))])
def test_whole_network_fast_matches_reference_in_training(name, size):
    model = randomize_bn(sknet.create_model(name)).train()
    x = torch.randn(4, *size)
    results = {}
    for impl, dtype in (("reference", torch.float32), ("fast", torch.float32), ("exact", torch.float64)):
        m = copy.deepcopy(model).to(dtype)
        with sk_impl(m, "reference" if impl == "exact" else impl):
            loss = nn.functional.cross_entropy(m(x.to(dtype)), torch.arange(4) % 5)
            loss.backward()
        results[impl] = (loss.detach(), {n: p.grad for n, p in m.named_parameters()})
    assert_close_rel(results["fast"][0], results["reference"][0])
    for n, g in results["reference"][1].items():
        assert_as_accurate(results["fast"][1][n], g, results["exact"][1][n], rtol=1e-4)


@pytest.mark.parametrize("name, size", [("sknet_mini_1d", (1, 256)), ("sknet_mini_3d", (1, 16, 32, 32))])
def test_fused_1d_and_3d_models_export_to_onnx(name, size, tmp_path):
    pytest.importorskip("onnxruntime")
    model = randomize_bn(sknet.create_model(name)).eval()
    with torch.no_grad():
        model.fc.weight.mul_(10)  # logits of order 1-10: the tolerance means something
    report = sknet.export_model(model, tmp_path / "m.onnx", "onnx", size, dynamic_batch=True, fuse=True)
    assert report.max_abs_eager > 1 and report.max_abs_diff <= 1e-4 * report.max_abs_eager
    assert set(report.diffs) == {1, 3}


def test_1d_and_3d_models_round_trip_through_a_model_folder(tmp_path):
    for name, size in (("sknet_mini_1d", (1, 256)), ("sknet_mini_3d", (1, 16, 32, 32))):
        model = randomize_bn(sknet.create_model(name)).eval()
        sknet.save_pretrained(model, tmp_path / name)
        card = (tmp_path / name / "README.md").read_text()
        assert "x".join(map(str, size)) in card and "image-classification" not in card
        again = sknet.from_pretrained(tmp_path / name).eval()
        x = torch.randn(2, *size)
        with torch.no_grad():
            assert torch.equal(model(x), again(x))


def test_export_command_takes_the_sizes_of_the_models_dimension(tmp_path, capsys):
    from sknet.cli import main

    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "v.onnx"
    assert main(["export", "--model", "sknet_mini_3d", "--fuse", "-o", str(out), "--input-size", "8", "16", "16"]) == 0
    exported = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert exported.get_inputs()[0].shape == [1, 1, 8, 16, 16]
    bad = ["export", "--model", "sknet_mini_1d", "-o", str(tmp_path / "s.onnx"), "--input-size", "1", "8", "8"]
    assert main(bad) == 2
    assert "takes L or C L for this model (input (1, 256)); got [1, 8, 8]" in capsys.readouterr().err
    assert not (tmp_path / "s.onnx").exists()
