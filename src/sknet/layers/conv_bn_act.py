"""Conv -> BatchNorm -> activation, the building step of every SKNet branch."""

from __future__ import annotations

from torch import nn


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the spatial size at stride 1 (SPEC 1: ``pad = D * (k - 1) / 2``)."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd to keep the spatial size, got {kernel_size}")
    return dilation * (kernel_size - 1) // 2


class ConvBnAct(nn.Module):
    """A bias-free convolution, BatchNorm and an optional activation.

    Names (``conv``, ``bn``, ``act``) follow timm's ``ConvNormAct`` so weights map one to one.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size (odd).
        stride: Convolution stride.
        dilation: Convolution dilation (D).
        groups: Convolution groups (G).
        act: Apply ReLU after the BatchNorm.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=same_padding(kernel_size, dilation),
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))
