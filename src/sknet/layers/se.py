"""Squeeze-and-Excitation (Hu et al., 2018), the SENet baseline of the paper, in 1-D, 2-D or 3-D."""

from __future__ import annotations

import torch
from torch import nn

from .conv_bn_act import CONVS, check_dims


class SqueezeExcite(nn.Module):
    """Global average pool -> fc ``C -> C/r`` -> ReLU -> fc ``C/r -> C`` -> sigmoid -> scale.

    The fcs are 1x1 convolutions with bias, as in the SENet release.

    Args:
        channels: Channels C of the input.
        reduction: Reduction ratio r (SENet: 16).
        min_dim: Lower bound on the hidden width (only binds on narrow
            lightweight models; our choice, see docs/architecture.md).
        dims: Spatial dimensions of the input: 1, 2 or 3.
    """

    def __init__(self, channels: int, reduction: int = 16, min_dim: int = 1, dims: int = 2) -> None:
        super().__init__()
        hidden = max(channels // reduction, min_dim)
        conv = CONVS[check_dims(dims)]
        self.spatial = tuple(range(2, 2 + dims))  # known before the input: symbolic tracing needs it so
        self.fc1 = conv(channels, hidden, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = conv(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(self.spatial, keepdim=True)  # (B, C, 1, ...)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(s))))
