"""Semantic segmentation on our backbones: torchvision's DeepLabV3 / FCN heads on a dilated model.

:func:`segmentation_model` builds a registered model at a reduced output stride (the last
stages' strides replaced by dilation, :class:`~sknet.models.ResNeXt`'s ``output_stride``),
optionally loads classification weights into it, cuts its classifier off and puts torchvision's
``DeepLabHead`` (ASPP) or ``FCNHead`` on the last stage. The result *is* torchvision's
:class:`~torchvision.models.segmentation.DeepLabV3` / :class:`~torchvision.models.segmentation.FCN`:
``model(x)`` returns ``{"out": (B, num_classes, H, W)}`` (plus ``"aux"`` with ``aux=True``), the
logits upsampled bilinearly to the input's size, so torchvision's segmentation training
references and losses apply as they are.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..models import create_model, get_model_entry
from ..weights import load_pretrained
from .features import FeatureExtractor

HEADS = ("deeplabv3", "fcn")
DEEPLAB_RATES_AT_8 = (12, 24, 36)  # torchvision's (and DeepLabV3's) ASPP rates at output stride 8


class SegmentationBackbone(FeatureExtractor):
    """A :class:`FeatureExtractor` whose maps are keyed as torchvision's segmentation models read them:
    the last stage ``"out"``, the one before it ``"aux"`` (when the auxiliary head is on).

    Module names stay the classification model's (``conv1``, ``layer1.0.conv2``, ...), as in
    torchvision's own segmentation backbones.
    """

    def __init__(self, model: nn.Module, aux: bool = False) -> None:
        n = len(model.stage_info)
        if aux and n < 2:
            raise ValueError("aux=True needs a model with at least two stages")
        super().__init__(model, (n - 2, n - 1) if aux else (n - 1,))
        self.out_keys = dict(zip(reversed(self.return_layers), ("out", "aux")))

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((self.out_keys[k], v) for k, v in super().forward(x).items())


def deeplab_rates(output_stride: int) -> tuple[int, ...]:
    """ASPP rates for ``output_stride``: torchvision's (12, 24, 36) at 8, scaled with the map's
    resolution as DeepLabV3 does (6, 12, 18 at 16; 3, 6, 9 at 32)."""
    return tuple(max(1, round(r * 8 / output_stride)) for r in DEEPLAB_RATES_AT_8)


def segmentation_model(
    name: str,
    num_classes: int,
    *,
    output_stride: int | None = 8,
    head: str = "deeplabv3",
    aux: bool = False,
    weights: str | Path | None = None,
    atrous_rates: Sequence[int] | None = None,
    **overrides,
) -> nn.Module:
    """A segmentation network on registered model ``name``: torchvision's DeepLabV3 or FCN.

    Args:
        name: A model of :func:`sknet.list_models` (any with stages: the ResNeXt family dilates;
            ShuffleNetV2 and others keep output stride 32, ``output_stride=None``).
        num_classes: Segmentation classes (21 for Pascal VOC).
        output_stride: Stride of the map the head sees: 8 (DeepLabV3's and torchvision's choice),
            16, 32 (no dilation), or any value the model's ``output_stride`` takes; None keeps the
            model's own strides.
        head: ``"deeplabv3"`` (torchvision's ``DeepLabHead``: ASPP, 256 channels) or ``"fcn"``
            (``FCNHead``: 3x3 conv to a quarter of the channels, then 1x1).
        aux: Also an ``FCNHead`` on the stage before the last (torchvision's auxiliary loss);
            its logits come back as ``"aux"``.
        weights: Classification weights (ours, timm's or torchvision's) loaded into the model
            before its classifier is cut off: any number of classes, the classifier is dropped.
        atrous_rates: The ASPP rates; default :func:`deeplab_rates` of ``output_stride``.
        **overrides: Passed to :func:`sknet.create_model` (``sk_impl``, ``branches``, ...).

    Returns:
        torchvision's ``DeepLabV3`` or ``FCN`` with a :class:`SegmentationBackbone`. In training
        mode DeepLabV3's image pooling BatchNorm needs batches of two or more (torchvision's own
        behaviour).

    Raises:
        ValueError: An unknown head, or an output stride the model cannot have (the message lists
            the valid ones).

    Example::

        model = sknet.segmentation_model("sknet50", num_classes=21, output_stride=8, weights="sknet50.safetensors")
        logits = model(images)["out"]  # (B, 21, H, W)
    """
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if output_stride is not None:
        if "output_stride" not in get_model_entry(name).overrides:
            raise ValueError(
                f"model {name!r} has no output_stride (its strides are fixed); use output_stride=None, "
                "or a ResNeXt / SENet / SKNet model"
            )
        overrides["output_stride"] = output_stride
    model = create_model(name, **overrides)
    if weights is not None:
        load_pretrained(model, weights, model_name=name)
    backbone = SegmentationBackbone(model, aux=aux)
    stride = backbone.strides[-1]
    channels = backbone.out_channels_list
    if head == "deeplabv3":
        classifier = DeepLabHead(channels[-1], num_classes, atrous_rates or deeplab_rates(stride))
    else:
        classifier = FCNHead(channels[-1], num_classes)
    aux_classifier = FCNHead(channels[0], num_classes) if aux else None
    cls = DeepLabV3 if head == "deeplabv3" else FCN
    return cls(backbone, classifier, aux_classifier)
