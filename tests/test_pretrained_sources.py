"""Published weights (``create_model(name, pretrained=True)``, ``--pretrained [TAG]``), offline.

Nothing here touches the network: the Hugging Face cache and torch's hub cache are temporary
folders laid out as huggingface_hub and torch.hub lay them out, holding randomly initialised
weights of timm's and torchvision's own models, with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

import sknet
from conftest import randomize_bn
from sknet.cli import main
from sknet.data import NORMALIZATION
from sknet.models.sources import SOURCES, imagenet_classes, pretrained_sources

pytestmark = pytest.mark.usefixtures("one_thread")

REVISION = "0123456789abcdef0123456789abcdef01234567"  # a commit hash, as the Hub's refs/main holds
ARCHS = sorted({(s.library, s.arch) for s in SOURCES})  # one reference network for all of its weights


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty, offline caches: ``hf`` (the Hugging Face hub cache) and ``torch`` (torch's hub checkpoints)."""
    hf = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf))  # huggingface_hub reads the variables on import
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def no_download(*args, **kwargs):
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return SimpleNamespace(hf=hf, torch=tmp_path / "torch" / "hub" / "checkpoints")


def lay_out(source, state_dict: dict, caches) -> Path:
    """Put ``state_dict`` where the source's library keeps ``source``'s file once downloaded."""
    if source.library == "timm":
        repo = caches.hf / f"models--timm--{source.arch}.{source.tag}"
        path = repo / "snapshots" / REVISION / "model.safetensors"
        path.parent.mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(REVISION)
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    else:
        path = caches.torch / Path(urlparse(source.torchvision_weights().url).path).name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state_dict, path)
    return path


def reference(library: str, arch: str, x: torch.Tensor) -> nn.Module:
    """The library's own randomly initialised network, its logits of order 10 on ``x``."""
    if library == "timm":
        timm = pytest.importorskip("timm")
        ref = timm.create_model(arch, pretrained=False)
    else:
        import torchvision

        ref = torchvision.models.get_model(arch, weights=None)
    ref = randomize_bn(ref).eval()
    classifier = [m for m in ref.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        classifier.weight.mul_(10 / ref(x).abs().max())
    return ref


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def assert_same_logits(model: nn.Module, expected: torch.Tensor, x: torch.Tensor) -> None:
    assert (logits(model, x) - expected).abs().max() <= 1e-4 * expected.abs().max()


def timm_registered() -> tuple[str, ...]:
    """The models ``import sknet.timm`` registers in timm (none without timm)."""
    try:
        import sknet.timm
    except ImportError:
        return ()
    return sknet.timm.REGISTERED


@pytest.mark.parametrize(("library", "arch"), ARCHS, ids=[f"{lib}-{arch}" for lib, arch in ARCHS])
def test_every_source_gives_its_librarys_logits(library, arch, caches):
    """Every row of the table loads, by its tag and (the default) by True, into our model with the
    logits of the library's own model on the same file, with ImageNet's record."""
    x = torch.randn(2, 3, 64, 64)
    ref = reference(library, arch, x)
    expected = logits(ref, x)
    assert expected.abs().max() > 5
    for source in [s for s in SOURCES if (s.library, s.arch) == (library, arch)]:
        path = lay_out(source, ref.state_dict(), caches)
        model = sknet.create_model(source.model, pretrained=source.tag)
        assert_same_logits(model, expected, x)
        cfg = model.pretrained_cfg
        assert cfg["classes"] == imagenet_classes() and len(cfg["classes"]) == 1000 and cfg["classes"][1] == "goldfish"
        assert (tuple(cfg["mean"]), tuple(cfg["std"])) == NORMALIZATION["imagenet"]
        assert cfg["input_size"] == [3, 224, 224]
        assert cfg["provenance"] == dict(pretrained=f"{library} {source.name}", licence=source.licence, file=str(path))
        if source is pretrained_sources(source.model)[0]:  # the default
            assert sknet.create_model(source.model, pretrained=True).pretrained_cfg["provenance"]["file"] == str(path)
        if source.model in timm_registered():  # timm.create_model after import sknet.timm: the same weights
            import timm

            theirs = timm.create_model(f"{source.model}.{source.tag}", pretrained=True)
            assert theirs.pretrained_cfg["file"] == str(path) and theirs.pretrained_cfg["license"] == source.licence
            assert_same_logits(theirs, expected, x)


def test_a_tag_another_class_count_and_the_wrong_requests(caches):
    """Another class count gets a fresh classifier and no class names; wrong requests say what there is."""
    source = pretrained_sources("skresnet18")[0]
    x = torch.randn(2, 3, 64, 64)
    ref = reference(source.library, source.arch, x)
    lay_out(source, ref.state_dict(), caches)
    ten = sknet.create_model("skresnet18", pretrained=True, num_classes=10)  # a new classifier, for fine-tuning
    assert ten.fc.out_features == 10 and "classes" not in ten.pretrained_cfg
    assert torch.equal(ten.conv1.weight, ref.conv1.weight) and not torch.equal(ten.fc.bias, ref.fc.bias[:10])
    with pytest.raises(ValueError, match=r"has no pretrained weights 'nope'; its tags: ra_in1k"):
        sknet.create_model("skresnet18", pretrained="nope")
    with pytest.raises(
        ValueError, match=r"'sknet_mini' has no published pretrained weights; models that have: .*sknet50"
    ):
        sknet.create_model("sknet_mini", pretrained=True)
    with pytest.raises(ValueError, match="not both"):
        sknet.create_model("skresnet18", pretrained=True, weights="w.safetensors")
    assert sknet.create_model("skresnet18", pretrained=False).pretrained_cfg.get("classes") is None


@pytest.mark.parametrize("name", ["skresnet18", "mobilenetv2_100"])  # one of each library
def test_an_empty_cache_offline_says_what_is_missing_and_what_to_do(name, caches, tmp_path, capsys):
    source = pretrained_sources(name)[0]
    what, cache = (
        (f"timm/{source.arch}.{source.tag}/model.safetensors", caches.hf)
        if source.library == "timm"
        else (source.torchvision_weights().url, caches.torch)
    )
    with pytest.raises(FileNotFoundError) as err:
        sknet.create_model(name, pretrained=True)
    message = str(err.value)
    assert "\n" not in message and f"model {name!r}" in message and what in message and str(cache) in message
    assert "--weights FILE" in message and "HF_HUB_OFFLINE=1" in message
    assert main(["export", "--model", name, "--pretrained", "-o", str(tmp_path / "m.onnx")]) == 2
    printed = capsys.readouterr().err
    assert printed.strip() == f"sknet export: error: {message}" and "Traceback" not in printed


def test_without_huggingface_hub_the_message_names_the_extra(caches, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # importing it now fails
    with pytest.raises(ImportError, match=r"'sknet50' .*timm/skresnext50_32x4d.ra_in1k.* pip install 'sknet\[hub\]'"):
        sknet.create_model("sknet50", pretrained=True)
    assert main(["predict", "--model", "sknet50", "--pretrained", "x.png"]) == 2  # x.png: no tag, so an image
    assert "pip install 'sknet[hub]'" in capsys.readouterr().err


def test_class_names_reach_predict_and_the_onnx_file(caches, tmp_path, capsys):
    """``sknet predict --model M --pretrained IMAGE`` (the image is no tag) prints ImageNet's names;
    ``sknet export`` writes them into the ONNX metadata."""
    onnx = pytest.importorskip("onnx")
    import torchvision

    tv = randomize_bn(torchvision.models.mobilenet_v2(weights=None))
    for source in pretrained_sources("mobilenetv2_100"):
        lay_out(source, tv.state_dict(), caches)
    image = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(image)
    names = imagenet_classes()
    for tag in ([], ["IMAGENET1K_V1"]):
        assert main(["predict", "--model", "mobilenetv2_100", "--pretrained", *tag, str(image), "--json"]) == 0
        [result] = json.loads(capsys.readouterr().out)
        assert result["image"] == str(image) and len(result["top"]) == 5
        assert all(t["cls"] == names[t["index"]] for t in result["top"])
    onnx_file = tmp_path / "m.onnx"
    args = ["export", "--model", "mobilenetv2_100", "--pretrained", "-o", str(onnx_file), "--input-size", "64"]
    assert main(args) == 0
    props = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert json.loads(props["sknet.classes"]) == names and json.loads(props["sknet.mean"]) == [0.485, 0.456, 0.406]


def test_train_starts_from_the_published_weights(caches, tmp_path, capsys):
    """``sknet train --pretrained``: the cached file is the run's weights, a new classifier for the folder's classes."""
    from test_finetune import image_folder

    source = pretrained_sources("skresnet18")[0]
    path = lay_out(source, reference(source.library, source.arch, torch.randn(1, 3, 64, 64)).state_dict(), caches)
    data = image_folder(tmp_path / "data", ["cat", "dog"])
    args = ["train", "--model", "skresnet18", "--pretrained", "--dataset", "imagefolder", "--data-dir", str(data),
            "--output", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "8", "--workers", "0", "--no-progress",
            "--set", "image_size=32", "--set", "lr_base_batch=null"]  # fmt: skip
    assert main(args) == 0
    assert (
        f"loaded from {path}; classifier re-initialised for 2 classes (the file's has 1000)" in capsys.readouterr().out
    )
    assert main([*args, "--weights", str(path)]) == 2
    assert "give either --pretrained [TAG] or --weights FILE, not both" in capsys.readouterr().err


def test_models_pretrained_lists_every_source_with_its_own_figures(capsys):
    assert main(["models", "--pretrained", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["tag"]) for r in rows] == [(s.model, s.tag) for s in SOURCES]
    assert [r["model"] for r in rows if r["default"]] == list(dict.fromkeys(s.model for s in SOURCES))
    by_tag = {(r["model"], r["tag"]): r for r in rows}
    v2 = by_tag["resnext50_32x4d", "IMAGENET1K_V2"]
    assert (v2["top1"], v2["size_mib"], v2["licence"]) == (81.198, 95.8, "bsd-3-clause")  # torchvision's meta
    sk = by_tag["sknet50", "ra_in1k"]
    assert sk["source"] == "timm skresnext50_32x4d.ra_in1k" and sk["top1"] == 80.162 and 100 < sk["size_mib"] < 110
    assert all(r["licence"] and 50 < r["top1"] < 90 and r["size_mib"] > 10 for r in rows)
    assert main(["models", "--pretrained", "sknet*"]) == 0
    table = capsys.readouterr().out
    assert "ra_in1k *" in table and "theirs" in table and "senet50" not in table
