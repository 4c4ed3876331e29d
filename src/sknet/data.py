"""Datasets and their transforms: ImageNet, CIFAR-10/100, Fashion-MNIST and synthetic data.

``DATASETS`` maps a name to a builder ``builder(root, split, **options) -> Dataset``;
:func:`build_dataset` is the entry point. Every dataset it returns carries ``.info``
(:class:`DatasetInfo`: classes, input size, normalisation mean/std). Nothing is
downloaded unless ``download=True``.

Augmentation randomness is a function of ``(seed, epoch, index)`` (:class:`SeededTransform`),
not of a process-global generator: a sample gets the same crop whether it is loaded by
the main process or a worker, on rank 0 or rank 3, in a straight run or after a resume.
That is what makes resumed and multi-process runs reproduce single-process ones.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a predictor need to know about a dataset."""

    name: str
    num_classes: int
    input_size: tuple[int, int, int]  # (C, H, W) the model sees
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = field(default=())


# Per-channel mean / std of the training images, in [0, 1] units.
NORMALIZATION = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DEFAULT_ROOTS = {
    "fashion-mnist": "/usr/share/datasets/fashion-mnist",  # Debian's dataset-fashion-mnist
    "imagenet": "data/imagenet",
    "cifar10": "data/cifar10",
    "cifar100": "data/cifar100",
}


# --------------------------------------------------------------------------- transforms


class SeededTransform:
    """Apply ``transform`` with torch's RNG seeded from ``(seed, epoch, index)``.

    The global RNG is restored afterwards, so the model's own randomness is untouched.
    """

    def __init__(self, transform: Callable, seed: int = 0) -> None:
        self.transform, self.seed, self.epoch = transform, seed, 0

    def __call__(self, x, index: int):
        # The CPU generator directly: torch.manual_seed / fork_rng also visit every
        # accelerator and cost ~100x more, which shows on 28x28 images.
        gen = torch.default_generator
        state = gen.get_state()
        gen.manual_seed((self.seed * 1_000_003 + self.epoch) * 100_000_007 + index)
        try:
            return self.transform(x)
        finally:
            gen.set_state(state)


class PadCropFlip:
    """CIFAR-style augmentation for in-memory uint8 images (C, H, W): zero-pad ``pad`` pixels,
    take a random H x W crop, flip horizontally with probability 1/2, scale to [0, 1] and
    normalise. Without ``train`` it only normalises.

    The same result as torchvision's ``v2.RandomCrop(size, padding=pad)``,
    ``v2.RandomHorizontalFlip()``, ``v2.ToDtype(scale=True)`` and ``v2.Normalize``
    (tested against them), at ~1/6 of their per-image cost, which on 28x28 images
    and two cores is a good part of an epoch.
    """

    def __init__(self, mean, std, pad: int = 0, hflip: bool = True, train: bool = True) -> None:
        std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.scale = 1.0 / (255.0 * std)  # (C, 1, 1)
        self.shift = -torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) / std
        self.pad, self.hflip, self.train = pad, hflip, train

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        x = img.float()
        if self.train and self.pad:
            h, w = x.shape[-2:]
            i, j = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            x = torch.nn.functional.pad(x, (self.pad,) * 4)[:, i : i + h, j : j + w]
        if self.train and self.hflip and torch.rand(()).item() < 0.5:
            x = x.flip(-1)
        return x.mul_(self.scale).add_(self.shift)


def image_transform(
    info: DatasetInfo,
    train: bool,
    *,
    crop: int | None = None,
    scale_min: float = 0.08,
    pad: int = 0,
    hflip: bool = True,
    eval_crop_ratio: float = 0.875,
) -> Callable:
    """The paper's augmentation for photos (random-size crop + flip) or, with ``pad``, the
    CIFAR one (pad + random crop + flip); evaluation: resize then a single centre crop.

    Images of any size and mode come in; they leave as normalised (C, crop, crop) tensors.
    """
    size = crop or info.input_size[-1]
    steps: list = [T.ToImage()]
    if train and pad:
        steps += [T.Resize(size, antialias=True)] if crop else []
        steps += [T.RandomCrop(size, padding=pad)]
    elif train:
        steps += [T.RandomResizedCrop(size, scale=(scale_min, 1.0), antialias=True)]
    else:
        # Fixed-size datasets are only resized when a crop size is asked for.
        resize = round(size / eval_crop_ratio) if pad == 0 or crop else None
        steps += [T.Resize(resize, antialias=True), T.CenterCrop(size)] if resize else []
    if train and hflip:
        steps += [T.RandomHorizontalFlip()]
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(info.mean, info.std)]
    return T.Compose(steps)


# --------------------------------------------------------------------------- image files


def open_image(path: str, channels: int = 3):
    """Open an image as RGB (or L for one channel): grayscale, CMYK, palette, 16-bit and
    alpha images are converted. Raises OSError for unreadable or truncated files."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # decode now: truncated files fail here, not later
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        return img.convert("RGB" if channels == 3 else "L")


class ImageFiles(Dataset):
    """An ImageFolder tree with configurable handling of unreadable images.

    ``on_corrupt="skip"`` returns None for a file that fails to decode (the loader's collate
    drops it and counts it); ``"fail"`` raises ``ValueError`` naming the file.
    """

    def __init__(self, root: Path, transform: Callable, on_corrupt: str = "skip", channels: int = 3) -> None:
        from torchvision.datasets import ImageFolder

        if on_corrupt not in ("skip", "fail"):
            raise ValueError(f"on_corrupt must be 'skip' or 'fail', got {on_corrupt!r}")
        folder = ImageFolder(str(root), loader=lambda p: p, is_valid_file=_is_image)
        self.samples, self.classes = folder.samples, folder.classes
        self.transform, self.on_corrupt, self.channels = transform, on_corrupt, channels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            img = open_image(path, self.channels)
        except Exception as e:  # noqa: BLE001 - PIL raises several types for bad files
            if self.on_corrupt == "fail":
                raise ValueError(
                    f"cannot read image {path!r}: {type(e).__name__}: {e}. Remove or replace it, "
                    "or set on_corrupt: skip to skip unreadable images"
                ) from e
            return None
        return _apply(self.transform, img, index), target


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _apply(transform, x, index):
    return transform(x, index) if isinstance(transform, SeededTransform) else transform(x)


def collate_skip(batch: list):
    """Default collation after dropping samples that came back as None (unreadable files).

    Returns ``(images, targets, skipped)``.
    """
    kept = [b for b in batch if b is not None]
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), len(batch)
    images, targets = torch.utils.data.default_collate(kept)
    return images, targets, len(batch) - len(kept)


class TensorImages(Dataset):
    """Images held in memory as a uint8 tensor (N, C, H, W) with integer labels."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, transform: Callable | None) -> None:
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        img = self.images[index]
        return (_apply(self.transform, img, index) if self.transform else img), int(self.targets[index])


# --------------------------------------------------------------------------- builders


def _layout_error(name: str, root: Path, expected: str, fix: str) -> FileNotFoundError:
    return FileNotFoundError(f"{name} data not found in {str(root)!r}. Expected layout:\n{expected}\n{fix}")


def imagenet(root: Path, split: str, *, train: bool, options: dict) -> Dataset:
    """ImageNet-1k (or any ImageFolder tree): ``ROOT/train/<class>/*.JPEG``, ``ROOT/val/<class>/*.JPEG``."""
    folder = root / ("train" if split == "train" else "val")
    expected = f"  {root}/train/<class>/<image>.JPEG\n  {root}/val/<class>/<image>.JPEG"
    fix = "Arrange the validation images into one folder per class (e.g. with the usual valprep.sh)."
    if not folder.is_dir():
        raise _layout_error("imagenet", root, expected, fix)
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise _layout_error("imagenet", root, expected, f"{folder} has no class sub-folders. " + fix)
    mean, std = NORMALIZATION["imagenet"]
    info = DatasetInfo("imagenet", len(classes), (3, 224, 224), mean, std, tuple(classes))
    try:
        ds = ImageFiles(folder, _transform(info, train, options), options.get("on_corrupt", "skip"))
    except FileNotFoundError as e:  # ImageFolder: a class folder without images
        raise _layout_error("imagenet", root, expected, str(e)) from e
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
        raise _layout_error(
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


def read_idx(path: Path) -> torch.Tensor:
    """Read an idx file (the MNIST format; gzipped or not) into a uint8 tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{str(path)!r} is not an unsigned-byte idx file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{str(path)!r} is truncated: header says {shape}, found {body.size} bytes")
    return torch.from_numpy(body.reshape(shape).copy())


def fashion_mnist(root: Path, split: str, *, train: bool, options: dict) -> Dataset:
    """Fashion-MNIST from its four idx files (``.gz`` or not), flat in ``root`` (Debian's
    layout) or in torchvision's ``root/FashionMNIST/raw``."""
    stem = "train" if split == "train" else "t10k"
    names = (f"{stem}-images-idx3-ubyte", f"{stem}-labels-idx1-ubyte")
    if options.get("download") and not _find_idx(root, names[0]):
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=split == "train", download=True)
    files = [_find_idx(root, n) for n in names]
    if None in files:
        raise _layout_error(
            "fashion-mnist",
            root,
            f"  {root}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz]",
            "Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; files land in "
            f"{DEFAULT_ROOTS['fashion-mnist']}), or pass --download to fetch it with torchvision, or copy the "
            "four .gz files from https://github.com/zalandoresearch/fashion-mnist into that folder.",
        )
    images, targets = read_idx(files[0]).unsqueeze(1), read_idx(files[1]).long()  # (N, 1, 28, 28)
    if len(images) != len(targets):
        raise ValueError(f"{files[0]} holds {len(images)} images but {files[1]} {len(targets)} labels")
    mean, std = NORMALIZATION["fashion-mnist"]
    info = DatasetInfo("fashion-mnist", 10, (1, 28, 28), mean, std, FASHION_MNIST_CLASSES)
    ds = TensorImages(images, targets, _transform(info, train, options, pad=2, in_memory=True))
    ds.info, ds.classes = info, list(info.classes)
    return ds


def _find_idx(root: Path, name: str) -> Path | None:
    for folder in (root, root / "FashionMNIST" / "raw"):
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return candidate
    return None


class FakeImages(Dataset):
    """Synthetic, learnable images: a smooth pattern per class (upsampled 4x4 noise, which
    survives crops and flips) plus per-image noise, made on demand from ``(seed, index)``."""

    def __init__(self, size: int, input_size, num_classes: int, seed: int, transform: Callable) -> None:
        c, h, w = input_size
        g = torch.Generator().manual_seed(0)  # the same classes in every split
        self.patterns = torch.nn.functional.interpolate(
            torch.rand(num_classes, c, 4, 4, generator=g), (h, w), mode="bilinear"
        )  # (K, C, H, W)
        self.targets = torch.randint(num_classes, (size,), generator=g.manual_seed(seed))
        self.seed, self.transform = seed, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        target = int(self.targets[index])
        noise = torch.rand(self.patterns.shape[1:], generator=torch.Generator().manual_seed(self.seed * 2**32 + index))
        img = ((0.6 * self.patterns[target] + 0.4 * noise) * 255).to(torch.uint8)  # (C, H, W)
        return _apply(self.transform, img, index), target


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


def _transform(info: DatasetInfo, train: bool, options: dict, pad: int = 0, in_memory: bool = False):
    pad = options.get("pad", pad)
    if in_memory and options.get("crop") in (None, info.input_size[-1]):  # small images at their own size
        tf = PadCropFlip(info.mean, info.std, pad, options.get("hflip", True), train)
    else:
        keys = ("crop", "scale_min", "hflip", "eval_crop_ratio")
        tf = image_transform(info, train, pad=pad, **{k: options[k] for k in keys if k in options})
    return SeededTransform(tf, options.get("seed", 0)) if train else tf


DATASETS: dict[str, Callable[..., Dataset]] = {
    "imagenet": imagenet,
    "cifar10": partial(cifar, num_classes=10),
    "cifar100": partial(cifar, num_classes=100),
    "fashion-mnist": fashion_mnist,
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
            (``"skip"``/``"fail"``), ``download``, ``seed``; for ``fake``: ``size``,
            ``input_size``, ``num_classes``.

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


from . import fashion_scaled  # noqa: E402, F401  (registers "fashion-mnist-scaled")
