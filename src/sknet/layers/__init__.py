from .conv_bn_act import ConvBnAct, same_padding
from .se import SqueezeExcite
from .sk_conv import (
    SELECT_MODES,
    SK_IMPLS,
    AttentionNorm,
    Branch,
    SKAttention,
    SKConv,
    get_sk_impl,
    parse_branches,
    set_sk_impl,
    sk_impl,
)

__all__ = [
    "SELECT_MODES",
    "SK_IMPLS",
    "AttentionNorm",
    "Branch",
    "ConvBnAct",
    "SKAttention",
    "SKConv",
    "SqueezeExcite",
    "get_sk_impl",
    "parse_branches",
    "same_padding",
    "set_sk_impl",
    "sk_impl",
]
