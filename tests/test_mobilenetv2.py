"""MobileNetV2 (torchvision's layout and weights) and SK-MobileNetV2 (every depthwise 3x3 a depthwise SK conv)."""

import pytest
import torch

import sknet
from conftest import randomize_bn
from sknet.layers import SKConv, sk_impl

torchvision = pytest.importorskip("torchvision")


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _torchvision_mobilenet_v2(x: torch.Tensor) -> torch.nn.Module:
    """torchvision's mobilenet_v2 with random BN statistics and logits of order 10."""
    ref = randomize_bn(torchvision.models.mobilenet_v2(weights=None)).eval()
    with torch.no_grad():
        ref.classifier[1].weight.mul_(10 / ref(x).abs().max())
    return ref


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_torchvision_mobilenet_v2_gives_the_same_logits(tmp_path, fmt):
    from safetensors.torch import save_file

    x = torch.randn(2, 3, 224, 224)
    ref = _torchvision_mobilenet_v2(x)
    path = tmp_path / f"tv.{fmt}"
    torch.save(ref.state_dict(), path) if fmt == "pth" else save_file(ref.state_dict(), str(path))
    ours = sknet.create_model("mobilenetv2_100", weights=str(path))
    ref_out = _logits(ref, x)
    assert ref_out.abs().max() > 5
    assert (_logits(ours, x) - ref_out).abs().max() <= 1e-4
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    assert ours.drop.p == ref.classifier[0].p == 0.2


def test_torchvision_mobilenet_v2_starts_a_fine_tuning_run(tmp_path):
    """load_pretrained keeps a fresh ``fc`` when the class count differs; the file's size is read."""
    ref = torchvision.models.mobilenet_v2(weights=None)
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    model = sknet.create_model("mobilenetv2_100", num_classes=10)
    info = sknet.weights.load_pretrained(model, tmp_path / "tv.pth", model_name="mobilenetv2_100")
    assert info["reinitialised"] == ["fc.weight", "fc.bias"] and info["file_classes"] == 1000
    assert torch.equal(model.conv_head.conv.weight, ref.features[18][0].weight)
    assert torch.equal(model.stage5[3].conv_pwl.bn.running_var, ref.features[17].conv[3].running_var)


def test_mobilenetv2_size_is_torchvisions():
    """3.50M parameters / 0.30 GMACs (torchvision's figures), measured on both."""
    ours = sknet.complexity(sknet.create_model("mobilenetv2_100"))
    ref = sknet.complexity(torchvision.models.mobilenet_v2(weights=None))
    assert (ours.params, ours.macs) == (ref.params, ref.macs) == (3_504_872, 300_774_272)


def test_stages_and_feature_info():
    model = sknet.create_model("mobilenetv2_100")
    assert [len(getattr(model, f"stage{i}")) for i in range(1, 6)] == [1, 2, 3, 7, 4]  # torchvision's features.1..17
    assert [(d["module"], d["num_chs"], d["reduction"]) for d in model.feature_info] == [
        ("stage1", 16, 2),  # timm's mobilenetv2_100 levels: its first block at stride 2, then 4 to 32
        ("stage2", 24, 4),
        ("stage3", 32, 8),
        ("stage4", 96, 16),
        ("stage5", 320, 32),
    ]
    assert model.num_features == 1280 and isinstance(model.conv1.act, torch.nn.ReLU6)
    assert isinstance(model.stage1[0].conv_pw, torch.nn.Identity)  # t = 1: no expansion
    assert isinstance(model.stage2[0].conv_pwl.act, torch.nn.Identity)  # linear bottleneck
    assert [u.use_res for u in model.stage4] == [False, True, True, True, False, True, True]
    half = sknet.create_model("mobilenetv2_100", width_mult=0.5)
    assert model.stage_info == model.feature_info[1:]
    assert [d["num_chs"] for d in half.stage_info] == [16, 16, 48, 160] and half.num_features == 1280


def test_depthwise_sk_in_mobilenetv2():
    model = sknet.create_model("mobilenetv2_100_sk")
    sks = [m for m in model.modules() if isinstance(m, SKConv)]
    assert len(sks) == 17  # every inverted residual
    assert all(p.conv.groups == p.conv.in_channels == p.conv.out_channels for sk in sks for p in sk.paths)
    assert all([tuple(b) for b in sk.branches] == [(3, 1, None), (3, 2, None)] for sk in sks)
    assert all(isinstance(p.act, torch.nn.ReLU6) for sk in sks for p in sk.paths)
    assert all(p.conv.stride == (2, 2) for p in model.stage3[0].conv_dw.paths)  # the stride on both branches
    assert [sk.attn.dim for sk in sks] == [32] * 11 + [36] * 3 + [60] * 3  # max(C / 16, 32)


def test_one_branch_sk_mobilenetv2_is_the_baseline():
    base = randomize_bn(sknet.create_model("mobilenetv2_100"))
    one = sknet.create_model("mobilenetv2_100_sk", branches=[(3, 1, None)])
    b, o = sknet.complexity(base), sknet.complexity(one)
    assert (o.params, o.macs) == (b.params, b.macs)
    one.load_state_dict({k.replace(".conv_dw.", ".conv_dw.paths.0."): v for k, v in base.state_dict().items()})
    x = torch.randn(2, 3, 64, 64)
    with sk_impl(one, "nofold"):  # the same ops as the baseline's ConvBnAct
        assert torch.equal(_logits(one, x), _logits(base, x))
    assert (_logits(one, x) - _logits(base, x)).abs().max() <= 1e-4  # BN folded on the fly: rounding only
    one.train(), base.train()
    with sk_impl(one, "nofold"):
        torch.manual_seed(0), one(x).sum().backward()
    torch.manual_seed(0), base(x).sum().backward()  # the same dropout mask
    assert torch.equal(one.stage3[0].conv_dw.paths[0].conv.weight.grad, base.stage3[0].conv_dw.conv.weight.grad)


def test_mobilenetv2_sk_trains_a_step():
    model = sknet.create_model("mobilenetv2_100_sk", num_classes=10, drop_rate=0.0).train()
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(model(x), y)
    assert torch.isfinite(after) and after < loss


@pytest.mark.parametrize("name", ["mobilenetv2_100", "mobilenetv2_100_sk"])
def test_fuse_gives_the_same_outputs(name):
    model = randomize_bn(sknet.create_model(name)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model.fc.weight.mul_(10 / model(x).abs().max())
    fused = sknet.fuse(model)
    assert not [m for m in fused.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    ref = _logits(model, x)
    assert ref.abs().max() > 5
    assert (_logits(fused, x) - ref).abs().max() <= 1e-4 * ref.abs().max()  # float32 rounding of the folded weights


def test_onnx_export_of_the_fused_sk_model(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from sknet.deploy import export as sk_export

    model = randomize_bn(sknet.create_model("mobilenetv2_100_sk")).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model.fc.weight.mul_(10 / model(x).abs().max())
    report = sk_export.export_model(model, tmp_path / "m.onnx", "onnx", (3, 64, 64), dynamic_batch=True, fuse=True)
    assert report.max_abs_eager > 1.0
    with torch.no_grad():
        ref = model(x)
    assert (sk_export.run_exported(tmp_path / "m.onnx", "onnx", x) - ref).abs().max() <= 1e-4 * ref.abs().max()
