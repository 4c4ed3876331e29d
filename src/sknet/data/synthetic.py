"""Synthetic, learnable images for smoke tests and benchmarks: no files needed."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from .transforms import apply_transform


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
        return apply_transform(self.transform, img, index), target
