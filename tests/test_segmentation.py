"""Output stride 8 / 16 (the last stages' strides replaced by dilation) and the segmentation models on top."""

import re

import pytest
import torch
import torch.nn.functional as F

import sknet
from conftest import randomize_bn

# Stage strides of the ImageNet networks at each output stride.
STRIDES = {32: [4, 8, 16, 32], 16: [4, 8, 16, 16], 8: [4, 8, 8, 8]}


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _branch_dilations(unit) -> list[int]:
    return [p.conv.dilation[0] for p in unit.conv2.paths]


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_sknet50_feature_strides_and_shapes(output_stride):
    model = randomize_bn(sknet.create_model("sknet50", output_stride=output_stride)).eval()
    backbone = sknet.features(model)
    assert model.output_stride == output_stride
    assert backbone.strides == [d["reduction"] for d in model.stage_info] == STRIDES[output_stride]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = backbone(x)
        logits = model(x)
    expected = [(2, c, 64 // s, 64 // s) for c, s in zip((256, 512, 1024, 2048), STRIDES[output_stride])]
    assert [tuple(f.shape) for f in feats.values()] == expected
    assert logits.shape == (2, 1000)
    with torch.no_grad():
        assert torch.equal(model.forward_head(feats["layer4"]), logits)


def test_dilation_follows_torchvision_and_multiplies_the_sk_branches():
    """A dilated stage's first unit keeps the previous dilation (and loses its stride, shortcut
    included); the later units dilate, every SK branch's own dilation multiplied."""
    os16 = sknet.create_model("sknet50", output_stride=16)
    assert _branch_dilations(os16.layer3[1]) == [1, 2]
    assert _branch_dilations(os16.layer4[0]) == [1, 2] and os16.layer4[0].conv2.paths[0].conv.stride == (1, 1)
    assert os16.layer4[0].downsample[0].stride == (1, 1)
    assert all(_branch_dilations(u) == [2, 4] for u in os16.layer4[1:])
    os8 = sknet.create_model("sknet50", output_stride=8)
    assert _branch_dilations(os8.layer3[0]) == [1, 2] and os8.layer3[0].downsample[0].stride == (1, 1)
    assert all(_branch_dilations(u) == [2, 4] for u in os8.layer3[1:])
    assert _branch_dilations(os8.layer4[0]) == [2, 4]
    assert all(_branch_dilations(u) == [4, 8] for u in os8.layer4[1:])
    rx = sknet.create_model("resnext26_32x4d", output_stride=8)
    assert [u.conv2.conv.dilation[0] for u in (*rx.layer3, *rx.layer4)] == [1, 2, 2, 4]


@pytest.mark.parametrize("name", ["sknet50", "resnext50_32x4d", "sknet_mini", "sknet29", "skresnet18"])
def test_output_stride_32_is_the_network_of_today(name):
    """The default and the network's own output stride build the same network: same seed, same
    weights, same logits, and no dilation beyond the configured SK branches (the logits at output
    stride 32 are torchvision's and timm's, test_weights.py)."""
    entry = sknet.get_model_entry(name)
    own = {"cifar": 4, "mini": 8}.get(entry.family, 32)
    torch.manual_seed(0)
    a = randomize_bn(sknet.create_model(name))
    torch.manual_seed(0)
    b = randomize_bn(sknet.create_model(name, output_stride=own))
    assert a.output_stride == b.output_stride == own
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.randn(2, *entry.input_size[:1], 32, 32)
    assert torch.equal(_logits(a, x), _logits(b, x))
    configured = {d for m in a.modules() if isinstance(m, sknet.SKConv) for _, d, _ in m.branches}
    assert {m.dilation[0] for m in a.modules() if isinstance(m, torch.nn.Conv2d)} <= configured | {1}


@pytest.mark.parametrize(
    "name, overrides, size",
    [
        ("resnext26_32x4d", {}, (3, 64, 64)),
        ("sknet26", {"select": "sum"}, (3, 64, 64)),
        ("sknet_mini", {"select": "sum"}, (1, 32, 32)),
        ("sknet29", {"select": "sum"}, (3, 16, 16)),
    ],
)
def test_dilated_network_is_the_same_function_on_a_denser_grid(name, overrides, size):
    """Why the SK branch dilations multiply (docs/architecture.md): where nothing pools over the
    whole map (no SK attention, no SE), a dilated network's stage outputs, subsampled, are the
    original network's exactly. Adding to the branch dilations instead would break this."""
    ref = randomize_bn(sknet.create_model(name, **overrides)).eval()
    x = torch.randn(2, *size)
    with torch.no_grad():
        want = list(sknet.features(ref)(x).values())
    strides = [d["reduction"] for d in ref.stage_info]
    for output_stride in strides[:-1]:
        model = sknet.create_model(name, output_stride=output_stride, **overrides).eval()
        model.load_state_dict(ref.state_dict())
        with torch.no_grad():
            got = list(sknet.features(model)(x).values())
        assert [d["reduction"] for d in model.stage_info] == [min(s, output_stride) for s in strides]
        for g, w in zip(got, want):
            step = g.shape[-1] // w.shape[-1]
            torch.testing.assert_close(g[..., ::step, ::step], w, rtol=1e-4, atol=1e-5 * w.abs().max().item())


def test_mini_and_cifar_output_strides():
    mini = sknet.create_model("sknet_mini", output_stride=4)
    feats = sknet.features(mini)(torch.randn(2, 1, 28, 28))
    assert sknet.features(mini).strides == [2, 4, 4]
    assert [tuple(f.shape) for f in feats.values()] == [(2, 64, 14, 14), (2, 128, 7, 7), (2, 256, 7, 7)]
    assert _branch_dilations(mini.layer3[0]) == [1, 2]  # one unit per stage: the first keeps dilation 1
    deep = sknet.create_model("sknet_mini", output_stride=2, layers=(1, 2, 2))
    assert sknet.features(deep).strides == [2, 2, 2]
    assert _branch_dilations(deep.layer2[1]) == [2, 4] and _branch_dilations(deep.layer3[1]) == [4, 8]
    cifar = sknet.create_model("resnext29_16x32d", output_stride=1)
    backbone = sknet.features(cifar)
    assert backbone.strides == [1, 1, 1]
    assert [tuple(f.shape) for f in backbone(torch.randn(1, 3, 8, 8)).values()] == [
        (1, 256, 8, 8),
        (1, 512, 8, 8),
        (1, 1024, 8, 8),
    ]


@pytest.mark.parametrize(
    "name, bad, valid",
    [
        ("sknet50", 12, "[4, 8, 16, 32]"),
        ("sknet50", 64, "[4, 8, 16, 32]"),
        ("senet26", 2, "[4, 8, 16, 32]"),
        ("sknet29", 8, "[1, 2, 4]"),
        ("sknet_mini", 1, "[2, 4, 8]"),
        ("sknet_mini", 32, "[2, 4, 8]"),
        ("skresnet18", "16", "[4, 8, 16, 32]"),
        ("resnext29_16x32d", True, "[1, 2, 4]"),
        ("sknet26", 16.0, "[4, 8, 16, 32]"),
    ],
)
def test_bad_output_stride_lists_the_valid_ones(name, bad, valid):
    with pytest.raises(ValueError, match="output_stride must be one of " + re.escape(valid)):
        sknet.create_model(name, output_stride=bad)


def test_models_without_dilation_refuse_output_stride():
    with pytest.raises(ValueError, match="valid overrides"):
        sknet.create_model("shufflenetv2_x0_5", output_stride=16)
    with pytest.raises(ValueError, match="no output_stride"):
        sknet.segmentation_model("shufflenetv2_x0_5", num_classes=3, output_stride=16)
    with pytest.raises(ValueError, match="head must be one of"):
        sknet.segmentation_model("sknet_mini", num_classes=3, head="unet")


# --------------------------------------------------------------------------- other libraries' dilation


@pytest.mark.parametrize("output_stride, replace", [(16, [False, False, True]), (8, [False, True, True])])
def test_torchvision_replace_stride_with_dilation_gives_the_same_logits(tmp_path, output_stride, replace):
    torchvision = pytest.importorskip("torchvision")
    ref = randomize_bn(torchvision.models.resnext50_32x4d(weights=None, replace_stride_with_dilation=replace))
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    ours = sknet.create_model("resnext50_32x4d", output_stride=output_stride, weights=str(tmp_path / "tv.pth"))
    x = torch.randn(2, 3, 64, 64)
    ref_out = _logits(ref, x)
    assert ref_out.abs().max() > 0.1
    assert (_logits(ours, x) - ref_out).abs().max() <= 1e-4


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("name, timm_name", [("sknet50", "skresnext50_32x4d"), ("skresnet18", "skresnet18")])
def test_timm_output_stride_gives_the_same_logits(tmp_path, name, timm_name, output_stride):
    """timm's SelectiveKernel multiplies its branch dilations by the unit's dilation, as ours does."""
    timm = pytest.importorskip("timm")
    ref = randomize_bn(timm.create_model(timm_name, pretrained=False, output_stride=output_stride)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # logits of order 10, so that the tolerance means something
        ref.fc.weight.mul_(10 / ref(x).abs().max())
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    ours = sknet.create_model(name, output_stride=output_stride, weights=str(tmp_path / "timm.pth"))
    assert ours.feature_info == [
        dict(num_chs=d["num_chs"], reduction=d["reduction"], module=d["module"]) for d in ref.feature_info
    ]
    ref_out = _logits(ref, x)
    assert ref_out.abs().max() > 5
    assert (_logits(ours, x) - ref_out).abs().max() <= 1e-4


def test_timm_features_only_reads_the_new_strides():
    timm = pytest.importorskip("timm")
    import sknet.timm  # noqa: F401  registers our models in timm

    model = timm.create_model("sknet26", features_only=True, output_stride=16)  # the stem's level, then the stages
    assert model.feature_info.reduction() == [2, 4, 8, 16, 16]
    maps = model(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in maps] == [(32, 32), (16, 16), (8, 8), (4, 4), (4, 4)]


# --------------------------------------------------------------------------- segmentation models


def test_deeplabv3_sknet50_trains_a_step_and_predicts_at_input_size():
    from torchvision.models.segmentation import DeepLabV3

    model = sknet.segmentation_model("sknet50", num_classes=21, output_stride=8, head="deeplabv3")
    assert isinstance(model, DeepLabV3) and model.aux_classifier is None
    assert model.backbone.strides == [8] and model.backbone.out_channels_list == [2048]
    assert model.classifier[0].convs[1][0].dilation == (12, 12)  # torchvision's ASPP rates at output stride 8
    x, target = torch.randn(2, 3, 64, 64), torch.randint(0, 21, (2, 64, 64))
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    out = model.train()(x)
    assert list(out) == ["out"] and out["out"].shape == (2, 21, 64, 64)
    loss = F.cross_entropy(out["out"], target)
    assert torch.isfinite(loss)
    loss.backward()
    no_grad = [n for n, p in model.backbone.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"no gradient reaches {no_grad[:5]}"
    optimizer.step()
    assert all(not torch.equal(p, before[n]) for n, p in model.backbone.named_parameters())
    with torch.no_grad():
        pred = model.eval()(torch.randn(1, 3, 72, 56))["out"]
    assert pred.shape == (1, 21, 72, 56) and torch.isfinite(pred).all()


def test_fcn_with_aux_head_at_output_stride_16():
    from torchvision.models.segmentation import FCN

    model = sknet.segmentation_model("sknet26", num_classes=5, output_stride=16, head="fcn", aux=True)
    assert isinstance(model, FCN)
    assert model.backbone.strides == [16, 16] and model.backbone.out_channels_list == [1024, 2048]
    x, target = torch.randn(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
    out = model.train()(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"out": (2, 5, 64, 64), "aux": (2, 5, 64, 64)}
    (F.cross_entropy(out["out"], target) + 0.5 * F.cross_entropy(out["aux"], target)).backward()
    assert model.aux_classifier[0].weight.grad.abs().sum() > 0
    assert model.backbone.layer1[0].conv2.attn.fc_select.weight.grad.abs().sum() > 0


def test_segmentation_backbone_starts_from_classification_weights(tmp_path):
    classifier = randomize_bn(sknet.create_model("sknet_mini"))
    path = sknet.save_weights(classifier, tmp_path / "mini.safetensors")
    model = sknet.segmentation_model("sknet_mini", num_classes=3, output_stride=4, weights=path)
    got = model.backbone.state_dict()
    want = {k: v for k, v in classifier.state_dict().items() if not k.startswith("fc.")}
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert model.backbone.strides == [4]
    assert model.classifier[0].convs[1][0].dilation == (24, 24)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 28, 28))["out"].shape == (2, 3, 28, 28)
    # A model with fixed strides builds at its own output stride.
    light = sknet.segmentation_model("shufflenetv2_x0_5", num_classes=3, output_stride=None, head="fcn")
    assert light.backbone.strides == [32]
    with torch.no_grad():
        assert light.eval()(torch.randn(1, 3, 64, 64))["out"].shape == (1, 3, 64, 64)


def test_dilation_costs_multiply_adds_not_parameters():
    plain = sknet.complexity(sknet.create_model("sknet50"), (3, 64, 64))
    os8 = sknet.complexity(sknet.create_model("sknet50", output_stride=8), (3, 64, 64))
    assert os8.params == plain.params and os8.macs > 3 * plain.macs
