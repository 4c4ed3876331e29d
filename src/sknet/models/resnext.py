"""One bottleneck backbone for ResNeXt, SENet and SKNet (paper Table 1; docs/paper.md, 'SKNet-50 and its baselines').

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

from ..layers import (
    BATCH_NORMS,
    CONVS,
    GLOBAL_POOLS,
    SK_BRANCHES,
    ConvBnAct,
    SKConv,
    SqueezeExcite,
    check_dims,
    parse_branches,
)
from ..weights import ForeignNames
from .backbone import Backbone
from .init import init_weights
from .registry import register_models
from .settings import SE, SK, se_ratio_of

MidLayer = Callable[..., nn.Module]  # (in_channels, out_channels, stride, dilation=1) -> module


class GroupedConv:
    """ResNeXt's 3x3 stage: one grouped conv-BN-ReLU with G groups (dilated in a stage whose
    stride became dilation, see :class:`ResNeXt`'s ``output_stride``)."""

    def __init__(self, groups: int, dims: int = 2) -> None:
        self.groups, self.dims = groups, dims

    def __call__(self, in_channels: int, out_channels: int, stride: int, dilation: int = 1) -> nn.Module:
        return ConvBnAct(in_channels, out_channels, 3, stride, dilation=dilation, groups=self.groups, dims=self.dims)


class SelectiveKernel:
    """SKNet's 3x3 stage: an :class:`SKConv` with fixed settings for every unit.

    ``dilation`` (a stage whose stride became dilation) multiplies every branch's own dilation:
    K3 + K5 (3x3 at dilations 1 and 2) become 3x3 at 2 and 4 where a stage is dilated by 2, the
    same function on the denser grid (docs/architecture.md, "Output stride").
    """

    def __init__(self, branches: Sequence = SK_BRANCHES, **sk_kwargs) -> None:
        self.branches = branches
        self.sk_kwargs = sk_kwargs

    def __call__(self, in_channels: int, out_channels: int, stride: int, dilation: int = 1) -> nn.Module:
        branches = self.branches
        if dilation != 1:
            branches = [(b.kernel, b.dilation * dilation, b.groups) for b in parse_branches(branches)]
        return SKConv(in_channels, out_channels, stride=stride, branches=branches, **self.sk_kwargs)


def shortcut(in_channels: int, out_channels: int, stride: int, dims: int) -> nn.Module:
    """Identity, or the projection ``1x1 conv (stride s) + BN`` where the shape changes."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        CONVS[dims](in_channels, out_channels, 1, stride=stride, bias=False), BATCH_NORMS[dims](out_channels)
    )


class Bottleneck(nn.Module):
    """``1x1 -> 3x3 stage (stride s) -> 1x1`` plus shortcut, then ReLU (docs/paper.md, 'The SK unit').

    The stride sits on the 3x3 stage, as in the released networks, not on the first 1x1.
    With ``se_reduction`` an SE module scales the residual branch after the last BN,
    before the addition (SENet). The 3x3 stage runs at ``first_dilation`` (default
    ``dilation``): torchvision's and timm's convention for the first unit of a stage whose
    stride became dilation, which keeps the previous stage's dilation there.
    """

    fuse_pairs = (("conv1", "bn1"), ("conv3", "bn3"))  # sknet.fuse: each BN follows its conv directly

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
        conv, bn = CONVS[dims], BATCH_NORMS[dims]
        self.conv1 = conv(in_channels, width, 1, bias=False)
        self.bn1 = bn(width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = mid_layer(width, width, stride, first_dilation or dilation)
        self.conv3 = conv(width, out_channels, 1, bias=False)
        self.bn3 = bn(out_channels)
        self.se = SqueezeExcite(out_channels, se_reduction, dims=dims) if se_reduction else nn.Identity()
        self.downsample = shortcut(in_channels, out_channels, stride, dims)
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        out = self.se(self.bn3(self.conv3(out)))
        out += self.downsample(x)  # in place, as torchvision does: one tensor and one pass fewer (docs/performance.md)
        return self.act3(out)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


_STEM_STRIDES = {"imagenet": 4, "cifar": 1, "video": 2}  # the stem's stride (H and W)


def _stem(stem: str, in_chans: int, width: int, dims: int) -> tuple[nn.Module, nn.Module]:
    """The stem's conv and its max pool (an identity where it has none)."""
    conv = CONVS[dims]
    if stem == "imagenet":
        max_pool = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[dims - 1](3, stride=2, padding=1)
        return conv(in_chans, width, 7, stride=2, padding=3, bias=False), max_pool
    if stem == "cifar":
        return conv(in_chans, width, 3, stride=1, padding=1, bias=False), nn.Identity()
    if stem == "video" and dims == 3:
        return conv(in_chans, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False), nn.Identity()
    raise ValueError(f"stem must be 'imagenet', 'cifar' or (3-D only) 'video', got {stem!r} for dims={dims}")


def _stage_geometry(num_stages: int, first_stride: int, reduction: int, output_stride: int):
    """Per stage: its stride, the dilation of its first unit's 3x3 and of the others', the stride it reaches.

    Where a stage's stride would take it past ``output_stride`` it becomes dilation (torchvision's
    ``dilate=True``: stride 1, dilation x stride). The first unit's 3x3 keeps the previous
    dilation: it sees the undilated input.
    """
    dilation = 1
    for i in range(num_stages):
        stride = first_stride if i == 0 else 2
        first = dilation
        if reduction * stride > output_stride:
            dilation *= stride
            stride = 1
        reduction *= stride
        yield stride, first, dilation, reduction


# Other libraries' names for a bottleneck's tensors (inside layerN.M.): timm's ResNeXt and SK-ResNeXt
# wrap the 1x1 convs with their BN (conv1.conv, conv1.bn); torchvision keeps the 3x3's conv and BN
# apart (conv2, bn2), where ours is one module (conv2.conv, conv2.bn).
TIMM_NAMES = ForeignNames(
    "timm",
    r"layer\d+\.\d+\.conv1\.conv\.weight$",
    (
        (r"^(layer\d+\.\d+)\.conv([13])\.conv\.weight$", r"\1.conv\2.weight"),
        (r"^(layer\d+\.\d+)\.conv([13])\.bn\.(.+)$", r"\1.bn\2.\3"),
    ),
)
TORCHVISION_NAMES = ForeignNames(
    "torchvision",
    r"layer\d+\.\d+\.bn2\.weight$",
    (
        (r"^(layer\d+\.\d+)\.conv2\.weight$", r"\1.conv2.conv.weight"),
        (r"^(layer\d+\.\d+)\.bn2\.(.+)$", r"\1.conv2.bn.\2"),
    ),
)


class ResNeXt(Backbone):
    """ResNeXt-style bottleneck network with an injected 3x3 stage.

    Args:
        layers: Units per stage, e.g. ``(3, 4, 6, 3)`` for the 50-layer networks.
        mid_layer: Builds the 3x3 stage of every unit (:class:`GroupedConv` or :class:`SelectiveKernel`).
        widths: Bottleneck (3x3 stage) width per stage, e.g. ``(128, 256, 512, 1024)``.
        out_channels: Output width per stage, e.g. ``(256, 512, 1024, 2048)``.
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max pool), ``"cifar"`` (3x3 conv) or, in 3-D,
            ``"video"`` (torchvision's video ResNets': a 3x7x7 conv with stride (1, 2, 2), no max pool).
        stem_width: Stem channels (64 in both).
        first_stride: Stride of the first stage (1 in the paper's networks; 2 in the mini ones).
        se_reduction: SE ratio r on every unit (SENet), or None.
        num_classes: Classifier outputs; 0 gives a headless backbone.
        in_chans: Input image channels.
        zero_init_last: Zero the last BN scale of each unit (off by default; the
            released networks do not).
        drop_rate: Dropout before the classifier (0 in the paper).
        block: The unit: :class:`Bottleneck` (the paper's networks) or
            :class:`~sknet.models.skresnet.BasicBlock` (timm's SK-ResNet-18/34).
        output_stride: Stride of the last stage's output: None (or the network's own, 32 for the
            ImageNet stem) keeps every stride; a smaller one replaces the strides of the last stages
            by dilation, as torchvision's ``replace_stride_with_dilation`` and timm's ``output_stride``
            do. Valid values are the strides the stages reach (:meth:`output_strides`: 4, 8, 16, 32
            for the ImageNet networks, 1, 2, 4 for the CIFAR ones, 2, 4, 8 for the mini ones); the
            first stage is never dilated. ``stage_info`` gives the strides the stages then have.
        dims: Spatial dimensions: 2 (images), 1 (signals ``(C, L)``) or 3 (clips and volumes
            ``(C, T, H, W)``); every conv, BN and pooling is of that dimension. With the video stem
            ``stage_info``'s strides are those of H and W (T is reduced by half as much).
    """

    stem_modules = ("conv1", "bn1", "act1", "maxpool")
    foreign_names = (TIMM_NAMES, TORCHVISION_NAMES)  # what sknet.weights renames in their files
    fuse_pairs = (("conv1", "bn1"),)  # sknet.fuse: the stem's BN follows its conv directly

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
        block: type[nn.Module] = Bottleneck,
        output_stride: int | None = None,
        dims: int = 2,
    ) -> None:
        super().__init__()
        check_dims(dims)
        if stem not in _STEM_STRIDES:
            raise ValueError(f"stem must be one of {list(_STEM_STRIDES)}, got {stem!r}")
        if not (len(layers) == len(widths) == len(out_channels)):
            raise ValueError("layers, widths and out_channels need one entry per stage")
        valid = self.output_strides(stem, first_stride, len(layers))
        if output_stride is not None and (type(output_stride) is not int or output_stride not in valid):
            raise ValueError(
                f"output_stride must be one of {list(valid)} for this network (the strides its stages reach; "
                f"the smaller ones replace the last stages' strides by dilation), got {output_stride!r}"
            )
        self.output_stride = valid[-1] if output_stride is None else output_stride
        self.conv1, self.maxpool = _stem(stem, in_chans, stem_width, dims)
        self.bn1 = BATCH_NORMS[dims](stem_width)
        self.act1 = nn.ReLU(inplace=True)

        # timm's levels for the ResNet family: the stem's activation, then one per stage (channels, stride, module)
        self.feature_info = [dict(num_chs=stem_width, reduction=self.conv1.stride[-1], module="act1")]
        in_ch = stem_width
        geometry = _stage_geometry(len(layers), first_stride, _STEM_STRIDES[stem], self.output_stride)
        for i, (stride, first, dilation, reduction) in enumerate(geometry):
            width, out_ch = widths[i], out_channels[i]
            units = []
            for j in range(layers[i]):
                unit_stride, unit_first = (stride, first) if j == 0 else (1, dilation)
                units.append(
                    block(in_ch, width, out_ch, unit_stride, mid_layer, se_reduction, dilation, unit_first, dims)
                )
                in_ch = out_ch
            self.add_module(f"layer{i + 1}", nn.Sequential(*units))
            self.feature_info.append(dict(num_chs=out_ch, reduction=reduction, module=f"layer{i + 1}"))
        self.num_features = in_ch
        self.global_pool = GLOBAL_POOLS[dims](1)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(in_ch, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights(zero_init_last)

    @staticmethod
    def output_strides(stem: str, first_stride: int, num_stages: int) -> tuple[int, ...]:
        """The output strides a network of this stem and first-stage stride can have, smallest
        first: the stride each stage reaches (the last one the network's own)."""
        reduction = _STEM_STRIDES[stem] * first_stride
        return tuple(reduction * 2**i for i in range(num_stages))

    def init_weights(self, zero_init_last: bool = False) -> None:
        """Released-network initialisation (:func:`init_weights`), optionally zeroing
        the last BN scale of every unit."""
        init_weights(self)
        if zero_init_last:
            for stage in self.stage_info:
                for unit in self.get_submodule(stage["module"]):
                    unit.zero_init_last()


# --------------------------------------------------------------------------- the family's create function
# Keyword arguments only: the structural numbers have no defaults (each registered model states
# them), what a user may change has one; ``unit`` opens its settings' fields (sknet.models.settings).


def resnext(
    *,
    layers: Sequence[int],
    groups: int,
    width_per_group: int,
    out_channels: Sequence[int] | None,
    stem: str,
    stem_width: int,
    first_stride: int,
    dims: int,
    unit: SE | SK | None,
    num_classes: int = 1000,
    in_chans: int = 3,
    zero_init_last: bool = False,
    drop_rate: float = 0.0,
    output_stride: int | None = None,
) -> ResNeXt:
    """ResNeXt, SENet or SKNet from ResNeXt's template: bottleneck widths ``G * d * 2^i`` (``groups``
    G of ``width_per_group`` d: 32x4d -> 128, 256, 512, 1024), outputs ``out_channels`` (None: twice
    the widths).

    ``unit`` is the network: None, ResNeXt (a grouped 3x3 conv in every unit); :class:`SE`, SENet
    (ResNeXt with SE on every unit); :class:`SK`, SKNet (an SK conv as every unit's 3x3 stage).
    ``output_stride`` (every model of the family takes it): None keeps the network's strides, a
    smaller valid one dilates the last stages instead (:class:`ResNeXt`).
    """
    widths = tuple(groups * width_per_group * 2**i for i in range(len(layers)))
    if out_channels is None:
        out_channels = tuple(2 * w for w in widths)
    if isinstance(unit, SK):
        mid = SelectiveKernel(dims=dims, **unit.conv_kwargs())
    else:
        mid = GroupedConv(groups, dims)
    return ResNeXt(
        layers, mid, widths, out_channels, stem=stem, stem_width=stem_width, first_stride=first_stride,
        se_reduction=se_ratio_of(unit), num_classes=num_classes, in_chans=in_chans, zero_init_last=zero_init_last,
        drop_rate=drop_rate, output_stride=output_stride, dims=dims,
    )  # fmt: skip


# --------------------------------------------------------------------------- registered models
# Every model states only its numbers: a template, its units per stage, its kind of unit; one
# table of ``name: (arguments, doc)`` per kind of input. Rows too long for a line go on two.
# fmt: off

L26, L50, L101 = (2, 2, 2, 2), (3, 4, 6, 3), (3, 4, 23, 3)  # units per stage of the 26/50/101-layer networks
IMAGENET = dict(groups=32, width_per_group=4, out_channels=(256, 512, 1024, 2048), stem="imagenet", stem_width=64,
                first_stride=1, dims=2)
WIDE = dict(groups=34, out_channels=(272, 544, 1088, 2176))  # every stage 17/16 wider, see docs/architecture.md

register_models(resnext, {
    "resnext26_32x4d": (dict(IMAGENET, layers=L26, unit=None), "ResNeXt-26 (32x4d): units {2, 2, 2, 2}."),
    "resnext50_32x4d": (dict(IMAGENET, layers=L50, unit=None), "ResNeXt-50 (32x4d), the paper's baseline (Table 1)."),
    "resnext101_32x4d": (dict(IMAGENET, layers=L101, unit=None), "ResNeXt-101 (32x4d): units {3, 4, 23, 3}."),
    "resnext50_36x4d": (dict(IMAGENET, layers=L50, groups=36, unit=None),
        "Table 3 control, more cardinal: 36 groups of width 4 (bottleneck widths 144...1152)."),
    "resnext53_32x4d": (dict(IMAGENET, layers=(3, 4, 7, 3), unit=None),
        "Table 3 control, deeper at SKNet-50's cost: one more conv4 unit, {3, 4, 7, 3} (53 layers)."),
    "resnext56_32x4d": (dict(IMAGENET, layers=(3, 4, 8, 3), unit=None),
        "Table 3 control, deeper: two more conv4 units, {3, 4, 8, 3} (56 layers)."),
    "resnext50_wide": (dict(IMAGENET, layers=L50, **WIDE, unit=None),
        "Table 3 control, wider: every stage 17/16 wider, bottlenecks 34x4d (136...1088), outputs 272...2176."),
    "senet26": (dict(IMAGENET, layers=L26, unit=SE()), "SENet-26: ResNeXt-26 (32x4d) with SE (r=16) on every unit."),
    "senet50": (dict(IMAGENET, layers=L50, unit=SE()),
        "SENet-50: ResNeXt-50 (32x4d) with SE (r=16) on every unit (Table 1)."),
    "senet101": (dict(IMAGENET, layers=L101, unit=SE()),
        "SENet-101: ResNeXt-101 (32x4d) with SE (r=16) on every unit."),
    "sknet26": (dict(IMAGENET, layers=L26, unit=SK()), "SKNet-26: units {2, 2, 2, 2}, SK[M=2, G=32, r=16]."),
    "sknet50": (dict(IMAGENET, layers=L50, unit=SK()),
        "SKNet-50 (Table 1): units {3, 4, 6, 3}, SK[M=2, G=32, r=16], L=32."),
    "sknet101": (dict(IMAGENET, layers=L101, unit=SK()), "SKNet-101: units {3, 4, 23, 3}, SK[M=2, G=32, r=16]."),
}, family="imagenet")

# CIFAR (32x32): ResNeXt-29, three stages of three units, outputs 256/512/1024, a 3x3 stem of 64
# (docs/paper.md, 'SKNet-29 for CIFAR'). Bottleneck widths follow the same template: 16x32d ->
# 512/1024/2048. SKNet-29's branches are the default ones, G=32 each: the base's cost (our choice,
# docs/architecture.md).
CIFAR = dict(layers=(3, 3, 3), out_channels=(256, 512, 1024), stem="cifar", stem_width=64, first_stride=1, dims=2)

register_models(resnext, {
    "resnext29_16x32d": (dict(CIFAR, groups=16, width_per_group=32, unit=None),
        "ResNeXt-29 (16x32d), the base of SKNet-29 and SENet-29."),
    "resnext29_8x64d": (dict(CIFAR, groups=8, width_per_group=64, unit=None),
        "ResNeXt-29 (8x64d) of the ResNeXt paper."),
    "resnext29_16x64d": (dict(CIFAR, groups=16, width_per_group=64, unit=None),
        "ResNeXt-29 (16x64d) of the ResNeXt paper."),
    "senet29": (dict(CIFAR, groups=16, width_per_group=32, unit=SE()),
        "SENet-29: ResNeXt-29 (16x32d) with SE (r=16) on every unit (our choice of r)."),
    "senet29_8x64d": (dict(CIFAR, groups=8, width_per_group=64, unit=SE()),
        "SENet-29 on the 8x64d base: the construction the paper's 35.0M fits (docs/architecture.md)."),
    "sknet29": (dict(CIFAR, groups=16, width_per_group=32, unit=SK()),
        "SKNet-29: ResNeXt-29 (16x32d) base with SK[M=2, G=32, r=16], L=32 (our choice, docs/architecture.md)."),
}, family="cifar", input_size=(3, 32, 32), num_classes=10)

# Mini (28x28 grayscale, e.g. Fashion-MNIST): the 29-layer CIFAR template scaled down to
# what two CPU cores train in minutes; the first stage downsamples (28 -> 14 -> 7 -> 4).
# Not in the paper; the small-scale replication (docs/replication.md) uses it.
# Widths (G * d * 2^i) and outputs (2x the widths) keep the ResNeXt template; the SK branches'
# groups (G=8) and L shrink with the widths (our choice, docs/architecture.md).
MINI = dict(layers=(1, 1, 1), groups=8, width_per_group=4, out_channels=None, stem="cifar", stem_width=32,
            first_stride=2, in_chans=1, dims=2)
MINI_SK = SK(branches=((3, 1, 8), (3, 2, 8)), min_dim=16)
MINI_INFO = dict(family="mini", tunable=("layers", "groups", "width_per_group", "stem_width"))

register_models(resnext, {
    "resnext_mini": (dict(MINI, unit=None),
        "Mini ResNeXt (8x4d, one unit per stage by default): the plain baseline at 28x28."),
    "senet_mini": (dict(MINI, unit=SE()), "Mini SENet: the mini ResNeXt with SE (r=16) on every unit."),
    "sknet_mini": (dict(MINI, unit=MINI_SK),
        "Mini SKNet: the mini ResNeXt with SK[M=2 (K3 + dilated K3), G=8, r=16], L=16."),
}, **MINI_INFO, input_size=(1, 28, 28), num_classes=10)

# 1-D and 3-D: the same networks with every conv, BN and pooling of another dimension (not in the
# paper; docs/architecture.md). Signals (C, L): the ImageNet template in 1-D, 7-tap stem and max
# pool, for 1024-sample inputs. Clips and volumes (C, T, H, W): torchvision's video ResNets' stem (a
# 3x7x7 conv with stride (1, 2, 2), no max pool) on the ImageNet template, for 16 x 112 x 112 clips.
# The mini ones serve the synthetic tasks: bursts-1d (1 x 256, 5 classes), fashion-mnist-3d
# (1 x 16 x 32 x 32, 10 classes).
SIGNAL = dict(IMAGENET, layers=L50, dims=1, in_chans=1)
VIDEO = dict(IMAGENET, layers=L50, dims=3, stem="video")

register_models(resnext, {
    "resnext50_32x4d_1d": (dict(SIGNAL, unit=None),
        "ResNeXt-50 (32x4d) for signals (C, L): every conv 1-D, K3 a 3-tap conv."),
    "sknet50_1d": (dict(SIGNAL, unit=SK()),
        "SKNet-50 for signals (C, L): SK[M=2, G=32, r=16] with 3-tap branches at dilation 1 and 2."),
}, family="signal", input_size=(1, 1024), num_classes=10)
register_models(resnext, {
    "resnext50_32x4d_3d": (dict(VIDEO, unit=None),
        "ResNeXt-50 (32x4d) for clips and volumes (C, T, H, W): 3x3x3 grouped convs, a video stem."),
    "sknet50_3d": (dict(VIDEO, unit=SK()),
        "SKNet-50 for clips and volumes (C, T, H, W): SK with 3x3x3 branches at dilation 1 and 2."),
}, family="video", input_size=(3, 16, 112, 112), num_classes=400)
register_models(resnext, {
    "resnext_mini_1d": (dict(MINI, dims=1, unit=None), "The mini ResNeXt in 1-D (signals)."),
    "sknet_mini_1d": (dict(MINI, dims=1, unit=MINI_SK),
        "The mini SKNet in 1-D (signals): 3-tap branches at dilation 1 and 2."),
}, **MINI_INFO, input_size=(1, 256), num_classes=5)
register_models(resnext, {
    "resnext_mini_3d": (dict(MINI, dims=3, unit=None), "The mini ResNeXt in 3-D (volumes)."),
    "sknet_mini_3d": (dict(MINI, dims=3, unit=MINI_SK),
        "The mini SKNet in 3-D (volumes): 3x3x3 branches at dilation 1 and 2."),
}, **MINI_INFO, input_size=(1, 16, 32, 32), num_classes=10)
# fmt: on
