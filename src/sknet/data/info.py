"""What a model needs to know about a dataset, and the one table of normalisation constants."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatasetInfo:
    """Classes, input size and normalisation of a dataset."""

    name: str
    num_classes: int
    input_size: tuple[int, ...]  # (C, *spatial) the model sees: (C, L), (C, H, W) or (C, T, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = field(default=())


# Per-channel mean / std of the training images, in [0, 1] units.
NORMALIZATION = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    # The rendered train split of fashion-mnist-scaled (seed 0, canvas 56, factors 0.75..2.0),
    # measured once with ScaledFashionMNIST(root, normalize=False).
    "fashion-mnist-scaled": ((0.1447,), (0.2800,)),
    # Every 30th volume of fashion-mnist-3d's train split (data seed 0), measured once the same way.
    "fashion-mnist-3d": ((0.1144,), (0.2538,)),
}


def data_not_found(name: str, root, expected: str, fix: str) -> FileNotFoundError:
    """The error for a dataset that is not where it was looked for: the expected layout and the fix."""
    return FileNotFoundError(f"{name} data not found in {str(root)!r}. Expected layout:\n{expected}\n{fix}")
