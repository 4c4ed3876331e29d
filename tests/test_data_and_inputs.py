"""Data loading and bad input: every error says what was wrong and how to fix it, and a
failed command never touches the checkpoint of the run it was pointed at."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sknet import cli
from sknet.data import (
    DATASETS,
    DEFAULT_ROOTS,
    NORMALIZATION,
    ScaledFashionMNIST,
    build_dataset,
    collate_skip,
    open_image,
)
from sknet.data.transforms import EVAL_CROP_RATIO, eval_transform
from sknet.training import resolve_config, train
from sknet.training.checkpoint import load_checkpoint

TINY = dict(
    model="sknet_mini", dataset="fake", image_size=16, train_limit=32, val_limit=16, batch_size=16, epochs=1,
    workers=0, progress=False, lr=0.1, lr_base_batch=None,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "base"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: the function-scoped one_thread fixture is not active yet
    try:
        train(**TINY, output=str(out))
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    """A copy of a finished tiny run, with a digest of every file to check nothing was lost."""
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def untouched_after(run: Path, fn, exc, match: str):
    before = digests(run)
    with pytest.raises(exc, match=match):
        fn()
    assert digests(run) == before, "a failed command changed the run folder"
    load_checkpoint(run / "checkpoint.pt")


# --------------------------------------------------------------------------- image trees


def save(path: Path, img: Image.Image, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt)
    return path


def image_tree(root: Path, bad: bool = False) -> Path:
    """ImageNet-style tree, 2 classes, images in every mode PIL knows well; ``bad`` adds a
    truncated JPEG and a text file named .png."""
    modes = {"rgb": "RGB", "gray": "L", "palette": "P", "rgba": "RGBA", "cmyk": "CMYK"}
    for split in ("train", "val"):
        for c, cls in enumerate(("cat", "dog")):
            for name, mode in modes.items():
                img = Image.new("RGB", (20 + 3 * c, 18), (40 * c, 90, 200)).convert(mode)
                save(root / split / cls / f"{name}.{'jpg' if mode == 'CMYK' else 'png'}", img)
            save(root / split / cls / "tiny.png", Image.new("RGB", (5, 7), (200, 10, 10)))  # smaller than the crop
    if bad:
        good = save(root / "train" / "cat" / "whole.jpg", Image.new("RGB", (64, 64), (1, 2, 3)))
        (root / "train" / "cat" / "truncated.jpg").write_bytes(good.read_bytes()[:200])
        (root / "train" / "dog" / "notes.png").write_text("not an image")
    return root


def test_registry_has_the_datasets_and_a_one_line_extension_point():
    assert {"imagenet", "cifar10", "cifar100", "fashion-mnist", "fake"} <= set(DATASETS)
    with pytest.raises(ValueError, match="valid datasets: imagenet, cifar10"):
        build_dataset("mnist-ish")


@pytest.mark.parametrize("split", ["train", "val"])
def test_any_image_mode_and_size_comes_out_as_an_rgb_crop(tmp_path, split):
    ds = build_dataset("imagenet", image_tree(tmp_path), split, crop=16)
    assert ds.classes == ["cat", "dog"] and len(ds) == 12
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32, ds.samples[i]
        assert torch.isfinite(x).all()


def test_open_image_converts_cmyk_palette_and_gray(tmp_path):
    image_tree(tmp_path)
    for name in ("cmyk.jpg", "palette.png", "gray.png", "rgba.png"):
        assert open_image(str(tmp_path / "train" / "cat" / name)).mode == "RGB"
    assert open_image(str(tmp_path / "train" / "cat" / "rgb.png"), channels=1).mode == "L"


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    ds = build_dataset("imagenet", image_tree(tmp_path, bad=True), "train", crop=16)
    batch = collate_skip([ds[i] for i in range(len(ds))])
    assert batch[2] == 2 and len(batch[1]) == len(ds) - 2
    out = train(**dict(TINY, dataset="imagenet", data_dir=str(tmp_path), train_limit=None, val_limit=None,
                       batch_size=15, output=str(tmp_path / "run")))  # fmt: skip
    assert out["steps"] == 1
    import csv

    with open(tmp_path / "run" / "metrics.csv") as f:
        assert float(next(csv.DictReader(f))["skipped"]) == 2


def test_corrupt_images_fail_with_the_file_name_when_asked(tmp_path, run):
    root = image_tree(tmp_path / "data", bad=True)
    ds = build_dataset("imagenet", root, "train", crop=16, on_corrupt="fail")
    names = [Path(p).name for p, _ in ds.samples]
    with pytest.raises(ValueError, match=r"cannot read image .*notes\.png.*on_corrupt: skip"):
        ds[names.index("notes.png")]
    with pytest.raises(ValueError, match=r"truncated\.jpg"):
        ds[names.index("truncated.jpg")]


def test_missing_fashion_mnist_says_how_to_install(tmp_path, run):
    untouched_after(
        run,
        lambda: train(
            **dict(TINY, dataset="fashion-mnist", data_dir=str(tmp_path / "nowhere"), output=str(run), resume=True)
        ),  # fmt: skip
        FileNotFoundError,
        r"(?s)Expected layout.*train,t10k.*apt-get install dataset-fashion-mnist.*--download",
    )


def test_an_empty_class_folder_is_named(tmp_path, run):
    root = image_tree(tmp_path / "data")
    (root / "val" / "bird").mkdir()
    (root / "val" / "bird" / "readme.txt").write_text("no images here")
    untouched_after(
        run,
        lambda: train(**dict(TINY, dataset="imagenet", data_dir=str(root), output=str(run), resume=True)),
        FileNotFoundError,
        r"^class folder '.*val/bird' holds no images \(looked for \.jpg, .*\); add its images, or remove the folder",
    )


def test_wrong_imagenet_layout_says_what_is_expected(tmp_path, run):
    flat = tmp_path / "flat"
    save(flat / "train" / "img.png", Image.new("RGB", (8, 8)))  # images not in class folders
    for root in (tmp_path / "missing", flat):
        untouched_after(
            run,
            lambda root=root: train(**dict(TINY, dataset="imagenet", data_dir=str(root), output=str(run), resume=True)),
            FileNotFoundError,
            r"(?s)imagenet data not found.*train/<class>/<image>\.JPEG.*val/<class>",
        )


def test_missing_cifar_says_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)cifar-10-batches-py/.*data_batch_1.*--download"):
        build_dataset("cifar10", tmp_path)


def test_truncated_idx_file_is_named(tmp_path):
    import gzip

    header = (0x0801).to_bytes(4, "big") + (10000).to_bytes(4, "big")
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(header + bytes(100))
    from sknet.data import read_idx

    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz.*truncated"):
        read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz")


def test_unknown_model_lists_the_valid_ones(run):
    untouched_after(
        run, lambda: train(**dict(TINY, model="sknet5", output=str(run), resume=True)), ValueError,
        r"unknown model 'sknet5'.*Valid models: .*sknet50",
    )  # fmt: skip


def test_unknown_config_key_lists_the_valid_ones(tmp_path, run):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model: sknet_mini\nlearning_rate: 0.1\n")
    untouched_after(
        run, lambda: train(str(recipe), output=str(run), resume=True), ValueError,
        r"unknown key\(s\) \['learning_rate'\]; valid keys: model, model_overrides",
    )  # fmt: skip
    rc = cli.main(["train", "--output", str(run), "--resume", "--set", "batchsize=8"])
    assert rc == 2
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_config(amp="fp8")


def test_unknown_model_override_lists_the_valid_ones(run):
    untouched_after(
        run, lambda: train(**dict(TINY, model_overrides={"kernels": 3}, output=str(run), resume=True)), ValueError,
        r"does not take override\(s\) \['kernels'\]; valid overrides",
    )  # fmt: skip


def test_resume_from_another_model_or_recipe_names_the_mismatch(run):
    untouched_after(
        run, lambda: train(**dict(TINY, model="resnext_mini", output=str(run), resume=True)), ValueError,
        r"another model or recipe \(model: checkpoint 'sknet_mini', this run 'resnext_mini'\)",
    )  # fmt: skip
    untouched_after(
        run, lambda: train(**dict(TINY, weight_decay=0.1, epochs=3, output=str(run), resume=True)), ValueError,
        r"weight_decay: checkpoint 0\.0001, this run 0\.1",
    )  # fmt: skip


def test_an_existing_run_is_not_overwritten_without_resume(run):
    untouched_after(run, lambda: train(**dict(TINY, output=str(run))), ValueError, "pass --resume")


def test_eval_of_a_checkpoint_from_another_model_names_it(run, capsys):
    for ck in ("checkpoint.pt", "model.safetensors"):
        before = digests(run)
        rc = cli.main(["eval", "--checkpoint", str(run / ck), "--model", "resnext_mini", "--dataset", "fake"])
        assert rc == 2
        assert "holds weights for model 'sknet_mini', not 'resnext_mini'" in capsys.readouterr().err
        assert digests(run) == before


def test_corrupt_checkpoint_is_named(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*checkpoint\.pt"):
        load_checkpoint(bad)


# --------------------------------------------------------------------------- eval / predict


def test_eval_gives_the_same_figures_from_checkpoint_and_safetensors(run, capsys):
    import json

    results = []
    for ck in ("checkpoint.pt", "model.safetensors"):
        args = ["eval", "--checkpoint", str(run / ck), "--dataset", "fake", "--json", "--no-progress"]
        assert cli.main(args + ["--workers", "0"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0]["top1_err"] == results[1]["top1_err"] and results[0]["loss"] == results[1]["loss"]
    assert results[0]["images"] == len(build_dataset("fake", split="val"))  # the whole split (training used 16)


def test_predict_prints_top5_with_probabilities(run, tmp_path, capsys):
    import json

    images = [save(tmp_path / f"{i}.png", Image.new("L", (40, 30), 60 * i)) for i in range(3)]
    images.append(save(tmp_path / "color.jpg", Image.new("RGB", (9, 9), (10, 200, 30))))
    outs = []
    for ck in ("checkpoint.pt", "model.safetensors"):
        assert cli.main(["predict", "--checkpoint", str(run / ck), *map(str, images), "--json"]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert outs[0] == outs[1]
    for r in outs[0]:
        probs = [t["prob"] for t in r["top"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(t["cls"] in [str(i) for i in range(10)] for t in r["top"])
    (tmp_path / "broken.png").write_bytes(b"nope")
    assert cli.main(["predict", "--checkpoint", str(run / "checkpoint.pt"), str(tmp_path / "broken.png")]) == 2
    assert "broken.png" in capsys.readouterr().err
    # A bad file among good ones: reported, the others predicted all the same, and the exit status says so.
    mixed = [str(images[0]), str(tmp_path / "broken.png"), str(images[1])]
    assert cli.main(["predict", "--checkpoint", str(run / "checkpoint.pt"), *mixed, "--json"]) == 2
    captured = capsys.readouterr()
    mixed_out = json.loads(captured.out)
    assert [r["image"] for r in mixed_out] == [mixed[0], mixed[2]]
    for got, alone in zip(mixed_out, outs[0][:2]):  # a batch of 2, not 4: the CPU's kernels may round otherwise
        assert [t["index"] for t in got["top"]] == [t["index"] for t in alone["top"]]
        assert [t["prob"] for t in got["top"]] == pytest.approx([t["prob"] for t in alone["top"]], abs=1e-6)
    assert "broken.png" in captured.err and "1 of 3 image(s) could not be read" in captured.err


def test_predict_crops_as_evaluation_does(run, tmp_path):
    """``resize="crop"`` is evaluation's single centre crop (the paper's 224 of 256): the shorter side
    resized to size / EVAL_CROP_RATIO, the centre crop taken, then the model's normalisation."""
    from torchvision.transforms.v2 import functional as TF

    from sknet import load_model
    from sknet.data.transforms import EVAL_CROP_RATIO
    from sknet.deploy import predict

    assert round(224 / EVAL_CROP_RATIO) == 256
    model = load_model(run / "model.safetensors")
    c, h, _ = model.pretrained_cfg["input_size"]
    pixels = torch.randint(0, 256, (24, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    path = save(tmp_path / "wide.png", Image.fromarray(pixels.numpy(), "L"))
    image = TF.center_crop(TF.resize(TF.to_image(open_image(str(path), c)), round(h / EVAL_CROP_RATIO)), h)
    image = TF.normalize(TF.to_dtype(image, torch.float32, scale=True), model.pretrained_cfg["mean"],
                         model.pretrained_cfg["std"])  # fmt: skip
    with torch.no_grad():
        expected = model.eval()(image[None]).softmax(1)[0].topk(3)
    top = predict(model, [path], topk=3, resize="crop")[0]["top"]
    assert [t["index"] for t in top] == expected.indices.tolist()
    assert [t["prob"] for t in top] == pytest.approx(expected.values.tolist(), abs=1e-6)


def test_fast_pad_crop_flip_matches_torchvision():
    from torchvision.transforms.v2 import functional as TF

    from sknet.data import PadCropFlip, SeededTransform

    mean, std = (0.3, 0.5, 0.7), (0.2, 0.3, 0.4)
    img = torch.randint(0, 256, (3, 12, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    fast = SeededTransform(PadCropFlip(mean, std, pad=2, hflip=True), seed=5)
    seen = set()
    for index in range(300):
        out = fast(img, index)
        matches = []
        for i in range(5):
            for j in range(5):
                crop = TF.crop(TF.pad(img, [2]), i, j, 12, 10)
                for flip in (False, True):
                    ref = TF.normalize(
                        TF.to_dtype(TF.hflip(crop) if flip else crop, torch.float32, scale=True), mean, std
                    )
                    if torch.allclose(out, ref, atol=1e-5):
                        matches.append((i, j, flip))
        assert matches, f"sample {index}: no torchvision crop/flip gives this output"
        seen.update(matches)
        assert torch.equal(out, fast(img, index))  # same (seed, epoch, index): same augmentation
    assert len(seen) == 50  # every offset and both flips occur
    plain = PadCropFlip(mean, std, pad=2, train=False)(img)
    torch.testing.assert_close(plain, TF.normalize(TF.to_dtype(img, torch.float32, scale=True), mean, std))


def test_tensorboard_without_the_package_says_what_to_install(tmp_path, capsys):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=re.escape("pip install 'sknet[tensorboard]'")):
            train(**TINY, output=str(tmp_path / "tb"), tensorboard=True)
        assert not (tmp_path / "tb").exists()  # checked before anything is written
        args = ["train", "--config", "fashion_mnist", "--dataset", "fake", "--output", str(tmp_path / "cli")]
        assert cli.main([*args, "--tensorboard"]) == 2
        err = capsys.readouterr().err
        assert "sknet[tensorboard]" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "cli").exists()
    else:
        train(**TINY, output=str(tmp_path / "tb"), tensorboard=True)
        assert list((tmp_path / "tb" / "tensorboard").iterdir())


def test_eval_on_an_image_folder_with_a_crop_counts_unreadable_files(tmp_path, capsys):
    import json

    root = image_tree(tmp_path / "data", bad=True)
    out = tmp_path / "run"
    train(**dict(TINY, dataset="imagenet", data_dir=str(root), train_limit=None, val_limit=None, batch_size=15,
                 output=str(out)))  # fmt: skip
    shutil.copy(root / "train" / "cat" / "truncated.jpg", root / "val" / "cat" / "truncated.jpg")
    capsys.readouterr()
    args = ["eval", "--checkpoint", str(out / "model.safetensors"), "--dataset", "imagenet", "--data-dir", str(root),
            "--crop", "16", "--json", "--no-progress", "--workers", "0"]  # fmt: skip
    assert cli.main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["images"], result["skipped"], result["crop"]) == (12, 1, 16)
    assert cli.main(args[:-4] + ["--on-corrupt", "fail", "--no-progress", "--workers", "0"]) == 2
    assert "truncated.jpg" in capsys.readouterr().err


# --------------------------------------------------------------------------- constants, from their sources


def test_imagenet_normalisation_and_eval_crop_are_timms_and_torchvisions():
    """The table's ImageNet mean / std are the libraries' whose weights we load, and our evaluation
    transform is torchvision's for those weights: resize the short side to 256, centre crop 224."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from torchvision.models import ResNeXt50_32X4D_Weights

    mean, std = NORMALIZATION["imagenet"]
    assert (mean, std) == (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    theirs = ResNeXt50_32X4D_Weights.IMAGENET1K_V1.transforms()  # the paper's protocol (V2's resizes to 232)
    for weights in ResNeXt50_32X4D_Weights:
        assert (tuple(weights.transforms().mean), tuple(weights.transforms().std)) == (mean, std)
    assert (theirs.resize_size, theirs.crop_size) == ([round(224 / EVAL_CROP_RATIO)], [224])
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:300, 0:400]  # a landscape photo: a gradient per channel, plus noise
    pixels = np.stack([x * 255 / 400, y * 255 / 300, (x + y) * 255 / 700], -1) + rng.integers(0, 40, (300, 400, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    ours = eval_transform(mean, std, 224)(image)
    # PIL's resize (theirs) and torch's (ours) may round a pixel apart: one level, 1/255, in normalised units
    torch.testing.assert_close(ours, theirs(image), rtol=0, atol=1.5 / 255 / min(std))


def _pixel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over every pixel of (N, H, W, C) uint8 images, in [0, 1]."""
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255
    return x.mean(0), x.std(0)


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").is_file(), reason="needs Fashion-MNIST")
def test_fashion_mnist_normalisation_is_its_train_images():
    with gzip.open(FASHION / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(60000, 28, 28, 1)  # IDX: a 16-byte header
    np.testing.assert_allclose(_pixel_stats(images), NORMALIZATION["fashion-mnist"], rtol=0, atol=5e-5)


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").is_file(), reason="needs Fashion-MNIST")
def test_scaled_fashion_mnist_normalisation_is_its_rendered_train_images():
    """A tenth of the rendered split (its first items: the same as in the whole): within its sampling error."""
    images = ScaledFashionMNIST(FASHION, normalize=False, max_items=6000).images.numpy()[..., None]
    np.testing.assert_allclose(_pixel_stats(images), NORMALIZATION["fashion-mnist-scaled"], rtol=0, atol=2e-3)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_normalisation_is_its_train_images(name):
    from torchvision.datasets import CIFAR10, CIFAR100

    root = Path(DEFAULT_ROOTS[name])
    dataset = CIFAR10 if name == "cifar10" else CIFAR100
    if not (root / dataset.base_folder).is_dir():
        pytest.skip(f"needs {name} in {root}")
    images = dataset(str(root), train=True).data  # (50000, 32, 32, 3) uint8
    np.testing.assert_allclose(_pixel_stats(images), NORMALIZATION[name], rtol=0, atol=5e-5)


# --------------------------------------------------------------------------- readers


class _ReversedListing:
    """``os.scandir``'s iterator, its entries in reverse name order."""

    def __init__(self, entries) -> None:
        self.entries = iter(sorted(entries, key=lambda e: e.name, reverse=True))

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.entries)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def test_imagenet_folders_of_upper_case_jpeg_in_any_listing_order_give_sorted_classes(tmp_path, monkeypatch):
    """ImageNet's files end in .JPEG; class indices are the sorted folder names (torchvision's
    ImageFolder), whatever order the file system lists them in."""
    names = ["n02", "n01", "b", "A"]
    for c, name in enumerate(names):
        for i in range(2):
            save(tmp_path / "train" / name / f"{name}_{i}.JPEG", Image.new("RGB", (20, 20), (60 * c, 90, 200)), "JPEG")
    scandir, listdir = os.scandir, os.listdir
    monkeypatch.setattr(os, "scandir", lambda path=".": _ReversedListing(scandir(path)))
    monkeypatch.setattr(os, "listdir", lambda path=".": sorted(listdir(path), reverse=True))
    assert [p.name for p in tmp_path.joinpath("train").iterdir()] == ["n02", "n01", "b", "A"]  # the patch holds
    ds = build_dataset("imagenet", tmp_path, "train", crop=16)
    assert ds.info.classes == ("A", "b", "n01", "n02") and ds.classes == list(ds.info.classes)
    assert len(ds) == 8
    for path, target in ds.samples:
        assert ds.info.classes[target] == Path(path).parent.name
    image, target = ds[len(ds) - 1]
    assert image.shape == (3, 16, 16) and ds.info.classes[target] == "n02"


def test_scaled_fashion_mnist_places_objects_at_every_offset_up_to_the_far_edges(tmp_path):
    """A 28-pixel object on a 56-pixel canvas has 56 - 28 + 1 = 29 positions per axis, 0 and 28 included,
    each drawn with probability 1/29."""
    from test_analysis import _write_idx

    n = 6000
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.full((n, 28, 28), 255, np.uint8))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(n) % 10)
    ds = ScaledFashionMNIST(tmp_path, scale_range=(1.0, 1.0), canvas=56, normalize=False)
    assert (ds.sides == 28).all()
    for axis in (0, 1):
        counts = np.bincount(ds.offsets[:, axis].numpy(), minlength=29)
        assert len(counts) == 29 and (counts > 0.75 * n / 29).all() and (counts < 1.25 * n / 29).all(), counts
    for i in (int(ds.offsets[:, 0].argmax()), int(ds.offsets[:, 1].argmax())):  # an object at a far edge
        top, left = ds.offsets[i].tolist()
        rows, cols = ds.images[i].nonzero(as_tuple=True)
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (top, top + 27, left, left + 27)
        assert 55 in (rows.max(), cols.max())
