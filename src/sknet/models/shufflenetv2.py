"""ShuffleNetV2 (Ma et al., 2018) and its SE / SK variants (paper Table 4; docs/paper.md, 'Lightweight models').

The 3x3 depthwise step of every unit is injected: a depthwise conv + BN in the
baseline, a depthwise :class:`SKConv` in the SK variant ("every 3x3 depthwise conv
replaced by a depthwise SK conv"). Layout follows torchvision's ShuffleNetV2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..layers import ConvBnAct, SKConv, SqueezeExcite
from .backbone import Backbone
from .init import init_weights
from .registry import register_models
from .settings import SE, SK, se_ratio_of


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, groups, c // groups, h, w)  # (B, g, C/g, H, W)
    return x.transpose(1, 2).reshape(b, c, h, w)  # (B, C, H, W)


class DepthwiseConv:
    """ShuffleNetV2's depthwise 3x3 + BN, no ReLU."""

    def __call__(self, channels: int, stride: int) -> nn.Module:
        return ConvBnAct(channels, channels, 3, stride, 1, channels, act=False)


class DepthwiseSK:
    """A depthwise SK conv in place of a depthwise 3x3.

    Each branch ends in BN and then ``act``, the activation of the depthwise step it replaces:
    none for ShuffleNetV2's linear step (the default), ReLU6 for MobileNetV2's; so a one-branch SK
    unit is exactly the baseline's (our choice, docs/architecture.md).
    """

    def __init__(self, act=False, **sk_kwargs) -> None:
        self.act, self.sk_kwargs = act, sk_kwargs

    def __call__(self, channels: int, stride: int) -> nn.Module:
        return SKConv(channels, channels, stride=stride, act=self.act, **self.sk_kwargs)


def _conv1x1_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: channel split (stride 1) or two downsampling branches (stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dw_layer, se_reduction: int | None):
        super().__init__()
        self.stride = stride
        mid = out_channels // 2
        if stride > 1:
            self.branch1 = nn.Sequential(dw_layer(in_channels, stride), *_conv1x1_bn_relu(in_channels, mid))
        else:
            self.branch1 = nn.Identity()
        layers = [
            *_conv1x1_bn_relu(in_channels if stride > 1 else mid, mid),
            dw_layer(mid, stride),
            *_conv1x1_bn_relu(mid, mid),
        ]
        if se_reduction:
            layers.append(SqueezeExcite(mid, se_reduction, min_dim=8))
        self.branch2 = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(Backbone):
    """ShuffleNetV2 with an injected depthwise step.

    Args:
        stage_out: Output channels of stem, stage2..4 and conv5, e.g. ``(24, 116, 232, 464, 1024)``.
        stage_units: Units per stage (4, 8, 4).
        dw_layer: Builds each depthwise step (:class:`DepthwiseConv` or :class:`DepthwiseSK`).
        se_reduction: SE ratio on every unit's right branch, or None.
        num_classes: Classifier outputs.
        in_chans: Input image channels.
    """

    stem_modules = ("conv1", "maxpool")
    neck_modules = ("conv5",)  # the 1x1 to 1024 before the pooling, not a stage output (feature_info)

    def __init__(
        self,
        stage_out: Sequence[int],
        stage_units: Sequence[int] = (4, 8, 4),
        dw_layer=None,
        se_reduction: int | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        dw_layer = dw_layer or DepthwiseConv()
        c = stage_out[0]
        self.conv1 = ConvBnAct(in_chans, c, 3, stride=2)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        # As timm's ResNet and MobileNetV2 levels: the stem's activation (stride 2), then strides 4..32
        self.feature_info = [
            dict(num_chs=c, reduction=2, module="conv1"),
            dict(num_chs=c, reduction=4, module="maxpool"),
        ]
        for i, (n, out) in enumerate(zip(stage_units, stage_out[1:-1])):
            units = [ShuffleUnit(c, out, 2, dw_layer, se_reduction)]
            units += [ShuffleUnit(out, out, 1, dw_layer, se_reduction) for _ in range(n - 1)]
            self.add_module(f"stage{i + 2}", nn.Sequential(*units))
            self.feature_info.append(dict(num_chs=out, reduction=2 ** (i + 3), module=f"stage{i + 2}"))
            c = out
        self.conv5 = ConvBnAct(c, stage_out[-1], 1)
        self.num_features = stage_out[-1]
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(stage_out[-1], num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self)


# --------------------------------------------------------------------------- the family's create function


def shufflenetv2(
    *,
    stage_out: Sequence[int],
    unit: SE | SK | None,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.0,
) -> ShuffleNetV2:
    """ShuffleNetV2: ``unit`` None keeps its depthwise 3x3 + BN; :class:`SE` adds SE on every unit's
    right branch; :class:`SK` replaces every depthwise 3x3 by a depthwise SK conv."""
    dw = DepthwiseSK(**unit.conv_kwargs()) if isinstance(unit, SK) else DepthwiseConv()
    return ShuffleNetV2(
        stage_out, dw_layer=dw, se_reduction=se_ratio_of(unit), num_classes=num_classes, in_chans=in_chans,
        drop_rate=drop_rate,
    )  # fmt: skip


# --------------------------------------------------------------------------- registered models

DEPTHWISE_SK = SK(branches=((3, 1, None), (3, 2, None)))  # depthwise K3 + dilated K3 (K5)
X0_5 = (24, 48, 96, 192, 1024)
X1_0 = (24, 116, 232, 464, 1024)

# fmt: off
register_models(shufflenetv2, {
    "shufflenetv2_x0_5": (dict(stage_out=X0_5, unit=None), "ShuffleNetV2 0.5x (stages 48/96/192, conv5 1024)."),
    "shufflenetv2_x1_0": (dict(stage_out=X1_0, unit=None), "ShuffleNetV2 1.0x (stages 116/232/464, conv5 1024)."),
    "shufflenetv2_x0_5_se": (dict(stage_out=X0_5, unit=SE()), "ShuffleNetV2 0.5x + SE on every unit's right branch."),
    "shufflenetv2_x1_0_se": (dict(stage_out=X1_0, unit=SE()), "ShuffleNetV2 1.0x + SE on every unit's right branch."),
    "shufflenetv2_x0_5_sk": (dict(stage_out=X0_5, unit=DEPTHWISE_SK),
        "ShuffleNetV2 0.5x with every depthwise 3x3 replaced by a depthwise SK conv."),
    "shufflenetv2_x1_0_sk": (dict(stage_out=X1_0, unit=DEPTHWISE_SK),
        "ShuffleNetV2 1.0x with every depthwise 3x3 replaced by a depthwise SK conv."),
}, family="light")
# fmt: on
