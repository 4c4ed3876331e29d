"""The one table of datasets: ``DATASETS`` maps a name to its builder, :func:`build_dataset` builds one.

A builder is ``builder(root, split, *, train, options) -> Dataset``; every dataset it returns
carries ``.info`` (:class:`~sknet.data.info.DatasetInfo`: classes, input size, normalisation)
and ``.classes``. Nothing is downloaded unless ``download=True``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .fashion_mnist import DEBIAN_ROOT, FASHION_MNIST_CLASSES, load_fashion_mnist
from .fashion_scaled import ScaledFashionMNIST
from .images import IMAGE_EXTENSIONS, ImageFiles, TensorImages
from .info import NORMALIZATION, DatasetInfo, data_not_found
from .synthetic import FakeImages, ScaledBursts, ScaledFashionMNISTVolumes
from .transforms import PadCropFlip, RandomFlip, SeededTransform, image_transform

DEFAULT_ROOTS = {
    "fashion-mnist": DEBIAN_ROOT,
    "fashion-mnist-scaled": DEBIAN_ROOT,
    "fashion-mnist-3d": DEBIAN_ROOT,
    "imagenet": "data/imagenet",
    "cifar10": "data/cifar10",
    "cifar100": "data/cifar100",
}


def _transform(info: DatasetInfo, train: bool, options: dict, pad: int = 0, in_memory: bool = False):
    """The split's transform: the fast in-memory one for small images at their own size, else
    torchvision's; training augmentation seeded per sample."""
    pad = options.get("pad", pad)
    if in_memory and options.get("crop") in (None, info.input_size[-1]):  # small images at their own size
        tf = PadCropFlip(info.mean, info.std, pad, options.get("hflip", True), train)
    else:
        keys = ("crop", "scale_min", "hflip", "eval_crop_ratio")
        tf = image_transform(info, train, pad=pad, **{k: options[k] for k in keys if k in options})
    return SeededTransform(tf, options.get("seed", 0)) if train else tf


def _class_folders(folder: Path) -> list[str]:
    """The class sub-folders of an ImageFolder split; an empty one is an error that names it."""
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    for cls in classes:
        if not any(p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS) for p in (folder / cls).rglob("*")):
            raise FileNotFoundError(
                f"class folder {str(folder / cls)!r} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)}); "
                "add its images, or remove the folder if the class is not meant to be there"
            )
    return classes


def image_folder(root: Path, split: str, *, train: bool, options: dict, name: str = "imagefolder") -> Dataset:
    """An ImageFolder tree: ``ROOT/train/<class>/*`` and ``ROOT/val/<class>/*``.

    ``imagenet`` is this with ImageNet's normalisation. ``imagefolder`` also takes a single
    ``ROOT/<class>/*`` tree (every split then reads it, e.g. to evaluate or analyse a folder of
    validation images) and the normalisation ``mean`` / ``std`` options (default ImageNet's).
    """
    folder = root / ("train" if split == "train" else "val")
    if name == "imagefolder" and not folder.is_dir() and root.is_dir():
        folder = root
    expected = f"  {root}/train/<class>/<image>.JPEG\n  {root}/val/<class>/<image>.JPEG"
    fix = "Arrange the validation images into one folder per class (e.g. with the usual valprep.sh)."
    if not folder.is_dir():
        raise data_not_found(name, root, expected, fix)
    classes = _class_folders(folder)
    if not classes:
        raise data_not_found(name, root, expected, f"{folder} has no class sub-folders. " + fix)
    mean, std = NORMALIZATION["imagenet"]
    if name == "imagefolder":
        mean, std = tuple(options.get("mean") or mean), tuple(options.get("std") or std)
    info = DatasetInfo(name, len(classes), (3, 224, 224), mean, std, tuple(classes))
    ds = ImageFiles(folder, _transform(info, train, options), options.get("on_corrupt", "skip"))
    ds.info = info
    return ds


def cifar(root: Path, split: str, *, train: bool, options: dict, num_classes: int = 10) -> Dataset:
    """CIFAR-10/100 in the python-pickle folders ``cifar-10-batches-py`` / ``cifar-100-python``."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if num_classes == 10 else CIFAR100
    name = f"cifar{num_classes}"
    if root.name == cls.base_folder:  # accept the pickle folder itself as well as its parent
        root = root.parent
    download = options.get("download", False)
    if not download and not (root / cls.base_folder).is_dir():
        files = "data_batch_1..5, test_batch, batches.meta" if num_classes == 10 else "train, test, meta"
        raise data_not_found(
            name, root, f"  {root}/{cls.base_folder}/{{{files}}}", "Download it once with --download, or untar "
            f"the python version from https://www.cs.toronto.edu/~kriz/ into {root}.",
        )  # fmt: skip
    try:
        base = cls(str(root), train=split == "train", download=download)
    except RuntimeError as e:  # torchvision's integrity check
        raise ValueError(f"{name} files in {root / cls.base_folder} are incomplete or corrupt ({e})") from e
    mean, std = NORMALIZATION[name]
    info = DatasetInfo(name, num_classes, (3, 32, 32), mean, std, tuple(base.classes))
    images = torch.from_numpy(base.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32) uint8
    ds = TensorImages(images, torch.tensor(base.targets), _transform(info, train, options, pad=4, in_memory=True))
    ds.info, ds.classes = info, list(info.classes)
    return ds


def fashion_mnist(root: Path, split: str, *, train: bool, options: dict) -> Dataset:
    """Fashion-MNIST from its four idx files (``.gz`` or not), flat in ``root`` (Debian's
    layout) or in torchvision's ``root/FashionMNIST/raw``."""
    images, targets = load_fashion_mnist(root, split == "train", options.get("download", False))
    mean, std = NORMALIZATION["fashion-mnist"]
    info = DatasetInfo("fashion-mnist", 10, (1, 28, 28), mean, std, FASHION_MNIST_CLASSES)
    ds = TensorImages(images.unsqueeze(1), targets, _transform(info, train, options, pad=2, in_memory=True))
    ds.info, ds.classes = info, list(info.classes)
    return ds


def fashion_mnist_scaled(root: Path, split: str, *, train: bool, options: dict) -> ScaledFashionMNIST:
    """Fashion-MNIST with objects of random size at random positions (:class:`ScaledFashionMNIST`).

    Factors and positions come from ``options["data_seed"]`` (default 0), not from the
    training seed, so every run of a study sees the same images. Training augmentation:
    horizontal flip (``hflip``) and, only if ``pad`` is given, pad + random crop; the random
    placement already varies position and size. ``canvas`` and ``scale_range`` change the geometry.
    """
    canvas = int(options.get("canvas", 56))
    mean, std = NORMALIZATION["fashion-mnist-scaled"]
    info = DatasetInfo("fashion-mnist-scaled", 10, (1, canvas, canvas), mean, std, FASHION_MNIST_CLASSES)
    tf = PadCropFlip(mean, std, int(options.get("pad") or 0), bool(options.get("hflip", True)), train)
    ds = ScaledFashionMNIST(
        root,
        train=split == "train",
        seed=int(options.get("data_seed", 0)),
        canvas=canvas,
        scale_range=tuple(options.get("scale_range", (0.75, 2.0))),
        transform=SeededTransform(tf, options.get("seed", 0)) if train else tf,
    )
    ds.info = info
    return ds


def bursts_1d(root: Path | None, split: str, *, train: bool, options: dict) -> Dataset:
    """1-D signals of 256 samples, 5 classes: a burst of 1-5 cycles, 16-128 samples wide
    (:class:`ScaledBursts`; no files). ``size`` items (default 6000 train / 2000 val); training
    flips time (``hflip``)."""
    size = options.get("size") or (6000 if split == "train" else 2000)
    names = tuple(f"{k} cycle{'s' if k > 1 else ''}" for k in range(1, 6))
    info = DatasetInfo("bursts-1d", 5, (1, 256), (0.0,), (1.0,), names)  # float signals of mean 0, used as they are
    tf = SeededTransform(RandomFlip(), options.get("seed", 0)) if train and options.get("hflip", True) else None
    ds = ScaledBursts(size, seed=2 * int(options.get("data_seed", 0)) + (split != "train"), transform=tf)
    ds.info, ds.classes = info, list(names)
    return ds


def fashion_mnist_3d(root: Path, split: str, *, train: bool, options: dict) -> Dataset:
    """Volumes of 16 x 32 x 32: a Fashion-MNIST item of random size (12-32 pixels) extruded
    through a run of slices at a random place (:class:`ScaledFashionMNISTVolumes`); the
    Fashion-MNIST files in ``root``. Training flips the last dimension (``hflip``)."""
    images, labels = load_fashion_mnist(root, split == "train", options.get("download", False))
    mean, std = NORMALIZATION["fashion-mnist-3d"]
    info = DatasetInfo("fashion-mnist-3d", 10, (1, 16, 32, 32), mean, std, FASHION_MNIST_CLASSES)
    tf = PadCropFlip(mean, std, 0, bool(options.get("hflip", True)), train)
    ds = ScaledFashionMNISTVolumes(
        images, labels, seed=2 * int(options.get("data_seed", 0)) + (split != "train"),
        transform=SeededTransform(tf, options.get("seed", 0)) if train else tf,
    )  # fmt: skip
    ds.info, ds.classes = info, list(FASHION_MNIST_CLASSES)
    return ds


def fake(root: Path | None, split: str, *, train: bool, options: dict) -> Dataset:
    """Synthetic data for smoke tests and benchmarks (no files): ``size`` images (default
    10000 train / 1000 val) of ``input_size`` (default 3x32x32), ``num_classes`` classes."""
    c, h, w = options.get("input_size") or (3, 32, 32)
    num_classes = options.get("num_classes") or 10
    size = options.get("size") or (10000 if split == "train" else 1000)
    info = DatasetInfo("fake", num_classes, (c, h, w), (0.5,) * c, (0.25,) * c, tuple(map(str, range(num_classes))))
    transform = _transform(info, train, options, pad=2, in_memory=True)
    ds = FakeImages(size, (c, h, w), num_classes, 1 if split == "train" else 2, transform)
    ds.info, ds.classes = info, list(info.classes)
    return ds


DATASETS: dict[str, Callable[..., Dataset]] = {
    "imagenet": partial(image_folder, name="imagenet"),
    "cifar10": partial(cifar, num_classes=10),
    "cifar100": partial(cifar, num_classes=100),
    "fashion-mnist": fashion_mnist,
    "fashion-mnist-scaled": fashion_mnist_scaled,
    "imagefolder": image_folder,
    "bursts-1d": bursts_1d,
    "fashion-mnist-3d": fashion_mnist_3d,
    "fake": fake,
}


def build_dataset(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    *,
    augment: bool | None = None,
    **options,
) -> Dataset:
    """Build a dataset by name.

    Args:
        name: A key of :data:`DATASETS`.
        root: Data folder; None uses the dataset's default (:data:`DEFAULT_ROOTS`).
        split: ``"train"`` or ``"val"`` (``"test"`` is the same as ``"val"``).
        augment: Training augmentation; defaults to ``split == "train"``.
        **options: ``crop`` (image size), ``scale_min`` (random-size crop), ``pad`` (pad +
            random crop instead), ``hflip``, ``eval_crop_ratio``, ``on_corrupt``
            (``"skip"``/``"fail"``), ``download``, ``seed``; ``mean`` / ``std`` for
            ``imagefolder``; ``data_seed``, ``canvas``, ``scale_range`` for
            ``fashion-mnist-scaled``; ``size``, ``input_size``, ``num_classes`` for ``fake``.

    Returns:
        A map-style dataset of ``(image, label)`` with ``.info`` (:class:`DatasetInfo`)
        and ``.classes``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    root = Path(os.path.expanduser(str(root))) if root else Path(DEFAULT_ROOTS.get(name, "."))
    split = "val" if split == "test" else split
    return DATASETS[name](root, split, train=split == "train" if augment is None else augment, options=options)


def set_epoch(dataset: Dataset, epoch: int) -> None:
    """Tell the dataset's seeded augmentation which epoch it is in."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    tf = getattr(dataset, "transform", None)
    if isinstance(tf, SeededTransform):
        tf.epoch = epoch
