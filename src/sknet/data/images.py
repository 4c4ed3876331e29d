"""Image files: opening any mode, an ImageFolder tree that skips unreadable files, in-memory images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .transforms import apply_transform

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


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
        return apply_transform(self.transform, img, index), target


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


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
        return (apply_transform(self.transform, img, index) if self.transform else img), int(self.targets[index])
