"""Reusable pieces: the SK convolution and its attention, SE, conv-BN-ReLU."""

from .conv_bn_act import ConvBnAct, same_padding
from .se import SqueezeExcite
from .sk_conv import (
    FAST_PARTS,
    SELECT_MODES,
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
    "FAST_PARTS",
    "SELECT_MODES",
    "SK_IMPLS",
    "AttentionNorm",
    "Branch",
    "ConvBnAct",
    "SKAttention",
    "SKConv",
    "SqueezeExcite",
    "parse_branches",
    "parse_sk_impl",
    "same_padding",
    "sk_impl",
]
