"""timm's SK-ResNet-18 / 34: basic-block ResNets whose first 3x3 of every unit is an SK conv.

Not the paper's networks: timm's variant (``timm/models/sknet.py``), registered so that timm's
``skresnet18`` / ``skresnet34`` checkpoints, the only other pretrained SK weights around, load
with identical logits and run on our fast SK path. What differs from the paper's SK unit, as
timm builds it:

- ``split_input``: each of the two branches (3x3 and 3x3 dilated 2, no groups) sees its own half
  of the input channels, which keeps the parameter count of ungrouped branches down;
- the attention width is ``make_divisible(C / 8, 16)``, which is ``max(C // 8, 16)`` (r=8, L=16)
  for every width these networks use (64...512).

Everything else is timm's ResNet: the 7x7/2 stem with a 3x3/2 max pool, stages of 64/128/256/512
channels, stride on the first unit's SK conv, 1x1 projection shortcuts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..layers import ConvBnAct, SqueezeExcite
from .registry import register_models
from .resnext import MidLayer, ResNeXt, SelectiveKernel, shortcut
from .settings import SK

WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """``3x3 stage (stride s) -> 3x3 conv + BN`` plus shortcut, then ReLU: ResNet-18/34's unit.

    Module names follow timm's ``SelectiveKernelBasic`` (``conv1`` the injected stage, ``conv2``
    a :class:`ConvBnAct` without activation), so timm's SK-ResNet weights load as they are.
    Same signature as :class:`Bottleneck` (``width`` is the first conv's output); as in timm,
    the injected stage runs at ``first_dilation`` and the second 3x3 at ``dilation``.
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        out_channels: int,
        stride: int,
        mid_layer: MidLayer,
        se_reduction: int | None = None,
        dilation: int = 1,
        first_dilation: int | None = None,
        dims: int = 2,
    ) -> None:
        super().__init__()
        self.conv1 = mid_layer(in_channels, width, stride, first_dilation or dilation)
        self.conv2 = ConvBnAct(width, out_channels, 3, dilation=dilation, act=False, dims=dims)
        self.se = SqueezeExcite(out_channels, se_reduction, dims=dims) if se_reduction else nn.Identity()
        self.downsample = shortcut(in_channels, out_channels, stride, dims)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.conv2(self.conv1(x)))
        out += self.downsample(x)
        return self.act(out)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.bn.weight)


def skresnet(
    *,
    layers: Sequence[int],
    unit: SK,
    num_classes: int = 1000,
    in_chans: int = 3,
    zero_init_last: bool = False,
    drop_rate: float = 0.0,
    output_stride: int | None = None,
) -> ResNeXt:
    """A basic-block ResNet with timm's split-input SK conv (settings ``unit``) as every unit's first
    3x3; ``output_stride`` 16 or 8 dilates the last stages as timm's ``output_stride`` does (SK branch
    dilations multiplied)."""
    mid = SelectiveKernel(split_input=True, **unit.conv_kwargs())
    return ResNeXt(
        layers, mid, WIDTHS, WIDTHS, stem="imagenet", stem_width=64, first_stride=1, num_classes=num_classes,
        in_chans=in_chans, zero_init_last=zero_init_last, drop_rate=drop_rate, block=BasicBlock,
        output_stride=output_stride,
    )  # fmt: skip


# timm's kernel_size [3, 5] with keep_3x3: 3x3 at dilation 1 and 2, ungrouped; r=8, L=16.
TIMM_SK = SK(branches=((3, 1, 1), (3, 2, 1)), reduction=8, min_dim=16)
register_models(
    skresnet,
    {
        "skresnet18": (
            dict(layers=(2, 2, 2, 2), unit=TIMM_SK),
            "timm's SK-ResNet-18 (basic blocks, split-input SK, r=8, L=16); loads timm's skresnet18 weights.",
        ),
        "skresnet34": (
            dict(layers=(3, 4, 6, 3), unit=TIMM_SK),
            "timm's SK-ResNet-34 (basic blocks, split-input SK, r=8, L=16); loads timm's skresnet34 weights.",
        ),
    },
    family="timm",
)
