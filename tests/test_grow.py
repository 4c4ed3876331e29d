"""sknet.to_sk: an SK network grown from a plain ResNeXt computes the same function before its
first step (eval and train mode, running statistics included), learns every new parameter
within two steps, and is a model like any other (saves, reloads, exports, trains)."""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F

import sknet
from conftest import assert_close_rel, randomize_bn
from sknet.layers import SKConv, sk_impl
from sknet.models.grow import grown_model, sk_twin, to_sk
from sknet.weights import read_record

pytestmark = pytest.mark.usefixtures("one_thread")

K357 = [(3, 1, 8), (3, 2, 8), (3, 3, 8)]  # M = 3 on the mini models' G = 8
MINI_INPUTS = {"resnext_mini": (1, 28, 28), "resnext_mini_1d": (1, 64), "resnext_mini_3d": (1, 8, 16, 16)}
NEW = re.compile(r"conv2\.(paths\.[1-9]|attn)\.")  # a grown unit's new parameters


def _out(model: torch.nn.Module, x: torch.Tensor, mode: str = "eval") -> torch.Tensor:
    with torch.no_grad():
        return model.train(mode == "train")(x)


def _plain(name: str, **overrides) -> torch.nn.Module:
    return randomize_bn(sknet.create_model(name, **overrides))


def test_torchvision_resnext50_grows_into_sknet50_with_the_same_logits(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    ref = randomize_bn(torchvision.models.resnext50_32x4d(weights=None))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # logits of order 10, so that the tolerance means something
        ref.fc.weight.mul_(10 / _out(ref, x).abs().max())
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    grown = to_sk(sknet.create_model("resnext50_32x4d", weights=str(tmp_path / "tv.pth")))
    assert grown.pretrained_cfg["name"] == "sknet50" and grown.pretrained_cfg["overrides"] == {}
    sknet50 = sknet.create_model("sknet50")
    assert sum(p.numel() for p in grown.parameters()) == sum(p.numel() for p in sknet50.parameters())
    assert [(n, b.shape) for n, b in grown.named_buffers()] == [(n, b.shape) for n, b in sknet50.named_buffers()]
    for mode in ("eval", "train"):
        expected = _out(ref, x, mode)
        assert expected.abs().max() > 1
        assert_close_rel(_out(grown, x, mode), expected, rtol=1e-4)


@pytest.mark.parametrize("branches", [None, K357], ids=["M2", "M3"])
@pytest.mark.parametrize("name", list(MINI_INPUTS))
def test_the_grown_model_computes_the_plain_ones_function(name, branches):
    """Eval and train mode, on the fast and the reference path, and eval mode again after a
    train-mode forward of both (bn3's shifted running mean stays shifted by as much)."""
    plain = _plain(name)
    grown = to_sk(plain, branches=branches)
    assert grown.pretrained_cfg["name"] == sk_twin(name)
    assert len(grown.layer1[0].conv2.paths) == (3 if branches else 2)
    x = torch.randn(4, *MINI_INPUTS[name])
    for mode in ("eval", "train"):
        expected = _out(plain, x, mode)
        with sk_impl(copy.deepcopy(grown), "reference") as reference:  # a copy: one train-mode forward each
            assert_close_rel(_out(reference, x, mode), expected)
        assert_close_rel(_out(grown, x, mode), expected)
    assert_close_rel(_out(grown, x, "eval"), _out(plain, x, "eval"))  # after one train-mode forward
    grown_buffers = dict(grown.named_buffers())
    for name, buffer in plain.named_buffers():  # bn3's running mean is shifted, as the eval output shows
        if buffer.is_floating_point() and not name.endswith("bn3.running_mean"):
            assert_close_rel(grown_buffers[name.replace("conv2.", "conv2.paths.0.")], buffer)


def _gradients(model: torch.nn.Module, steps: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """The new parameters' gradients in each of ``steps`` SGD steps on one batch."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    grads = []
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model.train()(x), y).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if NEW.search(n)})
        optimizer.step()
    return grads


def _kind(name: str) -> str:
    return re.sub(r"^layer\d+\.\d+\.conv2\.|(?<=paths\.)\d+", "", name)  # "paths..bn.weight"


@pytest.mark.parametrize("branches", [None, K357], ids=["M2", "M3"])
def test_every_new_parameter_learns_within_two_steps(branches):
    """As the proof in sknet.models.grow says: in step 1 the new BN scales and fc_select; the new
    BN shifts' gradient is zero up to rounding (train-mode bn3 removes the shift); the convs and
    the attention's other parameters get exactly zero. From step 2 on every one of them, in every unit."""
    first, second = _gradients(to_sk(_plain("resnext_mini"), branches=branches), steps=2)
    step1: dict[str, list[float]] = {}
    for name, grad in first.items():
        step1.setdefault(_kind(name), []).append(grad.abs().max().item())
    assert min(step1["paths..bn.weight"]) > 0 and min(step1["attn.fc_select.weight"]) > 0
    assert max(step1["paths..bn.bias"]) < 1e-4 * min(step1["paths..bn.weight"])
    assert max(step1["paths..conv.weight"] + step1["attn.fc_reduce.weight"]) == 0
    assert max(step1["attn.bn.weight"] + step1["attn.bn.bias"]) == 0
    assert [n for n, grad in second.items() if not (grad != 0).all()] == []


def test_a_zero_shift_would_leave_the_new_branches_dead():
    """The construction's alternative with shift 0: ReLU(0) = 0 and ReLU'(0) = 0, so the new
    branches' BN and conv get no gradient, step after step (why NEW_BRANCH_SHIFT is positive)."""
    plain = _plain("resnext_mini")
    grown = to_sk(plain)
    with torch.no_grad():
        for unit in (m for m in grown.modules() if isinstance(m, sknet.models.Bottleneck)):
            unit.conv2.paths[1].bn.bias.zero_()
            unit.bn3.running_mean.sub_(0.5 * unit.conv3.weight.flatten(1).sum(1))  # no offset to absorb
    before = copy.deepcopy(grown)
    for grads in _gradients(grown, steps=3):
        assert all((g == 0).all() for n, g in grads.items() if "paths." in n)
        assert any((g != 0).any() for n, g in grads.items() if "attn." in n)
    x = torch.randn(4, 1, 28, 28)
    assert_close_rel(_out(before, x), _out(plain, x))  # exact as well, but dead


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_grown_model_keeps_the_plain_ones_class_count_and_mode(mode):
    """A plain model with 3 classes (not the registered 10), in eval or train mode: the grown one
    has the same classifier and is in the same mode, as what it was grown from computes."""
    plain = _plain("resnext_mini", num_classes=3).train(mode == "train")
    grown = to_sk(plain)
    assert grown.training == (mode == "train") and plain.training == (mode == "train")
    assert grown.fc.out_features == 3 and grown.pretrained_cfg["num_classes"] == 3
    assert torch.equal(grown.fc.weight, plain.fc.weight)
    x = torch.randn(2, 1, 28, 28)
    assert_close_rel(_out(grown, x), _out(plain, x))


def test_a_resnet_grows_with_branches_of_its_own_groups():
    """G = 1: the new branches are ungrouped 3x3s by default, or what ``branches`` says."""
    plain = _plain("resnext_mini", groups=1, width_per_group=16)
    x = torch.randn(2, 1, 28, 28)
    for branches, recorded in [(None, [[3, 1, 1], [3, 2, 1]]), ([(3, 1, 1), (3, 2, 4)], [[3, 1, 1], [3, 2, 4]])]:
        grown = to_sk(plain, branches=branches, reduction=4)
        overrides = dict(groups=1, width_per_group=16, branches=recorded, reduction=4)
        assert grown.pretrained_cfg["overrides"] == overrides
        assert_close_rel(_out(grown, x), _out(plain, x))
        rebuilt = sknet.create_model("sknet_mini", **overrides)
        assert [(n, p.shape) for n, p in rebuilt.named_parameters()] == [
            (n, p.shape) for n, p in grown.named_parameters()
        ]


def test_a_grown_model_saves_reloads_and_exports(tmp_path):
    from sknet.deploy import export as sk_export

    plain = _plain("resnext_mini")
    plain.pretrained_cfg.update(mean=[0.3], std=[0.2], classes=[f"c{i}" for i in range(10)])
    grown = to_sk(plain).eval()
    assert (grown.pretrained_cfg["mean"], grown.pretrained_cfg["classes"][:2]) == ([0.3], ["c0", "c1"])
    x = torch.randn(2, 1, 28, 28)
    reloaded = sknet.load_model(sknet.save_weights(grown, tmp_path / "grown.safetensors"))
    assert torch.equal(_out(reloaded, x), _out(grown, x)) and reloaded.pretrained_cfg["std"] == [0.2]
    folder = sknet.save_pretrained(grown, tmp_path / "folder")
    assert torch.equal(_out(sknet.from_pretrained(folder), x), _out(grown, x))
    report = sknet.export_model(grown, tmp_path / "grown.onnx", "onnx", (1, 28, 28), fuse=True)
    assert report.max_abs_diff <= 1e-4 * max(1.0, report.max_abs_eager)
    assert_close_rel(sk_export.run_exported(tmp_path / "grown.onnx", "onnx", x[:1]), _out(plain, x[:1]), rtol=1e-4)


def test_the_grown_model_keeps_the_input_size_the_plain_one_recorded():
    """The input size, like the normalisation and class names, is the plain model's weights' (here trained at
    16x16), not the SK twin's registered one."""
    plain = _plain("resnext_mini")
    plain.pretrained_cfg.update(input_size=[1, 16, 16])
    assert sknet.get_model_entry("sknet_mini").input_size != (1, 16, 16)
    assert to_sk(plain).pretrained_cfg["input_size"] == [1, 16, 16]


def test_the_twins_own_attention_settings_are_no_overrides():
    """reduction and min_dim given equal to the registered SK model's: the grown model's record is that of
    create_model's model of that name, no overrides."""
    unit = sknet.get_model_entry("sknet_mini").args["unit"]
    grown = to_sk(_plain("resnext_mini"), reduction=unit.reduction, min_dim=unit.min_dim)
    assert grown.pretrained_cfg["overrides"] == sknet.create_model("sknet_mini").pretrained_cfg["overrides"] == {}


def test_the_sk_convs_compute_with_the_sk_impl_asked_for():
    """sk_impl="reference": every SK conv of the grown model is on the reference path, and its record says so."""
    grown = to_sk(_plain("resnext_mini"), sk_impl="reference")
    convs = [m for m in grown.modules() if isinstance(m, SKConv)]
    assert convs and {m.impl for m in convs} == {"reference"}
    assert grown.pretrained_cfg["overrides"].get("sk_impl") == "reference"
    assert {m.impl for m in to_sk(_plain("resnext_mini")).modules() if isinstance(m, SKConv)} != {"reference"}


def test_a_tensor_the_sk_model_has_no_place_for_is_refused_not_dropped():
    """A module added after create_model: its tensors are unexpected (none missing), and would be lost."""
    plain = _plain("resnext_mini")
    plain.extra = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"0 missing.*2 unexpected, e\.g\. \['extra\.weight'"):
        to_sk(plain)


def test_what_to_sk_refuses():
    with pytest.raises(ValueError, match="plain models of the ResNeXt family, not 'senet_mini'"):
        to_sk(sknet.create_model("senet_mini"))
    with pytest.raises(ValueError, match="plain models of the ResNeXt family, not 'mobilenetv2_100'"):
        to_sk(sknet.create_model("mobilenetv2_100"))
    with pytest.raises(ValueError, match=r"no SK model is registered with 'resnext29_8x64d'.*register_model"):
        sk_twin("resnext29_8x64d")
    with pytest.raises(ValueError, match=r"must start with the pretrained 3x3, \(3, 1, 8\)"):
        to_sk(sknet.create_model("resnext_mini"), branches=[(3, 2, 8), (3, 1, 8)])
    with pytest.raises(ValueError, match="at least one new branch"):
        to_sk(sknet.create_model("resnext_mini"), branches=[(3, 1, 8)])
    unnamed = sknet.create_model("resnext_mini")
    del unnamed.pretrained_cfg
    with pytest.raises(ValueError, match="not built by sknet.create_model"):
        to_sk(unnamed)
    with pytest.raises(ValueError, match="fused"):
        to_sk(sknet.fuse(sknet.create_model("resnext_mini").eval()))
    no_bn = sknet.create_model("resnext_mini")
    no_bn.layer1[0].bn1 = torch.nn.Identity()  # its weight, bias and statistics missing, none unexpected
    with pytest.raises(ValueError, match=r"4 missing, e\.g\. \['layer1\.0\.bn1\.weight'.*0 unexpected"):
        to_sk(no_bn)


# --------------------------------------------------------------------------- sknet train --init-from

TINY = [
    "--dataset", "fake", "--epochs", "1", "--batch-size", "8", "--lr", "0.05", "--device", "cpu", "--workers", "0",
    "--no-progress", "--set", "image_size=16", "--set", "train_limit=16", "--set", "val_limit=8",
]  # fmt: skip


def test_train_init_from_starts_from_the_plain_models_function(tmp_path, capsys):
    """``--max-steps 0``: the saved SK model is the grown one, which computes what the plain
    model in the file does; the run's record says where it came from."""
    from sknet import cli

    plain = _plain("resnext_mini")
    file = sknet.save_weights(plain, tmp_path / "plain.safetensors")
    torch.save(plain.state_dict(), tmp_path / "plain.pth")  # no record: read as sknet_mini's plain twin
    x = torch.randn(2, 1, 28, 28)
    for source in (file, tmp_path / "plain.pth"):
        out = tmp_path / source.suffix[1:]
        args = ["train", "--model", "sknet_mini", "--init-from", str(source), "--max-steps", "0", "--output", str(out)]
        assert cli.main(args + TINY) == 0
        grown = sknet.load_model(out / "model.safetensors")
        assert grown.pretrained_cfg["provenance"]["config"]["init_from"] == str(source)
        assert_close_rel(_out(grown, x), _out(plain, x))
    assert "sknet_mini" in capsys.readouterr().out
    # One step learns, from a plain model's name (its fresh weights) too.
    assert cli.main(["train", "--model", "sknet_mini", "--init-from", "resnext_mini", "--max-steps", "1",
                     "--output", str(tmp_path / "named")] + TINY) == 0  # fmt: skip


def test_init_from_a_file_of_another_class_count_gives_a_fresh_classifier_and_the_files_features(tmp_path):
    """grown_model (what --init-from starts from): a 3-class plain file grown for 2 classes has a fresh 2-class
    classifier and, classifiers removed, computes the plain network's features."""
    plain = _plain("resnext_mini", num_classes=3).eval()
    file = sknet.save_weights(plain, tmp_path / "plain3.safetensors")
    grown, loaded = grown_model(file, "sknet_mini", num_classes=2)
    assert grown.fc.out_features == 2 and grown.pretrained_cfg["num_classes"] == 2
    assert loaded["reinitialised"] == ["fc.weight", "fc.bias"] and loaded["file_classes"] == 3
    x = torch.randn(2, 1, 28, 28)
    plain.reset_classifier(0)
    grown.reset_classifier(0)
    assert_close_rel(_out(grown, x), _out(plain, x))


def test_train_init_from_a_file_normalises_the_data_as_the_file_was_trained(tmp_path):
    """As with --weights: the images are normalised with the file's record's mean and std, which the run's
    model.safetensors then records."""
    from sknet.training import train
    from test_finetune import TINY as FOLDER_RUN
    from test_finetune import image_folder

    plain = _plain("resnext_mini", in_chans=3)
    file = sknet.save_weights(plain, tmp_path / "plain.safetensors", mean=(0.3, 0.4, 0.5), std=(0.2, 0.25, 0.3))
    data = image_folder(tmp_path / "data", ["cat", "dog"], per_class=4)
    train(**FOLDER_RUN, data_dir=str(data), init_from=str(file), max_steps=0, output=str(tmp_path / "run"))
    record = read_record(tmp_path / "run" / "model.safetensors")
    assert (record.mean, record.std) == ([0.3, 0.4, 0.5], [0.2, 0.25, 0.3])


def test_train_init_from_refuses_what_does_not_grow_into_the_model(tmp_path):
    from sknet.training import train

    file = sknet.save_weights(sknet.create_model("resnext_mini_1d"), tmp_path / "plain1d.safetensors")
    run = dict(model="sknet_mini", dataset="fake", image_size=16, train_limit=8, val_limit=8, batch_size=8,
               workers=0, progress=False, device="cpu")  # fmt: skip
    with pytest.raises(ValueError, match=r"'sknet_mini' grows from \['resnext_mini'\], not from 'resnext_mini_1d'"):
        train(**run, init_from=str(file), output=str(tmp_path / "a"))
    with pytest.raises(ValueError, match="neither a weights file nor a registered model"):
        train(**run, init_from=str(tmp_path / "missing.pth"), output=str(tmp_path / "b"))
    with pytest.raises(ValueError, match="init_from"):
        train(**run, init_from=str(file), weights=str(file), output=str(tmp_path / "c"))
