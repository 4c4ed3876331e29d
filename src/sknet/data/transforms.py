"""Transforms: seeded augmentation, the fast in-memory pad/crop/flip, and the paper's photo pipeline.

Augmentation randomness is a function of ``(seed, epoch, index)`` (:class:`SeededTransform`),
not of a process-global generator: a sample gets the same crop whether it is loaded by
the main process or a worker, on rank 0 or rank 3, in a straight run or after a resume.
That is what makes resumed and multi-process runs reproduce single-process ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms import v2 as T

from .info import DatasetInfo


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
    normalise. Without ``train`` it only normalises. Signals (C, L) and volumes (C, D, H, W)
    get the flip of their last dimension and the normalisation (no padded crop).

    The same result as torchvision's ``v2.RandomCrop(size, padding=pad)``,
    ``v2.RandomHorizontalFlip()``, ``v2.ToDtype(scale=True)`` and ``v2.Normalize``
    (tested against them), at ~1/6 of their per-image cost, which on 28x28 images
    and two cores is a good part of an epoch.
    """

    def __init__(self, mean, std, pad: int = 0, hflip: bool = True, train: bool = True) -> None:
        std = torch.tensor(std, dtype=torch.float32)
        self.scale = 1.0 / (255.0 * std)  # (C,)
        self.shift = -torch.tensor(mean, dtype=torch.float32) / std
        self.pad, self.hflip, self.train = pad, hflip, train

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        x = img.float()
        if self.train and self.pad:
            if x.dim() != 3:
                raise ValueError(f"the padded random crop is for images (C, H, W), got shape {tuple(x.shape)}")
            h, w = x.shape[-2:]
            i, j = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            x = torch.nn.functional.pad(x, (self.pad,) * 4)[:, i : i + h, j : j + w]
        if self.train and self.hflip and torch.rand(()).item() < 0.5:
            x = x.flip(-1)
        per_channel = (-1, *[1] * (x.dim() - 1))  # (C, 1, ...)
        return x.mul_(self.scale.view(per_channel)).add_(self.shift.view(per_channel))


class RandomFlip:
    """Reverse the last dimension with probability 1/2 (in training): a signal's time, an image's width."""

    def __init__(self, train: bool = True) -> None:
        self.train = train

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1) if self.train and torch.rand(()).item() < 0.5 else x


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


def apply_transform(transform: Callable, x, index: int):
    """``transform(x)``, or ``transform(x, index)`` for a :class:`SeededTransform`."""
    return transform(x, index) if isinstance(transform, SeededTransform) else transform(x)
