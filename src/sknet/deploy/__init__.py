"""Using a trained model: fused for inference, exported, as a backbone, or classifying files."""

from .export import FORMATS, ExportReport, export_model, run_exported
from .features import BackboneWithFPN, FeatureExtractor, features, fpn_backbone, fx_leaf_modules
from .fusion import fold_bn_into_conv, fold_bn_into_linear, fuse
from .predict import predict

__all__ = [
    "FORMATS",
    "BackboneWithFPN",
    "ExportReport",
    "FeatureExtractor",
    "export_model",
    "features",
    "fold_bn_into_conv",
    "fold_bn_into_linear",
    "fpn_backbone",
    "fuse",
    "fx_leaf_modules",
    "predict",
    "run_exported",
]
