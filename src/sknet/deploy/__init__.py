"""Using a trained model: fused, exported, as a backbone (detection, segmentation), or classifying files."""

from .export import FORMATS, ExportReport, export_model, run_exported
from .features import BackboneWithFPN, FeatureExtractor, features, fpn_backbone, fx_leaf_modules
from .fusion import fold_bn_into_conv, fold_bn_into_linear, fuse
from .predict import predict
from .segmentation import SegmentationBackbone, segmentation_model

__all__ = [
    "FORMATS",
    "BackboneWithFPN",
    "ExportReport",
    "FeatureExtractor",
    "SegmentationBackbone",
    "export_model",
    "features",
    "fold_bn_into_conv",
    "fold_bn_into_linear",
    "fpn_backbone",
    "fuse",
    "fx_leaf_modules",
    "predict",
    "run_exported",
    "segmentation_model",
]
