from . import resnext, shufflenetv2  # noqa: F401  (registers the models)
from .registry import ModelEntry, create_model, get_model_entry, list_models, register_model
from .resnext import Bottleneck, GroupedConv, ResNeXt, SelectiveKernel
from .shufflenetv2 import DepthwiseConv, DepthwiseSK, ShuffleNetV2

__all__ = [
    "Bottleneck",
    "DepthwiseConv",
    "DepthwiseSK",
    "GroupedConv",
    "ModelEntry",
    "ResNeXt",
    "SelectiveKernel",
    "ShuffleNetV2",
    "create_model",
    "get_model_entry",
    "list_models",
    "register_model",
]
