"""sknet: Selective Kernel Networks (Li et al., CVPR 2019) in PyTorch."""

from . import fuse  # callable module: sknet.fuse(model) == sknet.fuse.fuse(model)
from .complexity import Complexity, complexity
from .export import export_model
from .features import FeatureExtractor, features, fpn_backbone, fx_leaf_modules
from .layers import SKAttention, SKConv
from .models import create_model, get_model_entry, list_models, register_model
from .weights import load_model, load_weights, save_weights

__version__ = "0.1.0"

__all__ = [
    "Complexity",
    "FeatureExtractor",
    "SKAttention",
    "SKConv",
    "complexity",
    "create_model",
    "export_model",
    "features",
    "fpn_backbone",
    "fuse",
    "fx_leaf_modules",
    "get_model_entry",
    "list_models",
    "load_model",
    "load_weights",
    "register_model",
    "save_weights",
]
