"""Enlarging the central object, the paper's procedure for Fig. 3 and 4, and batches of it at every scale.

Scaling works on the model's input tensor (after resizing, cropping and normalising): crop and
bilinear resize are linear, so doing it before or after the per-channel normalisation gives
the same image. Resizing uses antialiasing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..data import collate_skip


def scale_center(images: torch.Tensor, scale: float, antialias: bool = True, mode: str = "bilinear") -> torch.Tensor:
    """Enlarge the central object ``scale`` times: centre-crop a ``1/scale`` fraction, resize back.

    The paper's procedure for Fig. 3 and 4. The crop is ``round(H / scale) x round(W / scale)``
    pixels, centred as torchvision's ``center_crop`` centres it.

    Args:
        images: ``(..., H, W)``.
        scale: Enlargement ``s >= 1`` (1.0 returns the input unchanged).
        antialias: Antialias the resize (only matters when shrinking, i.e. never here, but
            kept for callers that use a size other than the input's).
        mode: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.
    """
    import torchvision.transforms.v2.functional as TF

    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale >= 1.0):
        raise ValueError(
            f"scale must be a number >= 1 (the object is enlarged by centre-cropping 1/scale), got {scale!r}"
        )
    if scale == 1.0:
        return images
    h, w = images.shape[-2:]
    crop = [max(1, round(h / scale)), max(1, round(w / scale))]
    out = TF.center_crop(images, crop)
    interp = {
        "bilinear": TF.InterpolationMode.BILINEAR,
        "bicubic": TF.InterpolationMode.BICUBIC,
        "nearest": TF.InterpolationMode.NEAREST,
    }[mode]
    return TF.resize(out, [h, w], interpolation=interp, antialias=antialias)


def scaled_batches(
    dataset,
    scales: Sequence[float],
    batch_size: int = 64,
    max_images: int | None = None,
    render: bool = False,
    num_workers: int = 0,
):
    """Batches ``([x at each scale], labels)`` from a data set of ``(image tensor, label)``.

    With ``render=False`` the paper's procedure: :func:`scale_center` on the data set's
    own images. With ``render=True`` the data set draws each item itself at each scale
    (``dataset.render(index, scales)``, e.g. :class:`~sknet.data.ScaledFashionMNIST`,
    which redraws the object centred and sharp instead of enlarging its pixels).

    ``max_images`` takes that many images spread evenly over the data set (validation
    sets sorted by class then keep every class).
    """
    n = len(dataset)
    if max_images is not None and max_images < n:
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        indices = [int(i * n / max_images) for i in range(max_images)]
    else:
        indices = list(range(n))
    if render:
        if not hasattr(dataset, "render"):
            raise ValueError(
                f"data set {type(dataset).__name__} cannot render items at chosen scales; "
                "use the crop scaling (--scaling crop) or the fashion-mnist-scaled data set"
            )
        for i in range(0, len(indices), batch_size):
            idx = indices[i : i + batch_size]
            per_item = [dataset.render(j, scales) for j in idx]  # each (S, C, H, W)
            images = [torch.stack([p[k] for p in per_item]) for k in range(len(scales))]
            targets = getattr(dataset, "targets", None)
            labels = torch.as_tensor([int(targets[j]) if targets is not None else int(dataset[j][1]) for j in idx])
            yield images, labels
        return
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_skip,  # unreadable image files are dropped
    )
    for x, y, _ in loader:
        if len(y):
            yield [scale_center(x, s) for s in scales], torch.as_tensor(y)
