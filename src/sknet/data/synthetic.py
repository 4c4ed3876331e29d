"""Synthetic data made per index: learnable images for smoke tests, and the 1-D / 3-D tasks where the
receptive field matters (signals with patterns at many scales, volumes of Fashion-MNIST objects)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from .fashion_scaled import resize_items
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


class ScaledBursts(Dataset):
    """1-D signals whose class is a pattern that appears at any of a wide range of scales.

    Item ``i`` is a Gaussian-windowed sine burst of ``k`` cycles (the class: ``k = 1 ... K``) on
    white noise. Its width ``w`` (the window holds 6 standard deviations) is drawn from
    ``width_range``, its centre, amplitude and phase at random; the number of cycles does not
    depend on the width, so telling the classes apart needs a receptive field of the burst's size
    whatever that is. Everything about item ``i`` comes from ``(seed, i)``.

    Args:
        size: Number of items.
        length: Samples per signal.
        num_classes: K.
        width_range: ``(low, high)`` burst widths in samples.
        noise: Standard deviation of the white noise (the burst's amplitude is 0.5 to 1.5).
        seed: Seed of the items (each split its own).
        transform: Applied to the ``(1, length)`` float signal (training augmentation).
    """

    def __init__(
        self,
        size: int,
        length: int = 256,
        num_classes: int = 5,
        width_range: tuple[int, int] = (16, 128),
        noise: float = 0.25,
        seed: int = 0,
        transform: Callable | None = None,
    ) -> None:
        if not 0 < width_range[0] <= width_range[1] <= length:
            raise ValueError(f"width_range {width_range} must satisfy 0 < low <= high <= length ({length})")
        self.size, self.length, self.num_classes = size, length, num_classes
        self.width_range, self.noise, self.seed, self.transform = width_range, noise, seed, transform
        self.targets = torch.tensor([self._draw(i)[0] for i in range(size)])

    def __len__(self) -> int:
        return self.size

    def _draw(self, index: int) -> tuple[int, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 2**32 + index)
        label = int(torch.randint(self.num_classes, (), generator=g))
        low, high = self.width_range
        width, where, amplitude, phase = torch.rand(4, generator=g, dtype=torch.float64).unbind()
        width = low + (high - low) * width
        centre = width / 2 + (self.length - width) * where
        t = torch.arange(self.length, dtype=torch.float64)
        envelope = torch.exp(-0.5 * ((t - centre) / (width / 6)) ** 2)
        burst = (
            (0.5 + amplitude)
            * envelope
            * torch.sin(2 * torch.pi * (label + 1) * (t - centre) / width + 2 * torch.pi * phase)
        )
        signal = burst + self.noise * torch.randn(self.length, generator=g, dtype=torch.float64)
        return label, signal.float()[None]  # (1, L)

    def __getitem__(self, index: int):
        label, signal = self._draw(index)
        return (apply_transform(self.transform, signal, index) if self.transform else signal), label


class ScaledFashionMNISTVolumes(Dataset):
    """3-D volumes: a Fashion-MNIST item extruded through some slices, at random size and place.

    Item ``i`` is Fashion-MNIST item ``i`` resized to ``s x s`` pixels (``s`` drawn from
    ``side_range``), pasted at a random place of a ``depth x canvas x canvas`` black volume through
    a random run of consecutive slices (as many as ``s * depth / canvas``, at least 2): an object
    whose size varies in every dimension. Deterministic per ``(seed, i)``.

    Args:
        images: Fashion-MNIST images ``(N, 28, 28)`` uint8 and ``labels`` ``(N,)``.
        depth: Slices of the volume.
        canvas: Side of each slice.
        side_range: ``(low, high)`` object sides in pixels.
        seed: Seed of the sizes and places.
        transform: Applied to the ``(1, depth, canvas, canvas)`` uint8 volume (normalisation,
            training augmentation).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        depth: int = 16,
        canvas: int = 32,
        side_range: tuple[int, int] = (12, 32),
        seed: int = 0,
        transform: Callable | None = None,
    ) -> None:
        if not 0 < side_range[0] <= side_range[1] <= canvas:
            raise ValueError(f"side_range {side_range} must satisfy 0 < low <= high <= canvas ({canvas})")
        self.images, self.targets = images, labels
        self.depth, self.canvas, self.side_range, self.seed, self.transform = depth, canvas, side_range, seed, transform

    def __len__(self) -> int:
        return len(self.targets)

    def volume(self, index: int) -> torch.Tensor:
        """The uint8 volume ``(1, depth, canvas, canvas)`` of item ``index``."""
        g = torch.Generator().manual_seed(self.seed * 2**32 + index)
        side = int(torch.randint(self.side_range[0], self.side_range[1] + 1, (), generator=g))
        slices = max(2, round(side * self.depth / self.canvas))
        z, y, x = (int(torch.randint(n - m + 1, (), generator=g)) for n, m in
                   ((self.depth, slices), (self.canvas, side), (self.canvas, side)))  # fmt: skip
        out = torch.zeros(1, self.depth, self.canvas, self.canvas, dtype=torch.uint8)
        out[0, z : z + slices, y : y + side, x : x + side] = resize_items(self.images[index : index + 1], side)
        return out

    def __getitem__(self, index: int):
        vol = self.volume(index)
        return (apply_transform(self.transform, vol, index) if self.transform else vol), int(self.targets[index])
