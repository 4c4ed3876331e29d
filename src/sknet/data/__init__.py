"""Datasets, transforms and readers: ``build_dataset(name, root, split)`` for every name in ``DATASETS``."""

from .datasets import DATASETS, DEFAULT_ROOTS, build_dataset, set_epoch
from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, read_idx
from .fashion_scaled import ScaledFashionMNIST
from .images import ImageFiles, TensorImages, collate_skip, open_image
from .info import NORMALIZATION, DatasetInfo
from .transforms import PadCropFlip, SeededTransform, image_transform

__all__ = [
    "DATASETS",
    "DEFAULT_ROOTS",
    "FASHION_MNIST_CLASSES",
    "NORMALIZATION",
    "DatasetInfo",
    "ImageFiles",
    "PadCropFlip",
    "ScaledFashionMNIST",
    "SeededTransform",
    "TensorImages",
    "build_dataset",
    "collate_skip",
    "image_transform",
    "load_fashion_mnist",
    "open_image",
    "read_idx",
    "set_epoch",
]
