"""Reusable pieces: the SK convolution and its attention, SE, conv-BN-ReLU."""

from .conv_bn_act import BATCH_NORMS, CONVS, ConvBnAct, check_dims, same_padding
from .se import SqueezeExcite
from .sk_conv import (
    FAST_PARTS,
    SELECT_MODES,
    SK_BRANCHES,
    SK_IMPLS,
    AttentionNorm,
    Branch,
    SKAttention,
    SKConv,
    parse_branches,
    parse_sk_impl,
    sk_impl,
)

__all__ = [
    "BATCH_NORMS",
    "CONVS",
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
    "check_dims",
    "parse_branches",
    "parse_sk_impl",
    "same_padding",
    "sk_impl",
]
