"""timm's own functions on our models after ``import sknet.timm`` (timm is a test extra)."""

from __future__ import annotations

import copy
import importlib
import math
import subprocess
import sys
import warnings

import pytest
import torch

import sknet
from conftest import assert_close_rel, randomize_bn
from test_package import PACKAGE, import_graph

timm = pytest.importorskip("timm")
import sknet.timm as sktimm  # noqa: E402  (after the skip: needs timm)

INPUT = {"sknet50": (3, 64, 64), "sknet_mini": (1, 28, 28), "shufflenetv2_x0_5_sk": (3, 64, 64)}
NAMES = ["sknet50", "sknet_mini"]  # the two; ShuffleNetV2 (a stem stage, a neck) where it differs


def x_for(name: str, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *INPUT[name])


def test_importing_sknet_does_not_import_timm():
    code = "import sknet, sys; assert 'timm' not in sys.modules; import sknet.timm; assert 'timm' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    graph = import_graph(PACKAGE)
    assert not [m for m, edges in graph.items() if "sknet.timm" in edges], "only users import sknet.timm"


def test_every_model_is_registered_unless_timm_has_the_name():
    ours = set(sknet.list_models())
    taken = {"resnext50_32x4d", "resnext101_32x4d", "mobilenetv2_100"}  # timm's torchvision-style ResNeXts, MobileNetV2
    assert taken <= ours and not taken & set(sktimm.REGISTERED)
    images = {n for n in ours if len(sknet.get_model_entry(n).input_size) == 3}
    assert not set(timm.list_models("*_[13]d")) & ours - images  # the 1-D and 3-D models stay ours alone
    assert set(sktimm.REGISTERED) == {n for n in images if timm.models.model_entrypoint(n).__module__ == "sknet.timm"}
    assert set(sktimm.REGISTERED) >= {"sknet50", "sknet_mini", "sknet29", "shufflenetv2_x1_0_sk", "senet50"}
    assert "mobilenetv2_100_sk" in sktimm.REGISTERED
    assert set(timm.list_models("sknet*")) >= {"sknet26", "sknet50", "sknet101", "sknet29", "sknet_mini"}
    for name in ("skresnext50_32x4d", "resnext50_32x4d", *(taken & ours)):
        assert timm.models.model_entrypoint(name).__module__.startswith("timm.models.")
    with torch.device("meta"):
        assert type(timm.create_model("skresnext50_32x4d")) is timm.models.ResNet
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # timm warns when a name is registered again
        importlib.reload(sktimm)
    assert set(sktimm.REGISTERED) >= {"sknet50", "sknet_mini"}


def test_pretrained_cfgs_describe_each_model():
    for name in sktimm.REGISTERED:
        entry = sknet.get_model_entry(name)
        with torch.device("meta"):  # no memory, no initialisation cost
            model = timm.create_model(name)
        cfg = model.pretrained_cfg
        assert cfg["input_size"] == entry.input_size and cfg["num_classes"] == entry.num_classes == model.num_classes
        assert len(cfg["mean"]) == len(cfg["std"]) == entry.input_size[0]
        assert cfg["interpolation"] == "bilinear" and cfg["crop_pct"] == (0.875 if entry.input_size[1] == 224 else 1.0)
        assert not cfg["url"] and not cfg.get("hf_hub_id") and not cfg.get("file")
        conv = model.get_submodule(cfg["first_conv"])
        assert isinstance(conv, torch.nn.Conv2d) and conv.in_channels == entry.input_size[0]
        fc = model.get_submodule(cfg["classifier"])
        assert isinstance(fc, torch.nn.Linear) and fc.out_features == entry.num_classes
    imagenet, cifar, mini = (timm.models.get_pretrained_cfg(n) for n in ("sknet50", "sknet29", "sknet_mini"))
    assert imagenet.mean == sknet.data.NORMALIZATION["imagenet"][0]
    assert cifar.std == sknet.data.NORMALIZATION["cifar10"][1]
    assert (mini.mean, mini.std) == ((0.2860,), (0.3530,))


@pytest.mark.parametrize("name", NAMES)
def test_create_model_with_num_classes(name):
    model = timm.create_model(name, num_classes=10)
    ours = sknet.create_model(name, num_classes=10)
    assert type(model) is type(ours) and model.num_classes == 10
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    assert model.eval()(x_for(name)).shape == (2, 10)


def level_maps(model, levels, x) -> list[torch.Tensor]:
    """The maps of feature levels ``levels`` computed without timm: the stem's (level 0) by running
    the stem's modules up to its output, the stages' (1 on) by :func:`sknet.features`."""
    maps = []
    for i in levels:
        if i == 0:
            y = x
            for name in model.stem_modules[: model.stem_modules.index(model.feature_info[0]["module"]) + 1]:
                y = getattr(model, name)(y)
            maps.append(y)
        else:
            maps.append(sknet.features(model, (i - 1,))(x).popitem()[1])
    return maps


@pytest.mark.parametrize(
    "name, out_indices",
    [("sknet50", (2, 4)), ("sknet50", (0, 1)), ("sknet_mini", (1, 3)), ("shufflenetv2_x0_5_sk", (0, 3))],
)
def test_features_only_is_timms_wrapper_with_our_levels(name, out_indices):
    from timm.models._features import FeatureGetterNet

    ours = randomize_bn(sknet.create_model(name)).eval()
    feats = timm.create_model(name, features_only=True, out_indices=out_indices).eval()
    assert isinstance(feats, FeatureGetterNet)
    info = [ours.feature_info[i] for i in out_indices]
    assert ours.feature_info[1:] == ours.stage_info and ours.feature_info[0]["module"] in ours.stem_modules
    assert feats.feature_info.channels() == [d["num_chs"] for d in info]
    assert feats.feature_info.reduction() == [d["reduction"] for d in info]
    assert feats.feature_info.module_name() == [d["module"] for d in info]
    x = x_for(name)
    c, h, w = INPUT[name]
    later = [d["module"] for d in ours.feature_info[max(out_indices) + 1 :] if d["module"] not in ours.stem_modules]
    loaded = feats.model.load_state_dict(ours.state_dict(), strict=False)
    assert not loaded.missing_keys and {k.split(".")[0] for k in loaded.unexpected_keys} == {
        *later,
        *ours.neck_modules,
        "fc",
    }
    with torch.no_grad():
        maps = feats(x)
        expected = level_maps(ours, out_indices, x)
    assert [tuple(m.shape) for m in maps] == [
        (2, ch, math.ceil(h / r), math.ceil(w / r))
        for ch, r in zip(feats.feature_info.channels(), feats.feature_info.reduction())
    ]
    assert all(torch.equal(a, b) for a, b in zip(maps, expected))
    assert all(len(getattr(feats.model, m)) == 0 for m in later), "stages after the last returned one are pruned"
    every = timm.create_model(name, features_only=True)  # default: every level
    assert every.feature_info.reduction() == [d["reduction"] for d in ours.feature_info]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_pretrained_loads_a_local_file(name, suffix, tmp_path):
    ours = randomize_bn(sknet.create_model(name))
    path = tmp_path / f"w{suffix}"
    if suffix == ".pt":  # a training checkpoint holds the state dict under "model"
        torch.save({"model": ours.state_dict(), "config": {"model": name}}, path)
    else:
        sknet.save_weights(ours, path)
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert model.pretrained_cfg["file"] == str(path)
    theirs = model.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in ours.state_dict().items())
    new_head = timm.create_model(name, pretrained=True, num_classes=3, pretrained_cfg_overlay=dict(file=str(path)))
    assert new_head.fc.out_features == 3 and torch.equal(new_head.conv1.weight, ours.conv1.weight)
    feats = timm.create_model(name, pretrained=True, features_only=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert torch.equal(feats.model.layer1[0].conv2.paths[0].conv.weight, ours.layer1[0].conv2.paths[0].conv.weight)
    if name == "sknet_mini":  # timm adapts the first conv to other input channels
        rgb = timm.create_model(name, pretrained=True, in_chans=3, pretrained_cfg_overlay=dict(file=str(path)))
        assert rgb.conv1.in_channels == 3 and torch.equal(rgb.layer1[0].conv1.weight, ours.layer1[0].conv1.weight)


def test_pretrained_without_a_file_never_downloads():
    with pytest.raises(RuntimeError, match="No pretrained weights exist"):
        timm.create_model("resnext_mini", pretrained=True)  # a model without published weights


@pytest.mark.parametrize("name", NAMES)
def test_data_config_and_transform(name):
    from PIL import Image

    model = timm.create_model(name)
    cfg = timm.data.resolve_data_config(model=model)
    size, mean, std = {
        "sknet50": ((3, 224, 224), *sknet.data.NORMALIZATION["imagenet"]),
        "sknet_mini": ((1, 28, 28), *sknet.data.NORMALIZATION["fashion-mnist"]),
    }[name]
    assert (cfg["input_size"], cfg["mean"], cfg["std"]) == (size, mean, std)
    assert cfg["interpolation"] == "bilinear" and cfg["crop_pct"] == (0.875 if name == "sknet50" else 1.0)
    transform = timm.data.create_transform(**cfg)
    image = Image.new("RGB", (300, 400), (128,) * 3) if size[0] == 3 else Image.new("L", (28, 28), 128)
    x = transform(image)
    assert tuple(x.shape) == size
    assert torch.allclose(x[:, 0, 0], (128 / 255 - torch.tensor(mean)) / torch.tensor(std), atol=1e-5)
    if name == "sknet50":  # our evaluation protocol: resize the short side to 256, centre crop 224
        resize = next(t for t in transform.transforms if type(t).__name__ == "Resize")
        assert resize.size == 256


@pytest.mark.parametrize("name", NAMES)
def test_classifier_and_head(name):
    model = randomize_bn(timm.create_model(name)).eval()
    x = x_for(name)
    assert model.get_classifier() is model.fc
    with torch.no_grad():
        feats = model.forward_features(x)
        assert torch.equal(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
        model.reset_classifier(5)
        assert model(x).shape == (2, 5) and model.num_classes == 5 and model.pretrained_cfg["num_classes"] != 5
        model.reset_classifier(0)
        assert isinstance(model.fc, torch.nn.Identity) and model.num_classes == 0
        assert model(x).shape == (2, model.num_features)
    with pytest.raises(ValueError, match="avg"):
        model.reset_classifier(5, global_pool="max")


@pytest.mark.parametrize("name", [*NAMES, "shufflenetv2_x0_5_sk"])
def test_forward_intermediates(name):
    model = randomize_bn(timm.create_model(name)).eval()
    x = x_for(name)
    info = model.feature_info
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        c, h, w = INPUT[name]
        assert [tuple(m.shape) for m in maps] == [
            (2, d["num_chs"], math.ceil(h / d["reduction"]), math.ceil(w / d["reduction"])) for d in info
        ]
        assert len(maps) == len(info) == len(model.forward_intermediates(x, intermediates_only=True))
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(last_two, maps[-2:]))
        early, (first,) = model.forward_intermediates(x, indices=[0], stop_early=True)
        assert torch.equal(early, maps[0]) and torch.equal(first, maps[0])
        (last,) = model.forward_intermediates(x, indices=[-1], intermediates_only=True)
        assert torch.equal(last, maps[-1])
    with pytest.raises(ValueError, match="feature level indices"):
        model.forward_intermediates(x, indices=[len(info)])


@pytest.mark.parametrize("name", NAMES)
def test_grad_checkpointing_gives_the_same_gradients_and_statistics(name, monkeypatch):
    import sknet.models.backbone as backbone

    calls = []
    real = backbone.checkpoint
    monkeypatch.setattr(backbone, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    plain = timm.create_model(name).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing()
    x = torch.randn(2, 3, 32, 32) if name == "sknet50" else x_for(name)  # sknet50: 1x1 maps in layer4, still BN-able
    plain(x).square().sum().backward()
    assert not calls
    ckpt(x).square().sum().backward()
    assert len(calls) == sum(len(getattr(ckpt, d["module"])) for d in ckpt.stage_info), "one checkpoint per unit"
    for (k, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.allclose(q.grad, p.grad, rtol=1e-6, atol=1e-6 * p.grad.abs().max().item()), k
    for (k, a), b in zip(plain.named_buffers(), ckpt.buffers()):  # BN statistics moved once, not twice
        assert torch.equal(a, b), k
    with torch.no_grad():
        ckpt(x)
    ckpt.eval()(x)
    assert len(calls) == sum(len(getattr(ckpt, d["module"])) for d in ckpt.stage_info), "training with grad only"


def test_group_matcher_groups_every_parameter():
    model = timm.create_model("sknet_mini")
    groups = timm.models.group_parameters(model, model.group_matcher())
    assert len(groups) == 1 + 3 + 1  # stem, one per unit, classifier
    assert sum(len(g) for g in groups.values()) == len(list(model.parameters()))
    shuffle = timm.create_model("shufflenetv2_x0_5_sk")
    coarse = timm.models.group_parameters(shuffle, shuffle.group_matcher(coarse=True))
    assert len(coarse) == 1 + 3 + 1  # stem, stages (conv5 joins the last, as timm's head convs do), classifier


# --------------------------------------------------------------------------- a drop-in for timm's own models

OURS_AND_TIMMS = [("sknet50", "skresnext50_32x4d"), ("skresnet18", "skresnet18"), ("senet50", "seresnext50_32x4d")]


@pytest.mark.parametrize("name, timm_name", [*OURS_AND_TIMMS, ("mobilenetv2_100_sk", "mobilenetv2_100")])
def test_feature_levels_are_timms(name, timm_name):
    """The levels features_only counts (the stem's, then the stages) are those of timm's own network of
    that family: same channels and strides, and for the ResNet family the same module names."""
    ours = timm.create_model(name, features_only=True, out_indices=(1, 2, 3, 4))
    with torch.device("meta"):
        theirs = timm.create_model(timm_name, features_only=True, out_indices=(1, 2, 3, 4))
        every = timm.create_model(timm_name, features_only=True)
    assert ours.feature_info.channels() == theirs.feature_info.channels()
    assert ours.feature_info.reduction() == theirs.feature_info.reduction() == [4, 8, 16, 32]
    assert timm.create_model(name, features_only=True).feature_info.reduction() == every.feature_info.reduction()
    if name != "mobilenetv2_100_sk":  # timm's EfficientNet family names its levels blocks.N
        assert ours.feature_info.module_name() == theirs.feature_info.module_name()


@pytest.mark.parametrize("name, timm_name", OURS_AND_TIMMS[:2])
def test_features_only_maps_equal_timms_on_its_weights(name, timm_name, tmp_path):
    """Swapping timm's network for ours in a detection codebase: the same call, timm's weights,
    the same maps at every level (the stem's included)."""
    ref = randomize_bn(timm.create_model(timm_name)).eval()
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    call = dict(features_only=True, out_indices=(0, 1, 2, 3, 4))
    theirs = timm.create_model(
        timm_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "timm.pth")), **call
    )
    ours = timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "timm.pth")), **call
    )
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got, want = ours.eval()(x), theirs.eval()(x)
    assert len(got) == len(want) == 5
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * w.abs().max().item())


@pytest.mark.parametrize("name", ["sknet50", "shufflenetv2_x0_5_sk"])
def test_symbolic_tracing_records_the_sk_equations(name):
    """torch.fx traces the whole network, SK units included (their reference equations), and the
    graph computes the model's function; torchvision's feature extractor needs no leaf modules, in
    eval and in train mode (where the attention's batch statistics reach the gradient)."""
    from torchvision.models.feature_extraction import create_feature_extractor

    model = randomize_bn(sknet.create_model(name)).eval()
    x = torch.randn(2, 3, 64, 64)
    graph = torch.fx.symbolic_trace(model)
    assert not any(
        n.op == "call_module" and isinstance(model.get_submodule(n.target), sknet.SKConv) for n in graph.graph.nodes
    )
    reference = copy.deepcopy(model)
    for m in reference.modules():
        if isinstance(m, sknet.SKConv):
            m.impl = "reference"
    with torch.no_grad():
        assert_close_rel(graph(x), reference(x))
    nodes = {n: n for n in sknet.features(model).return_layers}
    fx = create_feature_extractor(model, nodes)
    with torch.no_grad():
        for (k, a), (k2, b) in zip(sknet.features(model)(x).items(), fx.eval()(x).items()):
            assert k == k2
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())  # reference vs fast
    twin = reference.train()  # the same equations, eager
    fx.train()(x).popitem()[1].square().mean().backward()
    list(sknet.features(twin)(x).values())[-1].square().mean().backward()
    attn, attn_twin = (next(m for m in net.modules() if isinstance(m, sknet.SKAttention)) for net in (model, twin))
    assert attn.fc_reduce.weight.grad.abs().sum() > 0
    grad, grad_twin = attn.fc_reduce.weight.grad, attn_twin.fc_reduce.weight.grad
    assert (grad - grad_twin).norm() <= 1e-4 * grad_twin.norm()


def test_device_and_dtype_as_timm_takes_them():
    model = timm.create_model("sknet_mini", device="meta", dtype=torch.bfloat16)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with pytest.raises(TypeError, match="unexpected keyword"):
        timm.create_model("sknet_mini", no_such_argument=1)


def test_global_pool_off_returns_the_last_map():
    model = timm.create_model("sknet_mini", num_classes=0, global_pool="").eval()
    x = x_for("sknet_mini")
    with torch.no_grad():
        assert torch.equal(model(x), model.forward_features(x))
    with pytest.raises(ValueError, match="goes with num_classes=0"):
        timm.create_model("sknet_mini", num_classes=10, global_pool="")
    with pytest.raises(ValueError, match="needs pooled features"):
        model.reset_classifier(10, "")
    model.reset_classifier(3)  # a classifier pools again, as timm's ResNet does by default
    with torch.no_grad():
        assert torch.equal(model(x), model.fc(model.forward_features(x).mean((2, 3))))


# --------------------------------------------------------------------------- pruning, head, cfg against timm's models


@pytest.mark.parametrize(
    "name, timm_name, indices, prune_norm, prune_head",
    [
        ("skresnet18", "resnet18", [1, 2, 3], False, True),
        ("skresnet18", "resnet18", [0], False, False),
        ("skresnet18", "resnet18", 1, False, False),
        ("mobilenetv2_100_sk", "mobilenetv2_100", [-1], False, True),
        ("mobilenetv2_100_sk", "mobilenetv2_100", [-1], True, False),
        ("mobilenetv2_100_sk", "mobilenetv2_100", [-1], False, False),
        ("mobilenetv2_100_sk", "mobilenetv2_100", [1, 3], False, False),
    ],
)
def test_prune_intermediate_layers_leaves_what_timms_model_leaves(name, timm_name, indices, prune_norm, prune_head):
    """After pruning, the features end where timm's own network of the family ends them (its conv_head
    goes with the head or the norm, the widths follow the last kept level), and the classifier goes
    where timm's goes."""
    x = torch.empty(2, 3, 64, 64, device="meta")
    with torch.device("meta"):
        ours, theirs = sknet.create_model(name), timm.create_model(timm_name)
    assert ours.head_hidden_size == theirs.head_hidden_size
    kept = [m.prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=prune_head) for m in (ours, theirs)]
    assert kept[0] == kept[1]
    assert (ours.num_features, ours.head_hidden_size, ours.num_classes) == (
        theirs.num_features,
        theirs.head_hidden_size,
        theirs.num_classes,
    )
    assert ours.forward_features(x).shape == theirs.forward_features(x).shape
    (final, maps), (final_t, maps_t) = (m.forward_intermediates(x, indices) for m in (ours, theirs))
    assert final.shape == final_t.shape and [m.shape for m in maps] == [m.shape for m in maps_t]
    assert ours(x).shape == theirs(x).shape  # pruned: the last map, unpooled, as timm's returns it


def test_group_matcher_groups_as_timms_own_networks():
    """Per unit (and per stage with ``coarse``) as timm groups its SK-ResNet-18, whose parameters ours
    has: the same groups, in the same order, holding the same number of weights; MobileNetV2's
    conv_head joins the last unit's group as in timm's."""
    from timm.models import group_parameters

    def sizes(model, coarse):
        params = dict(model.named_parameters())
        groups = group_parameters(model, model.group_matcher(coarse=coarse))
        return [sum(params[n].numel() for n in names) for _, names in sorted(groups.items())]

    with torch.device("meta"):
        ours, theirs = sknet.create_model("skresnet18"), timm.create_model("skresnet18")
        mobile, timm_mobile = sknet.create_model("mobilenetv2_100_sk"), timm.create_model("mobilenetv2_100")
    for coarse in (False, True):
        assert sizes(ours, coarse) == sizes(theirs, coarse)
    assert len(sizes(ours, False)) == 1 + 8 + 1  # stem, 2 + 2 + 2 + 2 units, classifier
    assert len(sizes(mobile, False)) == len(sizes(timm_mobile, False)) == 1 + 17 + 1


@pytest.mark.parametrize("training", [False, True])
def test_reset_classifier_gives_the_new_modules_the_models_mode(training):
    model = timm.create_model("sknet_mini", num_classes=0, global_pool="").train(training)
    model.reset_classifier(3, "avg")  # a new pooling and a new classifier
    assert {m.training for m in model.modules()} == {training}


def test_reset_classifier_makes_the_classifier_on_the_models_device_and_dtype():
    model = timm.create_model("sknet_mini", dtype=torch.float64).eval()
    model.reset_classifier(3)
    assert model.fc.weight.dtype == model.fc.bias.dtype == torch.float64
    with torch.no_grad():
        assert model(x_for("sknet_mini").double()).dtype == torch.float64
    meta = timm.create_model("sknet_mini", device="meta")
    meta.reset_classifier(3)
    assert {p.device.type for p in meta.parameters()} == {"meta"}


def test_global_pool_avg_keeps_the_classifier():
    model = timm.create_model("sknet_mini", global_pool="avg").eval()
    assert model.num_classes == sknet.get_model_entry("sknet_mini").num_classes and isinstance(
        model.fc, torch.nn.Linear
    )
    x = x_for("sknet_mini")
    with torch.no_grad():
        assert torch.equal(model(x), model.fc(model.forward_features(x).mean((2, 3))))


def test_device_builds_the_model_there_not_on_the_cpu_first():
    """``device`` as timm's models take it: every parameter and buffer is made there (a model built
    on the CPU and moved would cost the CPU memory and initialisation time ``device`` is for)."""
    from torch.nn.modules import module

    made = []
    hooks = [
        module.register_module_parameter_registration_hook(lambda m, n, p: made.append(p.device.type)),
        module.register_module_buffer_registration_hook(lambda m, n, b: made.append(b.device.type)),
    ]
    try:
        timm.create_model("sknet_mini", device="meta")
    finally:
        for h in hooks:
            h.remove()
    assert made and set(made) == {"meta"}


def test_pool_size_is_the_size_of_the_last_feature_map():
    for name in sktimm.REGISTERED:
        with torch.device("meta"):
            model = timm.create_model(name)
            cfg = model.pretrained_cfg
            final = model.forward_features(torch.empty(1, *cfg["input_size"]))
        assert tuple(final.shape[2:]) == cfg["pool_size"], name


def test_timms_fx_feature_extractor_keeps_sk_convs_whole():
    """timm's fx ``features_only`` calls each SKConv as one module (sknet.timm registers it as not
    traced), so the graph runs the fast path: its maps are bit for bit the eager model's."""
    model = randomize_bn(sknet.create_model("sknet_mini")).eval()
    fx = timm.create_model("sknet_mini", features_only=True, feature_cls="fx", out_indices=(0, 1, 2, 3)).eval()
    fx.load_state_dict({f"graph_module.{k}": v for k, v in model.state_dict().items() if not k.startswith("fc.")})
    graph = fx.graph_module
    sk_nodes = [
        n
        for n in graph.graph.nodes
        if n.op == "call_module" and isinstance(graph.get_submodule(n.target), sknet.SKConv)
    ]
    assert len(sk_nodes) == sum(isinstance(m, sknet.SKConv) for m in model.modules()) > 0
    x = x_for("sknet_mini")
    with torch.no_grad():
        got, want = fx(x), model.forward_intermediates(x, intermediates_only=True)
    assert len(got) == len(want) == 4 and all(torch.equal(a, b) for a, b in zip(got, want))


def test_squeeze_excite_is_timms_se_module():
    """SENet's unit as timm computes it (its SEModule with the same hidden width and weights), and in
    1-D and 3-D the same formula: the input scaled by sigmoid(fc2(relu(fc1(mean over every position))))."""
    from timm.layers import SEModule

    ours = sknet.layers.SqueezeExcite(64, reduction=16)
    theirs = SEModule(64, rd_channels=64 // 16)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 64, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
        for dims, shape in ((1, (2, 64, 9)), (3, (2, 64, 3, 4, 5))):
            se = sknet.layers.SqueezeExcite(64, reduction=16, dims=dims)
            x = torch.randn(shape)
            s = x.flatten(2).mean(-1)  # (B, C)
            hidden = torch.relu(s @ se.fc1.weight.flatten(1).T + se.fc1.bias)
            gate = torch.sigmoid(hidden @ se.fc2.weight.flatten(1).T + se.fc2.bias)
            torch.testing.assert_close(se(x), x * gate.view(2, 64, *[1] * dims))


@pytest.mark.parametrize("feature_cls", ["getter", "fx"])
def test_features_only_gives_every_level_by_default_with_either_feature_class(feature_cls):
    """timm's default out_indices (every level) with its getter wrapper and its fx graph alike, as
    for timm's own ResNet."""
    for name, levels in (("sknet50", 5), ("sknet_mini", 4)):
        model = timm.create_model(name, features_only=True, feature_cls=feature_cls).eval()
        assert len(model.feature_info) == levels == len(sknet.create_model(name).feature_info)
        with torch.no_grad():
            assert len(model(x_for(name, 1))) == levels
    assert len(timm.create_model("resnet18", features_only=True, feature_cls=feature_cls).feature_info) == 5
