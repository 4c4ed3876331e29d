"""Published weights (``create_model(name, pretrained=True)``, ``--pretrained [TAG]``), offline.

Nothing here touches the network: the Hugging Face cache and torch's hub cache are temporary
folders laid out as huggingface_hub and torch.hub lay them out, holding randomly initialised
weights of timm's and torchvision's own models, with HF_HUB_OFFLINE=1. The demo model that
ships with the package is scored on the real Fashion-MNIST test set (skipped without it).
"""

from __future__ import annotations

import gzip
import http.client
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
from sknet.data import DEFAULT_ROOTS, NORMALIZATION
from sknet.models.sources import SOURCES, imagenet_classes, pretrained_source, pretrained_sources
from sknet.weights import read_record

pytestmark = pytest.mark.usefixtures("one_thread")

REVISION = "0123456789abcdef0123456789abcdef01234567"  # a commit hash, as the Hub's refs/main holds
PUBLISHED = [s for s in SOURCES if s.library != "sknet"]  # another library's; the others ship with sknet
ARCHS = sorted({(s.library, s.arch) for s in PUBLISHED})  # one reference network for all of its weights
ROOT = Path(__file__).resolve().parents[1]


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
    for source in [s for s in PUBLISHED if (s.library, s.arch) == (library, arch)]:
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
        ValueError, match=r"'resnext_mini' has no published pretrained weights; models that have: .*sknet50"
    ):
        sknet.create_model("resnext_mini", pretrained=True)
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


def test_hf_hub_offline_set_after_import_keeps_huggingface_hub_to_its_cache(caches, monkeypatch):
    """huggingface_hub reads HF_HUB_OFFLINE once, on import; sknet reads it when weights are asked for
    (sknet.models.sources.offline_mode), so a variable set later still asks for the cached file only."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import LocalEntryNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # imported without the variable, which caches sets
    calls = []

    def hf_hub_download(*args, **kwargs):
        calls.append(kwargs)
        raise LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    with pytest.raises(FileNotFoundError, match="cannot be downloaded now"):
        sknet.create_model("skresnet18", pretrained=True)
    assert [c["local_files_only"] for c in calls] == [True]


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
    imagenet = [r for r in rows if r["model"] != "sknet_mini"]
    assert all(r["licence"] and 50 < r["top1"] < 90 and r["size_mib"] > 10 for r in imagenet)
    assert {r["top1_on"] for r in imagenet} == {"ImageNet-1k val"}
    demo = by_tag["sknet_mini", "fashion_mnist"]
    assert demo["source"] == "sknet sknet_mini.fashion_mnist" and demo["licence"] == "mit" and demo["default"]
    assert demo["top1"] >= 92 and demo["top1_on"] == "Fashion-MNIST test" and 0.5 < demo["size_mib"] < 1
    assert main(["models", "--pretrained", "sknet*"]) == 0
    table = capsys.readouterr().out
    assert "ra_in1k *" in table and "not ours" in table and "senet50" not in table
    assert "fashion_mnist *" in table and f"{demo['top1']:.2f} (Fashion-MNIST test, ours)" in table


def test_finetuning_from_imagenet_weights_is_one_command(caches, tmp_path, capsys):
    """The documented line, ``sknet train --config finetune --model sknet50 --pretrained --data-dir FOLDER``,
    on a tiny folder at 32 px for one epoch: it starts from the cached file, a new classifier for its classes."""
    from test_finetune import image_folder

    source = pretrained_sources("sknet50")[0]
    path = lay_out(source, reference(source.library, source.arch, torch.randn(1, 3, 32, 32)).state_dict(), caches)
    data = image_folder(tmp_path / "data", ["cat", "dog"], per_class=4)
    args = ["train", "--config", "finetune", "--model", "sknet50", "--pretrained", "--data-dir", str(data),
            "--output", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "4", "--workers", "0",
            "--no-progress", "--set", "image_size=32"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"loaded from {path}; classifier re-initialised for 2 classes (the file's has 1000)" in out
    model = sknet.load_model(tmp_path / "run" / "model.safetensors")
    assert model.pretrained_cfg["classes"] == ["cat", "dog"] and model.pretrained_cfg["provenance"]["config"]["weights"]
    recipe = (ROOT / "src" / "sknet" / "recipes" / "finetune.yaml").read_text()
    assert "sknet train --config finetune --model sknet50 --pretrained --data-dir" in recipe  # its usage line


def test_finetuning_on_a_missing_folder_stops_before_fetching_the_weights(tmp_path, monkeypatch, capsys):
    """A mistyped --data-dir is a one-line error before any download (105 MB for sknet50), and nothing is written."""
    import sknet.cli.train as cli_train

    def fetched(*args, **kwargs):
        raise AssertionError("the weights were fetched before the data folder was checked")

    monkeypatch.setattr(cli_train, "pretrained_file", fetched)
    args = ["train", "--config", "finetune", "--model", "sknet50", "--pretrained", "--data-dir",
            str(tmp_path / "no-such-folder"), "--output", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no-such-folder" in err and "is not a folder" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_download_that_fails_part_way_is_one_line_that_says_how_to_retry(caches, monkeypatch, tmp_path, capsys):
    """A connection lost during the download (huggingface_hub's, torch.hub's): one line naming the model,
    the source, a retry and ``--weights FILE``; exit status 2 on the command line, no traceback."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online, but the connection breaks
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def lost_connection(*args, **kwargs):
        raise ConnectionResetError("[Errno 104] Connection reset by peer")

    def short_read(*args, **kwargs):
        raise http.client.IncompleteRead(b"x" * 1000, 9000)  # not an OSError

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lost_connection)
    monkeypatch.setattr(torch.hub, "download_url_to_file", short_read)
    for name, error in (("skresnet18", "ConnectionResetError"), ("mobilenetv2_100", "IncompleteRead")):
        source = pretrained_sources(name)[0]
        with pytest.raises(FileNotFoundError) as err:
            sknet.create_model(name, pretrained=True)
        message = str(err.value)
        assert "\n" not in message and f"model {name!r} ({source.library} {source.name}) failed" in message
        assert error in message and "again to retry" in message and "--weights FILE" in message
        assert main(["predict", "--model", name, "--pretrained", str(tmp_path / "x.png")]) == 2
        printed = capsys.readouterr().err
        assert printed.strip() == f"sknet predict: error: {message}" and "Traceback" not in printed


# --------------------------------------------------------------------------- the demo model in the package

FASHION_MNIST = Path(DEFAULT_ROOTS["fashion-mnist"])
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]  # fmt: skip  # Fashion-MNIST's README (and torchvision's FashionMNIST.classes)
DEMO_SECTION = "## The demo: Fashion-MNIST on two CPU cores"


def fashion_mnist_test_set() -> tuple[np.ndarray, np.ndarray]:
    """The raw test images (N, 28, 28) uint8 and labels, read from the idx files as their README lays them out."""
    if not (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    images = np.frombuffer(
        gzip.decompress((FASHION_MNIST / "t10k-images-idx3-ubyte.gz").read_bytes()), np.uint8, offset=16
    )
    labels = np.frombuffer(
        gzip.decompress((FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()), np.uint8, offset=8
    )
    return images.reshape(-1, 28, 28), labels


def test_the_packaged_demo_model_is_offline_and_records_how_it_was_made(caches):
    source = pretrained_source("sknet_mini")
    assert source.library == "sknet" and source.packaged_file.is_file()
    assert source.packaged_file.stat().st_size < 2**20  # small enough to ship
    model = sknet.create_model("sknet_mini", pretrained=True)  # caches empty, offline, downloads fail: it loads
    cfg = model.pretrained_cfg
    assert cfg["classes"] == FASHION_MNIST_CLASSES and cfg["input_size"] == [1, 28, 28]
    assert (tuple(cfg["mean"]), tuple(cfg["std"])) == NORMALIZATION["fashion-mnist"]
    provenance = cfg["provenance"]
    assert provenance["pretrained"] == "sknet sknet_mini.fashion_mnist" and provenance["licence"] == "mit"
    assert provenance["recipe"] == "fashion_mnist" and provenance["seed"] == 0 and len(provenance["commit"]) == 40
    assert provenance["command"].startswith("sknet train --config fashion_mnist --data-dir")
    assert cfg["metrics"]["test_top1_err"] <= 8 and cfg["metrics"]["epochs"] == 6
    five = sknet.create_model("sknet_mini", pretrained=True, num_classes=5)  # to fine-tune: no names, no figures
    assert five.fc.out_features == 5 and "classes" not in five.pretrained_cfg and "metrics" not in five.pretrained_cfg
    if "sknet_mini" in timm_registered():  # timm.create_model after import sknet.timm: the same file
        import timm

        theirs = timm.create_model("sknet_mini", pretrained=True)
        assert theirs.pretrained_cfg["file"] == str(source.packaged_file) and theirs.pretrained_cfg["license"] == "mit"
        x = torch.randn(2, 1, 28, 28)
        assert torch.equal(logits(theirs, x), logits(model, x))


def test_the_docs_give_the_packaged_models_accuracy_commit_and_command():
    """docs/training.md's demo section states what the packaged file's record says."""
    record = read_record(pretrained_source("sknet_mini").packaged_file)
    section = (ROOT / "docs" / "training.md").read_text().split(DEMO_SECTION)[1].split("\n## ")[0]
    packaged = section[section.index("sknet_mini.fashion_mnist.safetensors") :]
    assert f"{100 - record.metrics['test_top1_err']:.2f} % test accuracy" in packaged
    assert f"`{record.provenance['commit'][:7]}`" in packaged and record.provenance["date"] in packaged
    assert "bash scripts/make_demo_weights.sh" in packaged
    command = record.provenance["command"].split(" --output")[0]
    assert command in packaged and "--config fashion_mnist" in command and "seed 0" in packaged


def test_the_packaged_demo_model_scores_over_92_percent_on_the_real_test_set(capsys):
    """``sknet eval --model sknet_mini --pretrained --dataset fashion-mnist`` on all 10,000 test images."""
    fashion_mnist_test_set()  # skips without the data
    args = ["eval", "--model", "sknet_mini", "--pretrained", "--dataset", "fashion-mnist", "--data-dir",
            str(FASHION_MNIST), "--workers", "0", "--batch-size", "500", "--no-progress", "--json"]  # fmt: skip
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 10000 and 100 - result["top1_err"] >= 92


def test_predict_names_the_fashion_mnist_class_of_png_files(tmp_path, capsys):
    """``sknet predict --model sknet_mini --pretrained coat.png``: the first ten test images as PNG files,
    each named by its class."""
    images, labels = fashion_mnist_test_set()
    paths = []
    for i in range(10):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(images[i]).save(paths[-1])
    assert main(["predict", "--model", "sknet_mini", "--pretrained", *paths, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    named = [r["top"][0]["cls"] for r in results]
    assert all(name in FASHION_MNIST_CLASSES for name in named)
    assert sum(n == FASHION_MNIST_CLASSES[y] for n, y in zip(named, labels[:10])) >= 9
