"""Stage outputs of the ImageNet-style models, for detection and segmentation backbones.

Every ResNeXt / SENet / SKNet, ShuffleNetV2 and MobileNetV2 model describes its stages in
``model.stage_info`` (channels, stride, module name: ``model.feature_info`` without its first
level, the stem's, which timm's ``features_only`` counts and detection backbones do not use).
:func:`features` turns a model into a backbone that returns those stage outputs; :func:`fpn_backbone` puts torchvision's
:class:`~torchvision.ops.FeaturePyramidNetwork` on top, ready for torchvision's
``FasterRCNN`` / ``RetinaNet`` / ``MaskRCNN``.

At 224x224 the ImageNet-style models give strides 4, 8, 16, 32 with

============================  ==================================
models                        channels at strides 4 / 8 / 16 / 32
============================  ==================================
ResNeXt / SENet / SKNet       256 / 512 / 1024 / 2048
resnext50_wide                272 / 544 / 1088 / 2176
ShuffleNetV2 0.5x (SE, SK)    24 / 48 / 96 / 192
ShuffleNetV2 1.0x (SE, SK)    24 / 116 / 232 / 464
MobileNetV2 1.0x (SK)         24 / 32 / 96 / 320
============================  ==================================

(ShuffleNetV2's stride-4 map is the stem's max pool output; its ``conv5`` 1x1 feeds the
classifier and is left out, as is MobileNetV2's ``conv_head``.) The CIFAR and mini models
work too, at strides 1, 2, 4 and 2, 4, 8. A ResNeXt-family model built with a smaller
``output_stride`` (its last stages dilated) has those strides in ``stage_info``: 4, 8, 16, 16
at 16 and 4, 8, 8, 8 at 8 (segmentation: :mod:`sknet.deploy.segmentation`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..layers import SKConv
from ..models.backbone import Backbone


class FeatureExtractor(nn.Module):
    """A model without its head, returning the outputs of the chosen stages.

    It shares (does not copy) the model's modules under their own names (``conv1``,
    ``layer1.0.conv2``, ...), so forward hooks, the attention analysis and
    ``load_state_dict(classifier_state_dict, strict=False)`` work unchanged.

    Attributes:
        feature_info: One dict per returned stage: ``num_chs``, ``reduction`` (stride), ``module``.
        out_channels_list: Channels of each returned map.
        strides: Stride of each returned map.
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        # The model's body_modules are its stem and stages in forward order (named_children order
        # differs: ResNeXt registers its max pool before bn1, so torchvision's IntermediateLayerGetter
        # would run them out of order).
        if not isinstance(model, Backbone) or not model.stage_info:
            raise ValueError(
                f"{type(model).__name__} has no stage outputs to return; features() takes the ResNeXt / SENet / "
                "SKNet, ShuffleNetV2 and MobileNetV2 models of sknet.create_model"
            )
        info = model.stage_info
        out_indices = tuple(range(len(info))) if out_indices is None else tuple(out_indices)
        if (
            not out_indices
            or any(not 0 <= i < len(info) for i in out_indices)
            or len(set(out_indices)) != len(out_indices)
        ):
            raise ValueError(f"out_indices must be distinct stage indices in 0..{len(info) - 1}, got {out_indices}")
        out_indices = tuple(sorted(out_indices))
        names = model.body_modules()
        names = names[: names.index(info[out_indices[-1]]["module"]) + 1]  # nothing after the last returned stage runs
        for name in names:
            self.add_module(name, getattr(model, name))
        self.feature_info = [dict(info[i]) for i in out_indices]
        self.return_layers = [d["module"] for d in self.feature_info]
        self.out_channels_list = [d["num_chs"] for d in self.feature_info]
        self.strides = [d["reduction"] for d in self.feature_info]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out = OrderedDict()
        for name, module in self.named_children():
            x = module(x)
            if name in self.return_layers:
                out[name] = x
        return out


def features(model: nn.Module, out_indices: Sequence[int] | None = None) -> FeatureExtractor:
    """The model as a backbone returning its stage outputs (an ``OrderedDict`` keyed by stage name).

    Args:
        model: A ResNeXt / SENet / SKNet, ShuffleNetV2 or MobileNetV2 model (weights loaded or not).
        out_indices: Stages to return, indices into ``model.stage_info``; default all
            (strides 4, 8, 16, 32 for the ImageNet-style models).
    """
    return FeatureExtractor(model, out_indices)


class BackboneWithFPN(nn.Module):
    """Stage outputs followed by torchvision's feature pyramid; what torchvision's detectors expect.

    Returns an ``OrderedDict`` with keys ``"0"``, ``"1"``, ... (one per stage, the names
    torchvision's ``MultiScaleRoIAlign`` defaults to) plus the extra levels' keys
    (``"pool"`` for ``LastLevelMaxPool``, ``"p6"``, ``"p7"`` for ``LastLevelP6P7``).

    Attributes:
        out_channels: Channels of every pyramid level (the attribute torchvision's detectors read).
    """

    def __init__(
        self,
        model: nn.Module,
        out_channels: int = 256,
        out_indices: Sequence[int] | None = None,
        extra_blocks: nn.Module | None = None,
    ) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        self.body = FeatureExtractor(model, out_indices)
        self.fpn = FeaturePyramidNetwork(
            self.body.out_channels_list, out_channels, extra_blocks=extra_blocks or LastLevelMaxPool()
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), v) for i, v in enumerate(feats.values())))


def fpn_backbone(
    model: nn.Module,
    out_channels: int = 256,
    out_indices: Sequence[int] | None = None,
    extra_blocks: nn.Module | None = None,
) -> BackboneWithFPN:
    """The model's stage outputs with an FPN on top, for torchvision's detection models.

    Args:
        model: A ResNeXt / SENet / SKNet, ShuffleNetV2 or MobileNetV2 model.
        out_channels: FPN width (256 in torchvision's detectors).
        out_indices: Stages fed to the FPN; default all four.
        extra_blocks: torchvision's extra pyramid levels; default ``LastLevelMaxPool``
            (Faster R-CNN). For RetinaNet use ``out_indices=(1, 2, 3)`` and
            ``LastLevelP6P7(out_channels, out_channels)``.

    Example::

        from torchvision.models.detection import FasterRCNN
        backbone = sknet.fpn_backbone(sknet.create_model("sknet50", weights="sknet50.safetensors"))
        detector = FasterRCNN(backbone, num_classes=91)
    """
    return BackboneWithFPN(model, out_channels, out_indices, extra_blocks)


def fx_leaf_modules() -> list[type[nn.Module]]:
    """Modules ``torch.fx`` may keep whole when tracing our models, so that the graph runs their fast path.

    Traced through, :class:`~sknet.layers.SKConv` records its reference equations: the fast path
    chooses its steps by reading the tensors (their shapes, whether a gradient is recorded), which
    symbolic tracing does not have. Kept whole, it is one node of the graph that runs the fast path.
    Pass ``tracer_kwargs={"leaf_modules": sknet.fx_leaf_modules()}`` to
    ``torchvision.models.feature_extraction.create_feature_extractor``.
    """
    return [SKConv]
