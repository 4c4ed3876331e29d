"""sknet.fuse: BatchNorms folded into convolutions and the two-branch select into one map, with the
unfused model's outputs; what it gives traces and exports."""

import copy

import pytest
import torch
from torch import nn

import sknet
from conftest import BRANCHES, assert_close_rel, randomize_bn
from sknet import fuse
from sknet.deploy.fusion import PairwiseAttention
from sknet.layers import SKConv, sk_impl


@pytest.mark.parametrize("name", ["M1-grouped", "M2-grouped", "M3-grouped", "M2-depthwise"])
def test_fused_sk_conv_matches_unfused(name):
    sk = randomize_bn(SKConv(16, 16, BRANCHES[name], stride=2, min_dim=8)).eval()
    x = torch.randn(3, 16, 10, 10)
    with sk_impl(sk, "reference"):
        ref = sk(x)
    fused = fuse(sk)
    assert_close_rel(fused(x), ref)
    assert not any(isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) for m in fused.modules())
    if len(BRANCHES[name]) == 2:  # two select row blocks became one
        assert isinstance(fused.attn, PairwiseAttention) and fused.attn.fc_select.out_features == 16
    assert any(isinstance(m, nn.BatchNorm2d) for m in sk.modules())  # the original is untouched


@pytest.mark.parametrize("name", ["sknet_mini", "resnext_mini", "senet_mini"])
def test_fused_model_matches_unfused(name):
    model = randomize_bn(sknet.create_model(name)).eval()
    x = torch.randn(2, 1, 28, 28)
    with sk_impl(model, "reference"), torch.no_grad():
        ref = model(x)
    fused = fuse(model)
    with torch.no_grad():
        assert_close_rel(fused(x), ref)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert not fused.training


def test_fused_shufflenet_and_torchvision_resnext_match():
    torchvision = pytest.importorskip("torchvision")
    for model, x in [
        (sknet.create_model("shufflenetv2_x0_5_sk", num_classes=10), torch.randn(2, 3, 64, 64)),
        (
            torchvision.models.resnet.ResNet(
                torchvision.models.resnet.Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=4
            ),
            torch.randn(2, 3, 64, 64),
        ),
    ]:
        model = randomize_bn(model).eval()
        with torch.no_grad():
            ref = model(x)
            assert_close_rel(fuse(model)(x), ref)


def test_fused_attention_still_hookable():
    model = randomize_bn(sknet.create_model("sknet_mini")).eval()
    x = torch.randn(2, 1, 28, 28)
    sk = next(m for m in model.modules() if isinstance(m, SKConv))
    fused = fuse(model)
    fused_sk = next(m for m in fused.modules() if isinstance(m, SKConv))
    seen = []
    hooks = [
        sk.attn.register_forward_hook(lambda m, i, o: seen.append(o)),
        fused_sk.attn.register_forward_hook(lambda m, i, o: seen.append(o)),
    ]
    with torch.no_grad():
        model(x)
        fused(x)
    for h in hooks:
        h.remove()
    assert seen[1].shape == seen[0].shape
    assert_close_rel(seen[1], seen[0])


def test_fused_model_traces_and_exports():
    """Only standard ops in the fused graph: jit.trace and torch.export accept it."""
    model = fuse(randomize_bn(sknet.create_model("sknet_mini")))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        ref = model(x)
        traced = torch.jit.trace(model, x)
        assert_close_rel(traced(x), ref)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert_close_rel(exported.module()(x), ref)


@pytest.mark.parametrize("name", ["sknet_mini", "sknet26"])  # two branches: the pairwise attention
def test_a_fused_model_traces_with_torch_fx(name):
    """torch.fx and torchvision's feature extractor follow a fused model too (SK and its fused
    attention included), and the graph computes the fused model's function."""
    from torchvision.models.feature_extraction import create_feature_extractor

    model = fuse(randomize_bn(sknet.create_model(name)).eval())
    assert any(isinstance(m, PairwiseAttention) for m in model.modules())
    x = torch.randn(2, *sknet.get_model_entry(name).input_size[:1], 32, 32)
    reference = copy.deepcopy(model)
    for m in reference.modules():
        if isinstance(m, SKConv):
            m.impl = "reference"  # what tracing records
    with torch.no_grad():
        assert_close_rel(torch.fx.symbolic_trace(model)(x), reference(x))
        last = sknet.features(model).return_layers[-1]
        assert_close_rel(
            create_feature_extractor(model, {last: "out"}).eval()(x)["out"], sknet.features(model)(x)[last]
        )


def test_fuse_rejects_non_modules():
    with pytest.raises(ValueError, match="torch.nn.Module"):
        fuse("sknet50")


def test_fuse_copies_unless_in_place_and_folds_only_plain_batchnorms():
    """fuse leaves its input as it was unless asked (inplace=True gives back the same, changed
    module); a BatchNorm that carries an activation (timm's BatchNormAct2d) is not folded into the
    conv before it, since folding would drop the activation; a plain one in the same place is."""
    timm_layers = pytest.importorskip("timm.layers")
    model = randomize_bn(sknet.create_model("sknet_mini")).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
        copied = fuse(model)
        assert copied is not model and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)  # the input model still computes the same
        same = fuse(model, inplace=True)
        assert same is model and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        assert_close_rel(same(x), expected)
        with_act = randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 3), timm_layers.BatchNormAct2d(8))).eval()
        plain = randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))).eval()
        y = torch.randn(2, 3, 9, 9)
        fused_with_act, fused_plain = fuse(with_act), fuse(plain)
        assert isinstance(fused_with_act[1], timm_layers.BatchNormAct2d) and isinstance(fused_plain[1], nn.Identity)
        assert_close_rel(fused_with_act(y), with_act(y))
        assert_close_rel(fused_plain(y), plain(y))


@pytest.mark.slow
def test_fused_model_exports_to_onnx_and_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = fuse(randomize_bn(sknet.create_model("sknet_mini")))
    x = torch.randn(2, 1, 28, 28)
    torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), dynamo=True)
    runtime = ort.InferenceSession(str(tmp_path / "m.onnx"))
    (y,) = runtime.run(None, {runtime.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        assert_close_rel(torch.from_numpy(y), model(x))


def test_fuse_takes_a_lone_attention_module():
    attn = randomize_bn(SKConv(16, 16, BRANCHES["M2-grouped"], min_dim=8)).attn.eval()
    s = torch.randn(4, 16)
    fused = fuse(attn)
    assert isinstance(fused, PairwiseAttention) and fused.num_paths == 2
    with torch.no_grad():
        assert_close_rel(fused(s), attn(s))
