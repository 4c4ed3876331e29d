"""Stage outputs for detection: documented shapes, torchvision's FPN / detectors and feature extraction."""

import pytest
import torch

import sknet
from conftest import randomize_bn

FAST = {"resnext26_32x4d", "senet26", "sknet26", "shufflenetv2_x0_5", "shufflenetv2_x0_5_se", "shufflenetv2_x0_5_sk"}
IMAGENET_STYLE = [
    n if n in FAST else pytest.param(n, marks=pytest.mark.slow)
    for n in sknet.list_models()
    if sknet.get_model_entry(n).family in ("imagenet", "light")
]

# The channels docs/deploy.md and sknet/features.py document at strides 4, 8, 16, 32.
DOCUMENTED_CHANNELS = {
    "resnext50_wide": (272, 544, 1088, 2176),
    "shufflenetv2_x0_5": (24, 48, 96, 192),
    "shufflenetv2_x1_0": (24, 116, 232, 464),
    "mobilenetv2_100": (24, 32, 96, 320),
}


def documented_channels(name: str) -> tuple[int, ...]:
    if name in DOCUMENTED_CHANNELS:
        return DOCUMENTED_CHANNELS[name]
    if name.startswith("shufflenetv2"):
        return DOCUMENTED_CHANNELS[name.removesuffix("_se").removesuffix("_sk")]
    if name.startswith("mobilenetv2"):
        return DOCUMENTED_CHANNELS[name.removesuffix("_sk")]
    return (256, 512, 1024, 2048)  # every ResNeXt / SENet / SKNet


@pytest.mark.parametrize("name", IMAGENET_STYLE)
def test_stage_outputs_have_the_documented_shapes(name):
    model = randomize_bn(sknet.create_model(name)).eval()
    backbone = sknet.features(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = backbone(x)
        logits = model(x)
    shapes = [tuple(f.shape) for f in feats.values()]
    expected = [(2, c, 64 // s, 64 // s) for c, s in zip(documented_channels(name), (4, 8, 16, 32))]
    assert shapes == expected
    assert backbone.strides == [4, 8, 16, 32] and backbone.out_channels_list == list(documented_channels(name))
    if hasattr(model, "layer4"):  # the last stage is what the classifier sees: same computation as forward
        with torch.no_grad():
            assert torch.equal(model.forward_head(feats["layer4"]), logits)


def test_subset_of_stages_and_shared_names():
    model = sknet.create_model("sknet26")
    backbone = sknet.features(model, out_indices=(1, 3))
    assert list(backbone(torch.randn(1, 3, 64, 64))) == ["layer2", "layer4"]
    assert backbone.strides == [8, 32]
    # Same module names as the model, minus the head: classifier checkpoints load with strict=False.
    keys = set(backbone.state_dict())
    assert keys == {k for k in model.state_dict() if not k.startswith("fc.")}
    assert backbone.layer1[0].conv2 is model.layer1[0].conv2
    early = sknet.features(model, out_indices=(0,))
    assert not hasattr(early, "layer2"), "stages after the last returned one must not run"
    with pytest.raises(ValueError, match="out_indices"):
        sknet.features(model, out_indices=(4,))
    with pytest.raises(ValueError, match="no stage outputs"):
        sknet.features(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("name", ["sknet26", "shufflenetv2_x0_5_sk"])
def test_torchvision_create_feature_extractor_gives_the_same_maps(name):
    from torchvision.models.feature_extraction import create_feature_extractor

    model = randomize_bn(sknet.create_model(name)).eval()
    ours = sknet.features(model)
    nodes = {n: n for n in ours.return_layers}
    fx = create_feature_extractor(model, nodes, tracer_kwargs={"leaf_modules": sknet.fx_leaf_modules()})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = ours(x), fx.eval()(x)
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k])
    fx.train()(x).popitem()[1].mean().backward()  # the training-mode graph traces and runs too
    attn = next(m for m in model.modules() if isinstance(m, sknet.SKAttention))
    assert attn.fc_reduce.weight.grad.abs().sum() > 0


def _targets():
    return [
        dict(boxes=torch.tensor([[4.0, 6.0, 40.0, 50.0]]), labels=torch.tensor([1])),
        dict(boxes=torch.tensor([[10.0, 10.0, 30.0, 60.0], [0.0, 0.0, 20.0, 20.0]]), labels=torch.tensor([2, 1])),
    ]


def _train_and_infer(detector, model):
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    detector.train()
    losses = detector(images, _targets())
    loss = sum(losses.values())
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    for name, p in model.named_parameters():  # the classifier is not part of the backbone
        assert (p.grad is None) == name.startswith("fc."), f"{name}: gradient does not reach the backbone"
    assert model.conv1.weight.grad.abs().sum() > 0
    assert model.layer1[0].conv2.attn.fc_select.weight.grad.abs().sum() > 0
    detector.eval()
    with torch.no_grad():
        out = detector(images)
    assert len(out) == 2
    for det in out:
        assert det["boxes"].shape[1] == 4 and det["boxes"].shape[0] == det["scores"].shape[0] == det["labels"].shape[0]
        assert torch.isfinite(det["boxes"]).all()


def test_faster_rcnn_with_sknet50_fpn_trains_and_infers():
    from torchvision.models.detection import FasterRCNN

    model = sknet.create_model("sknet50")
    detector = FasterRCNN(
        sknet.fpn_backbone(model),
        num_classes=3,
        min_size=64,
        max_size=64,
        rpn_pre_nms_top_n_train=64,
        rpn_post_nms_top_n_train=32,
        rpn_pre_nms_top_n_test=64,
        rpn_post_nms_top_n_test=32,
        rpn_batch_size_per_image=32,
        box_batch_size_per_image=16,
        box_detections_per_img=10,
    )
    _train_and_infer(detector, model)


def test_retinanet_with_sk_shufflenet_fpn_trains_and_infers():
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    model = sknet.create_model("shufflenetv2_x0_5_sk")
    backbone = sknet.fpn_backbone(model, 64, out_indices=(1, 2, 3), extra_blocks=LastLevelP6P7(64, 64))
    sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in (16, 32, 64, 128, 256))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    detector = RetinaNet(
        backbone, num_classes=3, min_size=64, max_size=64, anchor_generator=anchors, topk_candidates=50
    )
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    detector.train()
    losses = detector(images, _targets())
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    assert model.stage2[0].branch2[3].attn.fc_select.weight.grad.abs().sum() > 0
    assert model.conv1.conv.weight.grad.abs().sum() > 0
    assert model.conv5.conv.weight.grad is None, "conv5 is head, not backbone"
    detector.eval()
    with torch.no_grad():
        out = detector(images)
    assert len(out) == 2 and all(d["boxes"].shape[1] == 4 for d in out)


def test_mini_and_cifar_models_return_their_stages_too():
    mini = sknet.features(sknet.create_model("sknet_mini"))
    assert mini.strides == [2, 4, 8]
    assert [tuple(f.shape) for f in mini(torch.randn(2, 1, 28, 28)).values()] == [
        (2, 64, 14, 14),
        (2, 128, 7, 7),
        (2, 256, 4, 4),
    ]
    cifar = sknet.features(sknet.create_model("resnext29_16x32d"), out_indices=(0,))
    assert cifar.strides == [1] and tuple(cifar(torch.randn(1, 3, 8, 8))["layer1"].shape) == (1, 256, 8, 8)


def test_out_indices_in_any_order_give_the_stages_in_forward_order():
    model = randomize_bn(sknet.create_model("sknet_mini")).eval()
    x = torch.randn(2, 1, 28, 28)
    backbone = sknet.features(model, out_indices=(2, 0))
    with torch.no_grad():
        feats, every = backbone(x), sknet.features(model)(x)
    assert list(feats) == ["layer1", "layer3"]
    assert [tuple(f.shape[2:]) for f in feats.values()] == [(14, 14), (4, 4)]  # strides 2 and 8 of 28 (rounded up)
    assert backbone.strides == [2, 8] and [d["module"] for d in backbone.feature_info] == ["layer1", "layer3"]
    assert all(torch.equal(f, every[k]) for k, f in feats.items())


def test_repeated_out_indices_are_refused():
    with pytest.raises(ValueError, match="distinct"):
        sknet.features(sknet.create_model("sknet_mini"), out_indices=(1, 1))


def test_video_models_give_the_strides_of_height_and_width():
    """The 3-D stem halves H and W but not T: every level's stride (the stem's included) is that of
    H and W, as the maps show."""
    with torch.device("meta"):
        model = sknet.create_model("resnext50_32x4d_3d")
        _, maps = model.forward_intermediates(torch.empty(1, 3, 8, 64, 64))
    assert len(maps) == len(model.feature_info) == 5
    for d, m in zip(model.feature_info, maps):
        assert tuple(m.shape[1:2]) + tuple(m.shape[-2:]) == (d["num_chs"], 64 // d["reduction"], 64 // d["reduction"])
    assert [64 // m.shape[-1] for m in maps] == [2, 2, 4, 8, 16]  # the stem's stride 2, no max pool
