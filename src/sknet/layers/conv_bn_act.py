"""Conv -> BatchNorm -> activation, the building step of every SKNet branch, in 1-D, 2-D or 3-D."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BATCH_NORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
GLOBAL_POOLS = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}  # built with size 1


def check_dims(dims: int) -> int:
    """The number of spatial dimensions: 1 (signals), 2 (images) or 3 (clips, volumes)."""
    if dims not in CONVS:
        raise ValueError(f"dims (spatial dimensions) must be 1, 2 or 3, got {dims!r}")
    return dims


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the size at stride 1: ``D * (k - 1) / 2`` (docs/paper.md, 'Selective kernel convolution')."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd to keep the spatial size, got {kernel_size}")
    return dilation * (kernel_size - 1) // 2


class ConvBnAct(nn.Module):
    """A bias-free convolution, BatchNorm and an optional activation.

    Names (``conv``, ``bn``, ``act``) follow timm's ``ConvNormAct`` so weights map one to one.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Kernel size along every spatial dimension (odd).
        stride: Convolution stride.
        dilation: Convolution dilation (D).
        groups: Convolution groups (G).
        act: ReLU after the BatchNorm (True), none (False), or a module factory such as
            ``functools.partial(nn.ReLU6, inplace=True)``.
        dims: Spatial dimensions: 1, 2 (the paper's) or 3.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act: bool | Callable[[], nn.Module] = True,
        dims: int = 2,
    ) -> None:
        super().__init__()
        self.conv = CONVS[check_dims(dims)](
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=same_padding(kernel_size, dilation),
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self.bn = BATCH_NORMS[dims](out_channels)
        self.act = nn.ReLU(inplace=True) if act is True else nn.Identity() if act is False else act()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))
