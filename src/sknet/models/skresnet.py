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

from .registry import register_model
from .resnext import BasicBlock, ResNeXt, SelectiveKernel

TIMM_SK_BRANCHES = ((3, 1, 1), (3, 2, 1))  # timm's kernel_size [3, 5] with keep_3x3: 3x3 at dilation 1 and 2
WIDTHS = (64, 128, 256, 512)


def skresnet(
    *,
    layers: Sequence[int],
    branches: Sequence = TIMM_SK_BRANCHES,
    select: str = "attention",
    reduction: int = 8,
    min_dim: int = 16,
    sk_impl: str = "fast",
    num_classes: int = 1000,
    in_chans: int = 3,
    zero_init_last: bool = False,
    drop_rate: float = 0.0,
    output_stride: int | None = None,
) -> ResNeXt:
    """A basic-block ResNet with timm's split-input SK conv as every unit's first 3x3; ``output_stride``
    16 or 8 dilates the last stages as timm's ``output_stride`` does (SK branch dilations multiplied)."""
    mid = SelectiveKernel(
        branches=branches, select=select, reduction=reduction, min_dim=min_dim, impl=sk_impl, split_input=True
    )
    return ResNeXt(
        layers, mid, WIDTHS, WIDTHS, stem="imagenet", stem_width=64, first_stride=1, num_classes=num_classes,
        in_chans=in_chans, zero_init_last=zero_init_last, drop_rate=drop_rate, block=BasicBlock,
        output_stride=output_stride,
    )  # fmt: skip


register_model(
    "skresnet18",
    skresnet,
    dict(layers=(2, 2, 2, 2)),
    doc="timm's SK-ResNet-18 (basic blocks, split-input SK, r=8, L=16); loads timm's skresnet18 weights.",
    family="timm",
)
register_model(
    "skresnet34",
    skresnet,
    dict(layers=(3, 4, 6, 3)),
    doc="timm's SK-ResNet-34 (basic blocks, split-input SK, r=8, L=16); loads timm's skresnet34 weights.",
    family="timm",
)
