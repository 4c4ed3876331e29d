"""Every network of the paper, built by name: ``create_model("sknet50")``.

Importing this package registers the ResNeXt family (ResNeXt, SENet, SKNet; ImageNet, CIFAR
and mini), the ShuffleNetV2 family, MobileNetV2 (+SK) and timm's SK-ResNet-18/34;
``list_models()`` names them all.
"""

from . import mobilenetv2, resnext, shufflenetv2, skresnet  # noqa: F401  (each registers its family)
from .factory import create_model, load_model
from .grow import to_sk
from .mobilenetv2 import MobileNetV2
from .registry import ModelEntry, get_model_entry, list_models, register_model
from .resnext import Bottleneck, GroupedConv, ResNeXt, SelectiveKernel
from .shufflenetv2 import DepthwiseConv, DepthwiseSK, ShuffleNetV2
from .skresnet import BasicBlock

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "DepthwiseConv",
    "DepthwiseSK",
    "GroupedConv",
    "MobileNetV2",
    "ModelEntry",
    "ResNeXt",
    "SelectiveKernel",
    "ShuffleNetV2",
    "create_model",
    "get_model_entry",
    "list_models",
    "load_model",
    "register_model",
    "to_sk",
]
