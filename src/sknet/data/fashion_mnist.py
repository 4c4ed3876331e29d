"""Fashion-MNIST's idx files: the one reader, used by both Fashion-MNIST datasets."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from .info import data_not_found

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
_STEMS = {True: "train", False: "t10k"}


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


def find_idx(root: Path, name: str) -> Path | None:
    """``name[.gz]`` flat in ``root`` (Debian's layout) or in torchvision's ``root/FashionMNIST/raw``."""
    for folder in (root, root / "FashionMNIST" / "raw"):
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return candidate
    return None


def load_fashion_mnist(
    root: str | Path, train: bool = True, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 of one split.

    Args:
        root: Folder with the four idx files (``.gz`` or unpacked), or torchvision's layout.
        train: The 60,000 training images, else the 10,000 test images.
        download: Let torchvision fetch the files into ``root`` if they are missing.

    Raises:
        FileNotFoundError: The files are not there (the message says how to install them).
    """
    root = Path(root)
    names = (f"{_STEMS[train]}-images-idx3-ubyte", f"{_STEMS[train]}-labels-idx1-ubyte")
    if download and not find_idx(root, names[0]):
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=train, download=True)
    files = [find_idx(root, n) for n in names]
    if None in files:
        raise data_not_found(
            "fashion-mnist",
            root,
            f"  {root}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz]",
            "Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; files land in "
            f"{DEBIAN_ROOT}), or pass --download to fetch it with torchvision, or copy the four .gz files from "
            "https://github.com/zalandoresearch/fashion-mnist into that folder.",
        )
    images, labels = read_idx(files[0]), read_idx(files[1]).long()
    if len(images) != len(labels):
        raise ValueError(f"{files[0]} holds {len(images)} images but {files[1]} {len(labels)} labels")
    return images, labels
