"""Scale-varied Fashion-MNIST: every item resized by a random factor and placed on a larger canvas.

Fashion-MNIST's objects all have about the same size; the paper's claim is that SK
neurons adapt their receptive field to the object's size, so a replication needs
objects whose size varies. Item ``i`` of this data set is Fashion-MNIST item ``i``,
resized to ``round(28 * f)`` pixels (bilinear, antialiased) with ``f`` drawn uniformly
from ``scale_range`` and pasted at a random position, wholly inside a
``canvas x canvas`` black image (default 56x56, ``f`` in [0.75, 2.0], i.e. objects of
21 to 56 pixels). The factor and position of item ``i`` depend only on ``(seed, split,
i)``: the same with any ``max_items``, in any process.

:meth:`ScaledFashionMNIST.render` draws one item centred at chosen factors, the
analysis' sharper alternative to enlarging the pixels of a centre crop
(``sknet analyze --scaling render``). ``build_dataset("fashion-mnist-scaled", ...)`` builds it
(:mod:`sknet.data.datasets`).

The whole split is rendered once into a uint8 tensor (60000 x 56 x 56 = 188 MB), so
``__getitem__`` is an index and a normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from .info import NORMALIZATION
from .transforms import apply_transform

SCALED_MEAN, SCALED_STD = NORMALIZATION["fashion-mnist-scaled"]
BASE_SIZE = 28


def resize_items(images: torch.Tensor, side: int) -> torch.Tensor:
    """Resize uint8 ``(N, 28, 28)`` to ``(N, side, side)`` uint8 (bilinear, antialiased)."""
    x = images[:, None].float()  # (N, 1, 28, 28)
    x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return x[:, 0].round().clamp(0, 255).to(torch.uint8)  # (N, side, side)


class ScaledFashionMNIST(Dataset):
    """Fashion-MNIST with objects of random size at random positions on a larger canvas.

    Args:
        root: Folder with the Fashion-MNIST IDX files.
        train: Train split (60k) or test split (10k).
        seed: Seed of the factors and positions (each split draws its own).
        canvas: Side of the output image in pixels.
        scale_range: ``(low, high)`` of the resize factor ``f`` (object side ``round(28 f)``).
        max_items: Keep only the first ``max_items`` items (their factors and positions
            are those of the full set).
        normalize: Subtract :data:`SCALED_MEAN` and divide by :data:`SCALED_STD`.
        transform: Applied to the uint8 ``(1, canvas, canvas)`` image instead of the plain
            conversion (training augmentation; a ``SeededTransform`` gets the index too).
    """

    classes = FASHION_MNIST_CLASSES

    def __init__(
        self,
        root: str | Path,
        train: bool = True,
        seed: int = 0,
        canvas: int = 56,
        scale_range: tuple[float, float] = (0.75, 2.0),
        max_items: int | None = None,
        normalize: bool = True,
        transform=None,
    ) -> None:
        low, high = scale_range
        if not (0 < low <= high and round(BASE_SIZE * high) <= canvas):
            raise ValueError(
                f"scale_range {scale_range} must satisfy 0 < low <= high and 28 * high <= canvas ({canvas}) "
                "so that every object fits on the canvas"
            )
        base, labels = load_fashion_mnist(root, train)
        n_all = len(base)
        rng = np.random.default_rng([seed, 0 if train else 1])
        factors = rng.uniform(low, high, n_all)  # drawn for the full split: item i is the same at any max_items
        sides = np.clip(np.rint(BASE_SIZE * factors).astype(np.int64), 1, canvas)
        u = rng.random((n_all, 2))
        offsets = np.floor(u * (canvas - sides + 1)[:, None]).astype(np.int64)  # (N, 2): top, left
        if max_items is not None:
            base, labels, sides, offsets, factors = (
                base[:max_items],
                labels[:max_items],
                sides[:max_items],
                offsets[:max_items],
                factors[:max_items],
            )
        self.canvas = canvas
        self.scale_range = (float(low), float(high))
        self.seed = seed
        self.train = train
        self.base = base  # (N, 28, 28) uint8, kept for render()
        self.targets = labels
        self.factors = torch.from_numpy(factors)
        self.sides = torch.from_numpy(sides)
        self.offsets = torch.from_numpy(offsets)
        self.normalize = normalize
        self.transform = transform
        self.mean = SCALED_MEAN if normalize else (0.0,)
        self.std = SCALED_STD if normalize else (1.0,)
        self.images = self._paste(base, sides, offsets)  # (N, canvas, canvas) uint8

    def _paste(self, base: torch.Tensor, sides: np.ndarray, offsets: np.ndarray) -> torch.Tensor:
        out = torch.zeros(len(base), self.canvas, self.canvas, dtype=torch.uint8)
        for side in np.unique(sides):
            idx = np.nonzero(sides == side)[0]
            resized = resize_items(base[torch.from_numpy(idx)], int(side))  # (n, side, side)
            for k, i in enumerate(idx):
                top, left = offsets[i]
                out[i, top : top + side, left : left + side] = resized[k]
        return out

    def __len__(self) -> int:
        return len(self.images)

    def _to_float(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255.0)
        if self.normalize:
            x = (x - SCALED_MEAN[0]) / SCALED_STD[0]
        return x

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.images[index][None]  # (1, H, W) uint8
        if self.transform is None:
            return self._to_float(img), int(self.targets[index])
        return apply_transform(self.transform, img, index), int(self.targets[index])

    def render(self, index: int, scales: Sequence[float]) -> torch.Tensor:
        """Item ``index`` drawn centred at each factor in ``scales``, shape ``(S, 1, canvas, canvas)``.

        The object's side is ``round(28 * s)`` pixels; factors whose object would not fit
        on the canvas raise. This ignores the item's own random factor and position.
        """
        out = torch.zeros(len(scales), self.canvas, self.canvas, dtype=torch.uint8)
        for k, s in enumerate(scales):
            side = round(BASE_SIZE * float(s))
            if not 1 <= side <= self.canvas:
                raise ValueError(
                    f"scale {s} draws a {side}-pixel object, which does not fit the {self.canvas}-pixel canvas; "
                    f"use scales up to {self.canvas / BASE_SIZE:g}"
                )
            top = (self.canvas - side) // 2
            out[k, top : top + side, top : top + side] = resize_items(self.base[index : index + 1], side)[0]
        return self._to_float(out)[:, None]  # (S, 1, H, W)
