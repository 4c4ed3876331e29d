"""Transforms: seeded augmentation, the fast in-memory pad/crop/flip, and the paper's photo pipeline.

Augmentation randomness is a function of ``(seed, epoch, index)`` (:class:`SeededTransform`),
not of a process-global generator: a sample gets the same crop whether it is loaded by
the main process or a worker, on rank 0 or rank 3, in a straight run or after a resume.
That is what makes resumed and multi-process runs reproduce single-process ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


EVAL_CROP_RATIO = 0.875
"""Evaluation's single centre crop, as a fraction of the resized image's shorter side: a 224 crop of
the image resized to 256 (docs/paper.md)."""


def eval_transform(
    mean: Sequence[float],
    std: Sequence[float],
    size: int | tuple[int, int] | None = None,
    crop_ratio: float | None = EVAL_CROP_RATIO,
) -> Callable:
    """Evaluation's transform: resize the shorter side to ``size / crop_ratio`` and take the centre
    ``size`` crop (the paper's single crop); ``crop_ratio=None`` resizes the whole image to ``size``
    (an ``(H, W)`` pair, or the shorter side) instead; ``size=None`` keeps the image's own size.

    Images of any size and mode come in; they leave as normalised float tensors.
    """
    steps: list = [T.ToImage()]
    if size is not None and crop_ratio is None:
        steps += [T.Resize(size, antialias=True)]
    elif size is not None:
        steps += [T.Resize(round(size / crop_ratio), antialias=True), T.CenterCrop(size)]
    return T.Compose([*steps, *_scaled_and_normalised(mean, std)])


def image_transform(
    info: DatasetInfo,
    train: bool,
    *,
    crop: int | None = None,
    scale_min: float = 0.08,
    pad: int = 0,
    hflip: bool = True,
    eval_crop_ratio: float = EVAL_CROP_RATIO,
) -> Callable:
    """The paper's augmentation for photos (random-size crop + flip) or, with ``pad``, the
    CIFAR one (pad + random crop + flip); evaluation: :func:`eval_transform`.

    Images of any size and mode come in; they leave as normalised (C, crop, crop) tensors.
    """
    size = crop or info.input_size[-1]
    if not train:  # fixed-size datasets (those padded in training) are only resized when a crop size is asked for
        return eval_transform(info.mean, info.std, size if crop or not pad else None, eval_crop_ratio)
    steps: list = [T.ToImage()]
    if pad:
        steps += [T.Resize(size, antialias=True)] if crop else []
        steps += [T.RandomCrop(size, padding=pad)]
    else:
        steps += [T.RandomResizedCrop(size, scale=(scale_min, 1.0), antialias=True)]
    if hflip:
        steps += [T.RandomHorizontalFlip()]
    return T.Compose([*steps, *_scaled_and_normalised(info.mean, info.std)])


def _scaled_and_normalised(mean: Sequence[float], std: Sequence[float]) -> list:
    return [T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]


def apply_transform(transform: Callable, x, index: int):
    """``transform(x)``, or ``transform(x, index)`` for a :class:`SeededTransform`."""
    return transform(x, index) if isinstance(transform, SeededTransform) else transform(x)
