"""Reusable pieces: the SK convolution and its attention, SE, conv-BN-ReLU.

``sk_conv`` holds the SK concept (branches, attention, select) as the paper states it; ``sk_fast``
and ``sk_lean`` how its fast path computes the same result.
"""

from .conv_bn_act import BATCH_NORMS, CONVS, GLOBAL_POOLS, ConvBnAct, check_dims, same_padding
from .functional import bn_affine, is_plain_batchnorm
from .se import SqueezeExcite
from .sk_conv import SELECT_MODES, SK_BRANCHES, AttentionNorm, Branch, SKAttention, SKConv, parse_branches, sk_impl
from .sk_fast import FAST_PARTS, SK_IMPLS, parse_sk_impl

__all__ = [
    "BATCH_NORMS",
    "CONVS",
    "GLOBAL_POOLS",
    "FAST_PARTS",
    "SELECT_MODES",
    "SK_BRANCHES",
    "SK_IMPLS",
    "AttentionNorm",
    "Branch",
    "ConvBnAct",
    "SKAttention",
    "SKConv",
    "SqueezeExcite",
    "bn_affine",
    "check_dims",
    "is_plain_batchnorm",
    "parse_branches",
    "parse_sk_impl",
    "same_padding",
    "sk_impl",
]
