"""Small tensor functions the layers share: pooling, per-channel broadcasting, layouts, BatchNorm as an affine map."""

from __future__ import annotations

import torch
from torch import nn


def gap(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling over every spatial dimension: ``(B, C, ...)`` -> ``(B, C)``."""
    return x.mean(tuple(range(2, x.dim())))


def gap_or_pooled(u: torch.Tensor, channels: int) -> torch.Tensor:
    """:func:`gap` of a map ``(B, C, ...)``, or an already pooled ``(B, C)`` unchanged: ``(B, C)``.
    It does not branch on the input's dimensions, so symbolic tracing (torch.fx) can follow it."""
    return u.reshape(u.shape[0], channels, -1).mean(-1)


def per_channel(a: torch.Tensor, ndim: int) -> torch.Tensor:
    """Per-channel weights ``(B, [M,] C)`` shaped to multiply maps of ``ndim`` dimensions ``(B, C, ...)``."""
    return a[(..., *[None] * (ndim - 2))]


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """``x``'s layout: channels_last (2-D), channels_last_3d (3-D) or the contiguous one."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def is_plain_batchnorm(module: nn.Module) -> bool:
    """A BatchNorm (any dimension, ``SyncBatchNorm`` and our CPU one included) with running
    statistics and nothing else inside: in eval mode exactly ``scale * x + shift`` per channel.

    A BatchNorm that carries more (timm's ``BatchNormAct2d`` holds an activation) is not one.
    """
    return (
        isinstance(module, nn.modules.batchnorm._BatchNorm)
        and module.running_var is not None
        and next(module.children(), None) is None
    )


def bn_affine(
    bn: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor | None = None, invstd: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchNorm as ``y = scale * x + shift`` per channel: with its running statistics (eval mode),
    or with the batch's ``mean`` and ``invstd = 1 / sqrt(var + eps)`` when given."""
    if mean is None:
        mean, invstd = bn.running_mean, torch.rsqrt(bn.running_var + bn.eps)
    scale = invstd if bn.weight is None else bn.weight * invstd
    shift = -mean * scale if bn.bias is None else bn.bias - mean * scale
    return scale, shift
