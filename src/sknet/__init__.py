"""sknet: Selective Kernel Networks (Li et al., CVPR 2019) in PyTorch.

The package's map (docs/architecture.md): ``layers`` (SKConv, SKAttention, SE), ``models``
(the registry and every network of the paper), ``data``, ``training``, ``analysis`` (the
paper's attention analysis and the replication study), ``deploy`` (fuse, export, backbones,
prediction), ``bench``; ``cli`` is the ``sknet`` command on top of them.
"""

from .complexity import Complexity, complexity
from .deploy import (
    FeatureExtractor,
    export_model,
    features,
    fpn_backbone,
    fuse,
    fx_leaf_modules,
    predict,
    segmentation_model,
)
from .layers import SKAttention, SKConv
from .models import create_model, get_model_entry, list_models, load_model, register_model, to_sk
from .pretrained import from_pretrained, save_pretrained
from .record import ModelRecord
from .weights import load_weights, save_weights

__version__ = "0.1.0"

__all__ = [
    "Complexity",
    "FeatureExtractor",
    "ModelRecord",
    "SKAttention",
    "SKConv",
    "complexity",
    "create_model",
    "export_model",
    "features",
    "fpn_backbone",
    "from_pretrained",
    "fuse",
    "fx_leaf_modules",
    "get_model_entry",
    "list_models",
    "load_model",
    "load_weights",
    "predict",
    "register_model",
    "save_pretrained",
    "save_weights",
    "segmentation_model",
    "to_sk",
]
