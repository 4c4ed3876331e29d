"""MobileNetV2 (Sandler et al., 2018) and its SK variant: every 3x3 depthwise conv a depthwise SK conv.

The paper names MobileNet beside ShuffleNet as a network whose 3x3 depthwise convolutions SK
can replace, but trains only ShuffleNetV2. As in :mod:`sknet.models.shufflenetv2`, the 3x3
depthwise step of every inverted residual is injected: a depthwise conv + BN + ReLU6 in the
baseline, a depthwise :class:`SKConv` whose branches end in BN + ReLU6 in the SK variant
(settings in docs/architecture.md, "Our choices").

The layout is torchvision's ``mobilenet_v2`` (widths, strides, expansions, ReLU6, linear
bottlenecks, the 1x1 conv to 1280, dropout 0.2), so its state dict loads with identical logits
(:class:`MobileNetV2`'s ``foreign_names`` rename ``features.N...`` / ``classifier.1`` to ours).
Module names follow ours: ``conv1`` (stem), ``stage1..5`` (the inverted residuals grouped by
output stride 2..32: ``feature_info``'s levels, as timm's ``mobilenetv2_100``'s; ``stage2..5``,
the stride 4..32 outputs, are ``stage_info``), ``conv_head`` (1x1 to 1280), ``fc``.
"""

from __future__ import annotations

import functools
import re

import torch
from torch import nn

from ..layers import ConvBnAct
from ..weights import ForeignNames
from .backbone import Backbone
from .init import init_weights
from .registry import register_models
from .settings import SK
from .shufflenetv2 import DEPTHWISE_SK, DepthwiseSK

RELU6 = functools.partial(nn.ReLU6, inplace=True)

# torchvision's inverted residual setting: expansion t, output channels c, units n, first stride s.
INVERTED_RESIDUALS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _stages() -> list[list[tuple[int, int, int]]]:
    """The inverted residuals one by one, ``(expansion, channels, stride)``, grouped by output
    stride 2 (after the stem's stride 2), 4, ..., 32: a unit with a stride starts a new stage."""
    stages = []
    for t, c, n, s in INVERTED_RESIDUALS:
        for i in range(n):
            stride = s if i == 0 else 1
            if stride > 1 or not stages:
                stages.append([])
            stages[-1].append((t, c, stride))
    return stages


STAGES = _stages()

# torchvision's names: features.0 is the stem, features.1..17 the inverted residuals (ours by
# stage: stageS.U, with their expansion), features.18 the 1x1 head, classifier.1 the classifier.
_TORCHVISION_UNITS = [(f"stage{i + 1}.{j}", t) for i, stage in enumerate(STAGES) for j, (t, _, _) in enumerate(stage)]


def _torchvision_key(m: re.Match) -> str:
    """torchvision's ``features.N.<rest>`` -> our ``conv1`` / ``stageS.U.<part>`` / ``conv_head`` name.

    A torchvision unit's ``conv`` is ``[expand ConvNormAct (absent where t=1), depthwise
    ConvNormAct, 1x1 Conv2d, BN]``; ours are ``conv_pw``, ``conv_dw`` (ConvBnAct) and ``conv_pwl``.
    """
    index, rest = int(m.group(1)), m.group(2)
    head = len(_TORCHVISION_UNITS) + 1
    if index > head:
        return m.group(0)  # not torchvision's layout: left as it is (an unexpected key)
    if index in (0, head):  # Conv2dNormActivation: 0 = conv, 1 = BN
        part = re.sub(r"^0\.", "conv.", re.sub(r"^1\.", "bn.", rest))
        return ("conv1." if index == 0 else "conv_head.") + part
    unit, expansion = _TORCHVISION_UNITS[index - 1]
    parts = ["conv_dw"] if expansion == 1 else ["conv_pw", "conv_dw"]
    j, sub, tail = re.match(r"^conv\.(\d+)\.(?:(\d+)\.)?(.+)$", rest).groups()
    j = int(j)
    if j < len(parts):  # ConvNormActivation j: its conv (0) or BN (1)
        name = f"{parts[j]}.{'conv' if sub == '0' else 'bn'}.{tail}"
    else:  # the projection's Conv2d, then its BN
        name = f"conv_pwl.{'conv' if j == len(parts) else 'bn'}.{tail if sub is None else sub + '.' + tail}"
    return f"{unit}.{name}"


TORCHVISION_NAMES = ForeignNames(
    "torchvision",
    r"features\.\d+\.conv\.\d+\.",
    ((r"^features\.(\d+)\.(.+)$", _torchvision_key), (r"^classifier\.1\.(weight|bias)$", r"fc.\1")),
)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's ``_make_divisible``: ``v`` rounded to a multiple of ``divisor``, never below 90 % of ``v``."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class DepthwiseConvReLU6:
    """MobileNetV2's depthwise 3x3 + BN + ReLU6."""

    def __call__(self, channels: int, stride: int) -> nn.Module:
        return ConvBnAct(channels, channels, 3, stride, 1, channels, act=RELU6)


class InvertedResidual(nn.Module):
    """1x1 expansion + BN + ReLU6 (none when ``expansion == 1``), the depthwise step, 1x1 projection
    + BN (linear bottleneck); the input is added when the stride is 1 and the widths agree."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int, dw_layer) -> None:
        super().__init__()
        hidden = int(round(in_channels * expansion))
        self.use_res = stride == 1 and in_channels == out_channels
        self.conv_pw = ConvBnAct(in_channels, hidden, 1, act=RELU6) if expansion != 1 else nn.Identity()
        self.conv_dw = dw_layer(hidden, stride)
        self.conv_pwl = ConvBnAct(hidden, out_channels, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_pwl(self.conv_dw(self.conv_pw(x)))
        return x + out if self.use_res else out


class MobileNetV2(Backbone):
    """MobileNetV2 with an injected depthwise step.

    Args:
        width_mult: Width multiplier (torchvision's ``width_mult``); widths rounded to multiples of 8.
        dw_layer: Builds each depthwise step (:class:`DepthwiseConvReLU6` or :class:`DepthwiseSK` with ``act=RELU6``).
        num_classes: Classifier outputs.
        in_chans: Input image channels.
        drop_rate: Dropout before the classifier (torchvision's 0.2).
    """

    stem_modules = ("conv1",)
    neck_modules = ("conv_head",)  # the 1x1 to 1280 before the pooling
    foreign_names = (TORCHVISION_NAMES,)  # what sknet.weights renames in torchvision's files

    def __init__(
        self,
        width_mult: float = 1.0,
        dw_layer=None,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
    ) -> None:
        super().__init__()
        dw_layer = dw_layer or DepthwiseConvReLU6()
        c = make_divisible(32 * width_mult)
        self.conv1 = ConvBnAct(in_chans, c, 3, stride=2, act=RELU6)
        self.feature_info = []
        for i, stage in enumerate(STAGES):
            units = []
            for t, out, stride in stage:
                out = make_divisible(out * width_mult)
                units.append(InvertedResidual(c, out, stride, t, dw_layer))
                c = out
            self.add_module(f"stage{i + 1}", nn.Sequential(*units))
            # timm's mobilenetv2_100 levels: stage1 at stride 2 (its stem's level), then strides 4..32
            self.feature_info.append(dict(num_chs=c, reduction=2 ** (i + 1), module=f"stage{i + 1}"))
        self.num_features = make_divisible(1280 * max(1.0, width_mult))
        self.conv_head = ConvBnAct(c, self.num_features, 1, act=RELU6)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self)


# --------------------------------------------------------------------------- the family's create function


def mobilenetv2(
    *, width_mult: float = 1.0, unit: SK | None, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2
) -> MobileNetV2:
    """MobileNetV2 in torchvision's layout: ``unit`` None keeps its depthwise 3x3 + BN + ReLU6;
    :class:`SK` replaces every depthwise 3x3 by a depthwise SK conv whose branches end in BN + ReLU6."""
    dw = DepthwiseSK(act=RELU6, **unit.conv_kwargs()) if unit else DepthwiseConvReLU6()
    return MobileNetV2(width_mult, dw_layer=dw, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)


# --------------------------------------------------------------------------- registered models

# fmt: off
register_models(mobilenetv2, {
    "mobilenetv2_100": (dict(width_mult=1.0, unit=None),
        "MobileNetV2 1.0x (torchvision's layout; its mobilenet_v2 weights load)."),
    "mobilenetv2_100_sk": (dict(width_mult=1.0, unit=DEPTHWISE_SK),
        "MobileNetV2 1.0x with every depthwise 3x3 replaced by a depthwise SK conv (K3 + dilated K3, ReLU6)."),
}, family="light")
# fmt: on
