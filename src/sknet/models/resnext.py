"""One bottleneck backbone for ResNeXt, SENet and SKNet (paper Table 1, SPEC 2).

The three families differ only in the bottleneck's 3x3 stage (a grouped conv or an
SK conv) and in an optional SE module, so the stage is injected (``mid_layer``)
rather than the network forked. The same code builds the 29-layer CIFAR networks
with a 3x3 stem.

Module names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1``...``layer4``,
``fc``); the 3x3 stage is ``conv2`` and holds its own BN and ReLU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..layers import ConvBnAct, SKConv, SqueezeExcite
from .init import init_weights

MidLayer = Callable[[int, int, int], nn.Module]  # (in_channels, out_channels, stride) -> module


class GroupedConv:
    """ResNeXt's 3x3 stage: one grouped conv-BN-ReLU with G groups."""

    def __init__(self, groups: int) -> None:
        self.groups = groups

    def __call__(self, in_channels: int, out_channels: int, stride: int) -> nn.Module:
        return ConvBnAct(in_channels, out_channels, 3, stride, 1, self.groups)


class SelectiveKernel:
    """SKNet's 3x3 stage: an :class:`SKConv` with fixed settings for every unit."""

    def __init__(self, **sk_kwargs) -> None:
        self.sk_kwargs = sk_kwargs

    def __call__(self, in_channels: int, out_channels: int, stride: int) -> nn.Module:
        return SKConv(in_channels, out_channels, stride=stride, **self.sk_kwargs)


class Bottleneck(nn.Module):
    """``1x1 -> 3x3 stage (stride s) -> 1x1`` plus shortcut, then ReLU (SPEC 2).

    The stride sits on the 3x3 stage, as in the released networks, not on the first 1x1.
    With ``se_reduction`` an SE module scales the residual branch after the last BN,
    before the addition (SENet).
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        out_channels: int,
        stride: int,
        mid_layer: MidLayer,
        se_reduction: int | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = mid_layer(width, width, stride)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.se = SqueezeExcite(out_channels, se_reduction) if se_reduction else nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.downsample = nn.Identity()
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        out = self.se(self.bn3(self.conv3(out)))
        out += self.downsample(x)  # in place, as torchvision does: one tensor and one pass fewer (docs/performance.md)
        return self.act3(out)


class ResNeXt(nn.Module):
    """ResNeXt-style bottleneck network with an injected 3x3 stage.

    Args:
        layers: Units per stage, e.g. ``(3, 4, 6, 3)`` for the 50-layer networks.
        mid_layer: Builds the 3x3 stage of every unit (:class:`GroupedConv` or :class:`SelectiveKernel`).
        widths: Bottleneck (3x3 stage) width per stage, e.g. ``(128, 256, 512, 1024)``.
        out_channels: Output width per stage, e.g. ``(256, 512, 1024, 2048)``.
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max pool) or ``"cifar"`` (3x3 conv).
        stem_width: Stem channels (64 in both).
        first_stride: Stride of the first stage (1 in the paper's networks; 2 in the mini ones).
        se_reduction: SE ratio r on every unit (SENet), or None.
        num_classes: Classifier outputs; 0 gives a headless backbone.
        in_chans: Input image channels.
        zero_init_last: Zero the last BN scale of each unit (off by default; the
            released networks do not).
        drop_rate: Dropout before the classifier (0 in the paper).
    """

    def __init__(
        self,
        layers: Sequence[int],
        mid_layer: MidLayer,
        widths: Sequence[int],
        out_channels: Sequence[int],
        stem: str = "imagenet",
        stem_width: int = 64,
        first_stride: int = 1,
        se_reduction: int | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        zero_init_last: bool = False,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not (len(layers) == len(widths) == len(out_channels)):
            raise ValueError("layers, widths and out_channels need one entry per stage")
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        elif stem == "cifar":
            self.conv1 = nn.Conv2d(in_chans, stem_width, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.act1 = nn.ReLU(inplace=True)

        self.feature_info = []  # one dict per stage: channels, stride, module name
        reduction = 4 if stem == "imagenet" else 1
        in_ch = stem_width
        for i, (n, width, out_ch) in enumerate(zip(layers, widths, out_channels)):
            stride = first_stride if i == 0 else 2
            reduction *= stride
            units = []
            for j in range(n):
                units.append(Bottleneck(in_ch, width, out_ch, stride if j == 0 else 1, mid_layer, se_reduction))
                in_ch = out_ch
            self.add_module(f"layer{i + 1}", nn.Sequential(*units))
            self.feature_info.append(dict(num_chs=out_ch, reduction=reduction, module=f"layer{i + 1}"))
        self.num_stages = len(layers)
        self.num_features = in_ch
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(in_ch, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights(zero_init_last)

    def init_weights(self, zero_init_last: bool = False) -> None:
        """Released-network initialisation (:func:`init_weights`), optionally zeroing
        the last BN scale of every unit."""
        init_weights(self)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.flatten(self.global_pool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------- registry
# Every function below holds only its numbers; its keyword arguments are the
# overrides create_model accepts.

from .registry import register_model  # noqa: E402

SK_BRANCHES = ((3, 1, 32), (3, 2, 32))  # K3 + a dilated 3x3 standing in for K5 (SPEC 1)
IMAGENET_OUT = (256, 512, 1024, 2048)


def _widths(groups: int, width_per_group: int, stages: int = 4) -> tuple[int, ...]:
    """Bottleneck widths ``G * d * 2^i`` (ResNeXt's template: 32x4d -> 128, 256, 512, 1024)."""
    return tuple(groups * width_per_group * 2**i for i in range(stages))


def _resnext(layers, groups=32, width_per_group=4, out_channels=IMAGENET_OUT, **kwargs) -> ResNeXt:
    widths = _widths(groups, width_per_group, len(layers))
    return ResNeXt(layers, GroupedConv(groups), widths, out_channels, **kwargs)


def _senet(layers, reduction=16, groups=32, width_per_group=4, out_channels=IMAGENET_OUT, **kwargs) -> ResNeXt:
    widths = _widths(groups, width_per_group, len(layers))
    return ResNeXt(layers, GroupedConv(groups), widths, out_channels, se_reduction=reduction, **kwargs)


def _sknet(
    layers,
    branches=SK_BRANCHES,
    select="attention",
    reduction=16,
    min_dim=32,
    groups=32,
    width_per_group=4,
    out_channels=IMAGENET_OUT,
    **kwargs,
) -> ResNeXt:
    widths = _widths(groups, width_per_group, len(layers))
    mid = SelectiveKernel(branches=branches, select=select, reduction=reduction, min_dim=min_dim)
    return ResNeXt(layers, mid, widths, out_channels, **kwargs)


_IMAGENET = dict(family="imagenet")


@register_model(**_IMAGENET)
def resnext26_32x4d(num_classes=1000, in_chans=3, zero_init_last=False, drop_rate=0.0):
    """ResNeXt-26 (32x4d): units {2, 2, 2, 2}."""
    return _resnext(
        (2, 2, 2, 2), num_classes=num_classes, in_chans=in_chans, zero_init_last=zero_init_last, drop_rate=drop_rate
    )


@register_model(**_IMAGENET, paper_params_m=25.0, paper_gmacs=4.24)
def resnext50_32x4d(num_classes=1000, in_chans=3, zero_init_last=False, drop_rate=0.0):
    """ResNeXt-50 (32x4d), the paper's baseline (Table 1)."""
    return _resnext(
        (3, 4, 6, 3), num_classes=num_classes, in_chans=in_chans, zero_init_last=zero_init_last, drop_rate=drop_rate
    )


@register_model(**_IMAGENET)
def resnext101_32x4d(num_classes=1000, in_chans=3, zero_init_last=False, drop_rate=0.0):
    """ResNeXt-101 (32x4d): units {3, 4, 23, 3}."""
    return _resnext(
        (3, 4, 23, 3), num_classes=num_classes, in_chans=in_chans, zero_init_last=zero_init_last, drop_rate=drop_rate
    )


@register_model(**_IMAGENET)
def resnext50_36x4d(num_classes=1000, in_chans=3, zero_init_last=False, drop_rate=0.0):
    """Table 3 control, more cardinal: 36 groups of width 4 (bottleneck widths 144...1152)."""
    return _resnext(
        (3, 4, 6, 3),
        groups=36,
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_last=zero_init_last,
        drop_rate=drop_rate,
    )


@register_model(**_IMAGENET)
def resnext53_32x4d(num_classes=1000, in_chans=3, zero_init_last=False, drop_rate=0.0):
    """Table 3 control, deeper at SKNet-50's cost: one more conv4 unit, {3, 4, 7, 3} (53 layers)."""
    return _resnext(
        (3, 4, 7, 3), num_classes=num_classes, in_chans=in_chans, zero_init_last=zero_init_last, drop_rate=drop_rate
    )


@register_model(**_IMAGENET)
def resnext56_32x4d(num_classes=1000, in_chans=3, zero_init_last=False, drop_rate=0.0):
    """Table 3 control, deeper: two more conv4 units, {3, 4, 8, 3} (56 layers)."""
    return _resnext(
        (3, 4, 8, 3), num_classes=num_classes, in_chans=in_chans, zero_init_last=zero_init_last, drop_rate=drop_rate
    )


WIDE_OUT = (272, 544, 1088, 2176)  # stage outputs x 1.0625, see docs/architecture.md


@register_model(**_IMAGENET)
def resnext50_wide(num_classes=1000, in_chans=3, zero_init_last=False, drop_rate=0.0):
    """Table 3 control, wider: stage outputs 272/544/1088/2176 (x17/16), bottlenecks 32x4d.

    Cardinality and group width stay 32x4d; only the 1x1-facing stage widths grow,
    to the multiple of 16 that brings the cost closest to SKNet-50's.
    """
    return _resnext(
        (3, 4, 6, 3),
        out_channels=WIDE_OUT,
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_last=zero_init_last,
        drop_rate=drop_rate,
    )


@register_model(**_IMAGENET)
def senet26(num_classes=1000, reduction=16, in_chans=3, zero_init_last=False, drop_rate=0.0):
    """SENet-26: ResNeXt-26 (32x4d) with SE (r=16) on every unit."""
    return _senet(
        (2, 2, 2, 2),
        reduction,
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_last=zero_init_last,
        drop_rate=drop_rate,
    )


@register_model(**_IMAGENET, paper_params_m=27.7, paper_gmacs=4.25)
def senet50(num_classes=1000, reduction=16, in_chans=3, zero_init_last=False, drop_rate=0.0):
    """SENet-50: ResNeXt-50 (32x4d) with SE (r=16) on every unit (Table 1)."""
    return _senet(
        (3, 4, 6, 3),
        reduction,
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_last=zero_init_last,
        drop_rate=drop_rate,
    )


@register_model(**_IMAGENET)
def senet101(num_classes=1000, reduction=16, in_chans=3, zero_init_last=False, drop_rate=0.0):
    """SENet-101: ResNeXt-101 (32x4d) with SE (r=16) on every unit."""
    return _senet(
        (3, 4, 23, 3),
        reduction,
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_last=zero_init_last,
        drop_rate=drop_rate,
    )


@register_model(**_IMAGENET)
def sknet26(
    num_classes=1000,
    branches=SK_BRANCHES,
    select="attention",
    reduction=16,
    min_dim=32,
    in_chans=3,
    zero_init_last=False,
    drop_rate=0.0,
):
    """SKNet-26: units {2, 2, 2, 2}, SK[M=2, G=32, r=16]."""
    return _sknet(
        (2, 2, 2, 2),
        branches,
        select,
        reduction,
        min_dim,
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_last=zero_init_last,
        drop_rate=drop_rate,
    )


@register_model(**_IMAGENET, paper_params_m=27.5, paper_gmacs=4.47)
def sknet50(
    num_classes=1000,
    branches=SK_BRANCHES,
    select="attention",
    reduction=16,
    min_dim=32,
    in_chans=3,
    zero_init_last=False,
    drop_rate=0.0,
):
    """SKNet-50 (Table 1): units {3, 4, 6, 3}, SK[M=2, G=32, r=16], L=32."""
    return _sknet(
        (3, 4, 6, 3),
        branches,
        select,
        reduction,
        min_dim,
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_last=zero_init_last,
        drop_rate=drop_rate,
    )


@register_model(**_IMAGENET)
def sknet101(
    num_classes=1000,
    branches=SK_BRANCHES,
    select="attention",
    reduction=16,
    min_dim=32,
    in_chans=3,
    zero_init_last=False,
    drop_rate=0.0,
):
    """SKNet-101: units {3, 4, 23, 3}, SK[M=2, G=32, r=16]."""
    return _sknet(
        (3, 4, 23, 3),
        branches,
        select,
        reduction,
        min_dim,
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_last=zero_init_last,
        drop_rate=drop_rate,
    )


# CIFAR (32x32): ResNeXt-29, three stages of three units, outputs 256/512/1024, a 3x3
# stem of 64 (SPEC 2). Bottleneck widths follow the same template: 16x32d -> 512/1024/2048.
_CIFAR = dict(family="cifar", input_size=(3, 32, 32), num_classes=10)
CIFAR_OUT = (256, 512, 1024)
CIFAR_SK_BRANCHES = ((3, 1, 32), (3, 2, 32))  # G=32 per branch: the base's cost (our choice, docs)


@register_model(**_CIFAR)
def resnext29_16x32d(num_classes=10, in_chans=3, zero_init_last=False, drop_rate=0.0):
    """ResNeXt-29 (16x32d), the base of SKNet-29 and SENet-29."""
    return _resnext(
        (3, 3, 3),
        16,
        32,
        CIFAR_OUT,
        stem="cifar",
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_last=zero_init_last,
        drop_rate=drop_rate,
    )


@register_model(**_CIFAR)
def resnext29_8x64d(num_classes=10, in_chans=3, zero_init_last=False, drop_rate=0.0):
    """ResNeXt-29 (8x64d) of the ResNeXt paper."""
    return _resnext(
        (3, 3, 3),
        8,
        64,
        CIFAR_OUT,
        stem="cifar",
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_last=zero_init_last,
        drop_rate=drop_rate,
    )


@register_model(**_CIFAR)
def resnext29_16x64d(num_classes=10, in_chans=3, zero_init_last=False, drop_rate=0.0):
    """ResNeXt-29 (16x64d) of the ResNeXt paper."""
    return _resnext(
        (3, 3, 3),
        16,
        64,
        CIFAR_OUT,
        stem="cifar",
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_last=zero_init_last,
        drop_rate=drop_rate,
    )


@register_model(**_CIFAR)
def senet29(num_classes=10, reduction=16, in_chans=3, zero_init_last=False, drop_rate=0.0):
    """SENet-29: ResNeXt-29 (16x32d) with SE (r=16) on every unit (our choice of r)."""
    return _senet(
        (3, 3, 3),
        reduction,
        16,
        32,
        CIFAR_OUT,
        stem="cifar",
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_last=zero_init_last,
        drop_rate=drop_rate,
    )


@register_model(**_CIFAR)
def sknet29(
    num_classes=10,
    branches=CIFAR_SK_BRANCHES,
    select="attention",
    reduction=16,
    min_dim=32,
    in_chans=3,
    zero_init_last=False,
    drop_rate=0.0,
):
    """SKNet-29: ResNeXt-29 (16x32d) base with SK[M=2, G=32, r=16], L=32 (our choice, docs/architecture.md)."""
    return _sknet(
        (3, 3, 3),
        branches,
        select,
        reduction,
        min_dim,
        16,
        32,
        CIFAR_OUT,
        stem="cifar",
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_last=zero_init_last,
        drop_rate=drop_rate,
    )


# Mini (28x28 grayscale, e.g. Fashion-MNIST): the 29-layer CIFAR template scaled down to
# what two CPU cores train in minutes; the first stage downsamples (28 -> 14 -> 7 -> 4).
# Not in the paper; the small-scale replication (docs/replication.md) uses it.
# Widths (G * d * 2^i) and outputs (2x the widths) keep the ResNeXt template; L shrinks
# with the widths (our choice, docs/architecture.md).
_MINI = dict(family="mini", input_size=(1, 28, 28), num_classes=10)
MINI_SK_BRANCHES = ((3, 1, 8), (3, 2, 8))


def _mini_kwargs(layers, groups, width_per_group, stem_width, in_chans, num_classes, zero_init_last, drop_rate):
    widths = _widths(groups, width_per_group, len(layers))
    return dict(
        layers=layers,
        widths=widths,
        out_channels=tuple(2 * w for w in widths),
        stem="cifar",
        stem_width=stem_width,
        first_stride=2,
        in_chans=in_chans,
        num_classes=num_classes,
        zero_init_last=zero_init_last,
        drop_rate=drop_rate,
    )


@register_model(**_MINI)
def resnext_mini(
    num_classes=10,
    layers=(1, 1, 1),
    groups=8,
    width_per_group=4,
    stem_width=32,
    in_chans=1,
    zero_init_last=False,
    drop_rate=0.0,
):
    """Mini ResNeXt (8x4d, one unit per stage by default): the plain baseline at 28x28."""
    kw = _mini_kwargs(layers, groups, width_per_group, stem_width, in_chans, num_classes, zero_init_last, drop_rate)
    return ResNeXt(mid_layer=GroupedConv(groups), **kw)


@register_model(**_MINI)
def senet_mini(
    num_classes=10,
    reduction=16,
    layers=(1, 1, 1),
    groups=8,
    width_per_group=4,
    stem_width=32,
    in_chans=1,
    zero_init_last=False,
    drop_rate=0.0,
):
    """Mini SENet: the mini ResNeXt with SE (r=16) on every unit."""
    kw = _mini_kwargs(layers, groups, width_per_group, stem_width, in_chans, num_classes, zero_init_last, drop_rate)
    return ResNeXt(mid_layer=GroupedConv(groups), se_reduction=reduction, **kw)


@register_model(**_MINI)
def sknet_mini(
    num_classes=10,
    branches=MINI_SK_BRANCHES,
    select="attention",
    reduction=16,
    min_dim=16,
    layers=(1, 1, 1),
    groups=8,
    width_per_group=4,
    stem_width=32,
    in_chans=1,
    zero_init_last=False,
    drop_rate=0.0,
):
    """Mini SKNet: the mini ResNeXt with SK[M=2 (K3 + dilated K3), G=8, r=16], L=16."""
    kw = _mini_kwargs(layers, groups, width_per_group, stem_width, in_chans, num_classes, zero_init_last, drop_rate)
    mid = SelectiveKernel(branches=branches, select=select, reduction=reduction, min_dim=min_dim)
    return ResNeXt(mid_layer=mid, **kw)
