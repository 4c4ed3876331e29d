"""Squeeze-and-Excitation (Hu et al., 2018), the SENet baseline of the paper."""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """Global average pool -> fc ``C -> C/r`` -> ReLU -> fc ``C/r -> C`` -> sigmoid -> scale.

    The fcs are 1x1 convolutions with bias, as in the SENet release.

    Args:
        channels: Channels C of the input.
        reduction: Reduction ratio r (SENet: 16).
        min_dim: Lower bound on the hidden width (only binds on narrow
            lightweight models; our choice, see docs/architecture.md).
    """

    def __init__(self, channels: int, reduction: int = 16, min_dim: int = 1) -> None:
        super().__init__()
        hidden = max(channels // reduction, min_dim)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(s))))
